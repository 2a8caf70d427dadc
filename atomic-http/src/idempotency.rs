//! Idempotent creation. With an `Idempotency-Key`, a create runs as: claim the key (a
//! different request under it is 422, the same one still running is 409, a finished one is
//! replayed byte for byte with `Idempotent-Replayed: true`), prepare the record, render the
//! exact response, and write the record and the response in ONE store transaction. Any error
//! releases the key (retried in the background when the store does not answer), so a retry runs
//! anew; so does a request dropped before its write began (client gone, timeout), through a
//! guard that releases on drop. Once the write began it runs to its end in a task of its own,
//! whatever becomes of the request.

use std::future::Future;
use std::time::Duration;

use atomic_core::idempotency::{
    Claim, ClaimOutcome, Completion, Fingerprint, IdempotencyKey, StoredResponse,
};
use atomic_core::{Invalid, Principal, Services};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;

use crate::deadline::Commit;
use crate::envelope::{Meta, json_response, success_body};
use crate::error::ApiError;

/// The raw `Idempotency-Key` header values; validated after the body, as API.md orders.
#[derive(Debug)]
pub(crate) struct IdempotencyHeader(Vec<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .headers
                .get_all("idempotency-key")
                .iter()
                .cloned()
                .collect(),
        ))
    }
}

impl IdempotencyHeader {
    /// The key, if one was sent; 400 if it was sent twice or is not a valid key.
    pub(crate) fn key(&self) -> Result<Option<IdempotencyKey>, ApiError> {
        let field =
            |message: &'static str| ApiError::field("Idempotency-Key", Invalid::new(message));
        match self.0.as_slice() {
            [] => Ok(None),
            [value] => {
                let text = value
                    .to_str()
                    .map_err(|_| field("must contain only printable ASCII characters"))?;
                IdempotencyKey::from_header(text)
                    .map(Some)
                    .map_err(|e| ApiError::field("Idempotency-Key", e))
            }
            _ => Err(field("must be sent at most once")),
        }
    }
}

/// Releases a held claim when a request is abandoned before its write began (client gone,
/// timeout): the future is dropped, so the release runs as a task of its own.
struct ClaimGuard {
    services: Services,
    claim: Option<Claim>,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let Some(claim) = self.claim.take() else {
            return;
        };
        let services = self.services.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { release(&services, claim).await });
        }
    }
}

/// Attempts at releasing a claim, and the wait before the first retry (doubled each time).
const RELEASE_ATTEMPTS: u32 = 5;
const RELEASE_BACKOFF: Duration = Duration::from_millis(200);

/// Releases a claim whose request created nothing, so a retry (corrected or not) runs anew.
/// The first attempt is awaited; if it fails, the retries run in the background, and a claim
/// that no attempt could release frees its key at the store's lock timeout.
async fn release(services: &Services, claim: Claim) {
    if services.release_idempotency_key(&claim).await.is_ok() {
        return;
    }
    let services = services.clone();
    tokio::spawn(async move {
        let mut wait = RELEASE_BACKOFF;
        for _ in 1..RELEASE_ATTEMPTS {
            tokio::time::sleep(wait).await;
            match services.release_idempotency_key(&claim).await {
                Ok(()) => return,
                Err(error) => tracing::warn!(?error, "could not release an idempotency key"),
            }
            wait *= 2;
        }
    });
}

/// Who a rendering is for: the caller now, or the store (for replays), which never keeps a
/// secret. A raw API key appears only in the response that minted it (API.md), so a replay
/// of a key-minting request returns the same body without the `key` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reveal {
    /// The live response: secrets included.
    Secrets,
    /// The stored copy: secrets left out.
    NoSecrets,
}

/// One create request: who asks, under which key, and how to answer.
pub(crate) struct Create<'a> {
    pub(crate) services: &'a Services,
    pub(crate) caller: Principal,
    pub(crate) key: Option<IdempotencyKey>,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) status: StatusCode,
    pub(crate) meta: Meta,
    /// Marks the request's write as begun, for the request deadline.
    pub(crate) commit: Option<Commit>,
}

impl Create<'_> {
    /// Runs `prepare` (given the held claim, if any), renders `render` of its result as the
    /// response, and runs `submit` with the completion that stores that response (rendered
    /// without secrets), all under the idempotency key if there is one.
    pub(crate) async fn run<P, D, Prep, PrepFut, Sub, SubFut>(
        self,
        prepare: Prep,
        render: impl Fn(&P, Reveal) -> D,
        submit: Sub,
    ) -> Result<Response, ApiError>
    where
        Prep: FnOnce(Option<Claim>) -> PrepFut,
        PrepFut: Future<Output = Result<P, ApiError>>,
        D: Serialize,
        Sub: FnOnce(P, Option<Completion>) -> SubFut,
        SubFut: Future<Output = Result<(), atomic_core::Error>> + Send + 'static,
    {
        let mut guard = ClaimGuard {
            services: self.services.clone(),
            claim: None,
        };
        if let Some(key) = &self.key {
            match self
                .services
                .claim_idempotency_key(self.caller, key, self.fingerprint)
                .await?
            {
                ClaimOutcome::Acquired(claim) => guard.claim = Some(claim),
                ClaimOutcome::Replay(stored) => return Ok(replay(stored)),
                ClaimOutcome::Mismatch => return Err(ApiError::IdempotencyKeyReused),
                ClaimOutcome::InProgress => return Err(ApiError::IdempotencyConflict),
            }
        }
        let prepared = async {
            let prepared = prepare(guard.claim.clone()).await?;
            let body = success_body(&render(&prepared, Reveal::Secrets), &self.meta);
            let completion = guard.claim.clone().map(|claim| Completion {
                claim,
                response: StoredResponse {
                    status: self.status.as_u16(),
                    body: success_body(&render(&prepared, Reveal::NoSecrets), &self.meta),
                },
            });
            Ok::<_, ApiError>((body, submit(prepared, completion)))
        }
        .await;
        let claim = guard.claim.take();
        let (body, write) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                // Released before the error is answered, so an immediate retry runs anew.
                if let Some(claim) = claim {
                    release(self.services, claim).await;
                }
                return Err(error);
            }
        };
        // The write runs to its end whatever becomes of this request (a client that hangs
        // up, the request deadline): a write the store commits is always followed through,
        // and its answer is never a 503.
        if let Some(commit) = &self.commit {
            commit.begin();
        }
        let services = self.services.clone();
        let written = tokio::spawn(async move {
            let result = write.await;
            if result.is_err()
                && let Some(claim) = claim
            {
                release(&services, claim).await;
            }
            result
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(json_response(self.status, body)),
            Ok(Err(error)) => Err(error.into()),
            Err(panicked) => Err(ApiError::Internal(atomic_core::Error::backend(panicked))),
        }
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = json_response(status, stored.body);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}
