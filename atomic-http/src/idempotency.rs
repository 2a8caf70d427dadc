//! Idempotent creation over HTTP: the `Idempotency-Key` header, and the rendering of the
//! answers the core's idempotency protocol keeps and replays. The protocol itself (prepare,
//! write the record, its key and its answer in ONE store transaction, answer by the key when it
//! was taken) is the core's ([`atomic_core::service::IdempotentWrites`]); here a replay
//! becomes the stored status and body, byte for byte, with `Idempotent-Replayed: true`.

use std::future::Future;
use std::sync::Mutex;

use atomic_core::idempotency::{Claim, Completion, Fingerprint, IdempotencyKey, StoredResponse};
use atomic_core::service::{Idempotency, Written};
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
    /// Runs `prepare` (given the claim the write takes, if any), renders `render` of its result as the
    /// response, and runs `submit` with the completion that stores that response (rendered
    /// without secrets), all under the idempotency key if there is one. The protocol itself
    /// is the core's ([`atomic_core::service::IdempotentWrites`]); this only renders.
    pub(crate) async fn run<P, D, Prep, PrepFut, Sub, SubFut>(
        self,
        prepare: Prep,
        render: impl Fn(&P, Reveal) -> D,
        submit: Sub,
    ) -> Result<Response, ApiError>
    where
        Prep: FnOnce(Option<Claim>) -> PrepFut,
        PrepFut: Future<Output = Result<P, atomic_core::Error>>,
        D: Serialize,
        Sub: FnOnce(P, Option<Completion>) -> SubFut,
        SubFut: Future<Output = Result<(), atomic_core::Error>> + Send + 'static,
    {
        let idempotency = self.key.map(|key| Idempotency {
            key,
            fingerprint: self.fingerprint,
        });
        // The live answer is rendered from the prepared record, like the stored one, so a
        // replay and the first answer say the same.
        let live = Mutex::new(None);
        let (meta, status, commit) = (&self.meta, self.status, self.commit);
        let written = self
            .services
            .idempotent_writes()
            .run(
                self.caller,
                idempotency.as_ref(),
                |claim| async {
                    let prepared = prepare(claim).await?;
                    let body = success_body(&render(&prepared, Reveal::Secrets), meta);
                    *live.lock().unwrap_or_else(|p| p.into_inner()) = Some(body);
                    Ok(prepared)
                },
                |prepared| StoredResponse {
                    status: status.as_u16(),
                    body: success_body(&render(prepared, Reveal::NoSecrets), meta),
                },
                // The write runs to its end whatever becomes of this request (a client that
                // hangs up, the request deadline): its answer is never a 503.
                || {
                    if let Some(commit) = &commit {
                        commit.begin();
                    }
                },
                submit,
            )
            .await?;
        match written {
            Written::New(()) => {
                let body = live.into_inner().unwrap_or_else(|p| p.into_inner());
                Ok(json_response(status, body.unwrap_or_default()))
            }
            Written::Replayed(stored) => Ok(replay(stored)),
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
