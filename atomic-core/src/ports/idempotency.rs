//! [`IdempotencyStore`]: claims on idempotency keys and their stored responses.

use async_trait::async_trait;

use crate::error::Result;
use crate::idempotency::{
    Claim, ClaimOutcome, Completion, Fingerprint, IdempotencyKey, IdempotencyPolicy,
};
use crate::principal::Principal;

/// Where idempotency records live. Completion normally happens inside the operation's own
/// store transaction (the `completion` argument of the creating store methods); `complete`
/// here is the same step on its own, for operations that write nothing else.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// One atomic claim of `key` in `scope` (no read-then-insert race): a different fingerprint
    /// is [`ClaimOutcome::Mismatch`] whatever the record's state; a finished record replays; an
    /// unfinished one is [`ClaimOutcome::InProgress`] until it is older than the policy's lock
    /// timeout, when it is taken over. Expired records count as absent.
    async fn claim(
        &self,
        scope: Principal,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        policy: IdempotencyPolicy,
    ) -> Result<ClaimOutcome>;

    /// Stores the response under the completion's key, taking the key when it is free
    /// ([`Completion`]'s rule). [`crate::Error::IdempotencyClaimLost`] if another holds it or
    /// it is finished.
    async fn complete(&self, completion: &Completion) -> Result<()>;

    /// Gives a held claim up (the operation failed and created nothing). A no-op if it is no
    /// longer held.
    async fn release(&self, claim: &Claim) -> Result<()>;

    /// Deletes up to `limit` expired records; returns how many.
    async fn purge_expired(&self, limit: usize) -> Result<u64>;
}
