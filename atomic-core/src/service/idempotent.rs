//! Idempotent writes: the protocol that keeps one request's effect to one, owned by the core so
//! that every caller gets it, whether it speaks HTTP or calls the services directly.
//!
//! With a key, a write prepares its record, renders the answer to keep, and writes the record
//! with the key and that answer in ONE store transaction: the write takes the key itself
//! ([`Completion`]'s rule), so a new request costs no store write of its own for the key. A
//! write that finds the key taken, or fails, writes nothing, and the key then says what to
//! answer: the same request finished is replayed, a different request under the key is
//! [`Error::IdempotencyKeyReused`], the same one still running is
//! [`Error::IdempotencyConflict`]; a free key leaves the write's own answer (so an error
//! stays the error and a retry runs anew). Nothing is held before the write begins, so a write
//! abandoned before then (the caller dropped the future) leaves nothing behind; once it began
//! it runs to its end in a task of its own, whatever becomes of the caller.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::idempotency::{
    Claim, ClaimOutcome, ClaimToken, Completion, Fingerprint, IdempotencyKey, IdempotencyPolicy,
    StoredResponse,
};
use crate::ports::IdempotencyStore;
use crate::principal::Principal;

/// A write's idempotency: its key and the fingerprint of the request it was first used for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    /// The caller's key.
    pub key: IdempotencyKey,
    /// What the request was; a different request under the same key is refused.
    pub fingerprint: Fingerprint,
}

impl Idempotency {
    /// The idempotency of a Rust API `operation` on `fields` under `key`, if there is one.
    pub(super) fn keyed(
        key: Option<IdempotencyKey>,
        operation: &str,
        fields: &[&[u8]],
    ) -> Option<Self> {
        key.map(|key| Self {
            key,
            fingerprint: fingerprint(operation, fields),
        })
    }
}

/// How an idempotent write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written<T> {
    /// It ran now; this is what the write answered.
    New(T),
    /// The same request had finished before: the answer kept then.
    Replayed(StoredResponse),
}

/// Attempts at releasing a claim, and the wait before the first retry (doubled each time).
const RELEASE_ATTEMPTS: u32 = 5;
const RELEASE_BACKOFF: Duration = Duration::from_millis(200);

/// Runs idempotent writes against one idempotency store under one policy.
#[derive(Clone)]
pub struct IdempotentWrites {
    store: Arc<dyn IdempotencyStore>,
    policy: IdempotencyPolicy,
}

impl std::fmt::Debug for IdempotentWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotentWrites")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl IdempotentWrites {
    pub(super) fn new(store: Arc<dyn IdempotencyStore>, policy: IdempotencyPolicy) -> Self {
        Self { store, policy }
    }

    /// Runs one write for `caller`, under `idempotency` if given: `prepare` builds the record
    /// (given the claim the write will take, whose key the record must carry), `render` gives
    /// the answer kept for replays, `began` is told when the write begins (from then on it runs
    /// to its end), and `submit` writes the record with the completion in one store
    /// transaction and answers the record as written.
    pub async fn run<T, U, Prep, PrepFut, Sub, SubFut>(
        &self,
        caller: Principal,
        idempotency: Option<&Idempotency>,
        prepare: Prep,
        render: impl FnOnce(&T) -> StoredResponse,
        began: impl FnOnce(),
        submit: Sub,
    ) -> Result<Written<U>>
    where
        Prep: FnOnce(Option<Claim>) -> PrepFut,
        PrepFut: Future<Output = Result<T>>,
        Sub: FnOnce(T, Option<Completion>) -> SubFut,
        SubFut: Future<Output = Result<U>> + Send + 'static,
        U: Send + 'static,
    {
        let claim = idempotency.map(|idempotency| Claim {
            scope: caller,
            key: idempotency.key.clone(),
            token: ClaimToken::generate(),
        });
        let written = match prepare(claim.clone()).await {
            Ok(prepared) => {
                let completion = claim
                    .zip(idempotency)
                    .map(|(claim, idempotency)| Completion {
                        claim,
                        fingerprint: idempotency.fingerprint,
                        policy: self.policy,
                        response: render(&prepared),
                    });
                began();
                self.write_to_end(submit(prepared, completion)).await
            }
            Err(error) => Err(error),
        };
        match (written, idempotency) {
            (Ok(written), _) => Ok(Written::New(written)),
            (Err(error), None) => Err(error),
            (Err(error), Some(idempotency)) => self.answer_by_key(caller, idempotency, error).await,
        }
    }

    /// The answer to a keyed write that wrote nothing: what the key holds, or `error` when the
    /// key is free (a key taken only to be read is given back at once).
    async fn answer_by_key<U>(
        &self,
        caller: Principal,
        idempotency: &Idempotency,
        error: Error,
    ) -> Result<Written<U>> {
        let outcome = match self.claim(caller, idempotency).await {
            Ok(outcome) => outcome,
            // The store does not answer: the write's own error says more.
            Err(_) => return Err(error),
        };
        match outcome {
            ClaimOutcome::Replay(stored) => {
                crate::telemetry::idempotency_replay();
                Ok(Written::Replayed(stored))
            }
            ClaimOutcome::Mismatch => Err(Error::IdempotencyKeyReused),
            ClaimOutcome::InProgress => Err(Error::IdempotencyConflict),
            ClaimOutcome::Acquired(claim) => {
                // Given back in a task of its own, so a caller gone meanwhile holds no key.
                let writes = self.clone();
                let _ = tokio::spawn(async move { writes.release(claim).await }).await;
                // The key was freed while this write ran (given up, or expired at that instant):
                // nothing was written, and a retry runs anew.
                Err(match error {
                    Error::IdempotencyClaimLost => Error::IdempotencyConflict,
                    error => error,
                })
            }
        }
    }

    /// Runs a write that began to its end in a task of its own, whatever becomes of the caller.
    async fn write_to_end<U, Write>(&self, write: Write) -> Result<U>
    where
        Write: Future<Output = Result<U>> + Send + 'static,
        U: Send + 'static,
    {
        tokio::spawn(write).await.map_err(Error::backend)?
    }

    async fn claim(&self, caller: Principal, idempotency: &Idempotency) -> Result<ClaimOutcome> {
        self.store
            .claim(
                caller,
                &idempotency.key,
                idempotency.fingerprint,
                self.policy,
            )
            .await
    }

    /// Releases a claim taken only to be read, so a retry (corrected or not) runs anew.
    /// The first attempt is awaited; if it fails, the retries run in the background, and a
    /// claim that no attempt could release frees its key at the store's lock timeout.
    async fn release(&self, claim: Claim) {
        if self.store.release(&claim).await.is_ok() {
            return;
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut wait = RELEASE_BACKOFF;
            for _ in 1..RELEASE_ATTEMPTS {
                tokio::time::sleep(wait).await;
                match store.release(&claim).await {
                    Ok(()) => return,
                    Err(error) => tracing::warn!(?error, "could not release an idempotency key"),
                }
                wait *= 2;
            }
        });
    }
}

/// The answer an idempotent write made through the Rust API keeps: the id of what it wrote,
/// as text, so a replay finds the very record again.
pub(super) fn id_response(id: uuid::Uuid) -> StoredResponse {
    StoredResponse {
        status: 200,
        body: bytes::Bytes::from(id.hyphenated().to_string()),
    }
}

/// The id a replayed [`id_response`] names.
pub(super) fn replayed_id(stored: &StoredResponse) -> Result<uuid::Uuid> {
    std::str::from_utf8(&stored.body)
        .ok()
        .and_then(|text| uuid::Uuid::parse_str(text).ok())
        .ok_or(Error::IdempotencyKeyReused)
}

/// The fingerprint of a Rust API request: its operation and its fields, each length-prefixed
/// so no two different requests encode alike.
pub(super) fn fingerprint(operation: &str, fields: &[&[u8]]) -> Fingerprint {
    let mut canonical = Vec::new();
    for field in fields {
        canonical.extend_from_slice(&(field.len() as u64).to_be_bytes());
        canonical.extend_from_slice(field);
    }
    Fingerprint::of("RUST", operation, &canonical)
}
