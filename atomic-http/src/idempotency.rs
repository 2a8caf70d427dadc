//! Idempotent creation. With an `Idempotency-Key`, a create runs as: claim the key (a
//! different request under it is 422, the same one still running is 409, a finished one is
//! replayed byte for byte with `Idempotent-Replayed: true`), prepare the record, render the
//! exact response, and write the record and the response in ONE store transaction. Any error
//! releases the key, so a retry runs anew; so does a request dropped half-way (client gone,
//! timeout), through a guard that releases on drop.

use std::future::Future;

use atomic_core::idempotency::{
    Claim, ClaimOutcome, Completion, Fingerprint, IdempotencyKey, StoredResponse,
};
use atomic_core::{Invalid, Principal, Services};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;

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

/// Releases a held claim when a request is abandoned half-way (client gone, timeout): the
/// future is dropped, so the release runs as a task of its own.
struct ClaimGuard {
    services: Services,
    claim: Option<Claim>,
}

impl ClaimGuard {
    /// The work is done (completed in the store): nothing to release.
    fn finish(&mut self) {
        self.claim = None;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let Some(claim) = self.claim.take() else {
            return;
        };
        let services = self.services.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = services.release_idempotency_key(&claim).await {
                    // The claim's lock timeout frees the key in the end.
                    tracing::warn!(?error, "could not release an idempotency key");
                }
            });
        }
    }
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
        SubFut: Future<Output = Result<(), atomic_core::Error>>,
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
        let outcome = async {
            let prepared = prepare(guard.claim.clone()).await?;
            let body = success_body(&render(&prepared, Reveal::Secrets), &self.meta);
            let completion = guard.claim.clone().map(|claim| Completion {
                claim,
                response: StoredResponse {
                    status: self.status.as_u16(),
                    body: success_body(&render(&prepared, Reveal::NoSecrets), &self.meta),
                },
            });
            submit(prepared, completion).await?;
            Ok::<_, ApiError>(body)
        }
        .await;
        match outcome {
            Ok(body) => {
                guard.finish();
                Ok(json_response(self.status, body))
            }
            Err(error) => {
                // Released before the error is answered, so an immediate retry runs anew.
                if let Some(claim) = guard.claim.take()
                    && let Err(release_error) = self.services.release_idempotency_key(&claim).await
                {
                    tracing::warn!(?release_error, "could not release an idempotency key");
                }
                Err(error)
            }
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
