//! `IdempotencyStore` on [`MemoryStore`]: a claim is one check-and-insert under the store's
//! lock, so two concurrent claims of one key can never both be acquired.

use async_trait::async_trait;

use super::store::{IdemRecord, MemoryStore};
use crate::error::{Error, Result};
use crate::idempotency::{
    Claim, ClaimOutcome, ClaimToken, Completion, Fingerprint, IdempotencyKey, IdempotencyPolicy,
};
use crate::ports::IdempotencyStore;
use crate::principal::Principal;

#[async_trait]
impl IdempotencyStore for MemoryStore {
    async fn claim(
        &self,
        scope: Principal,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        policy: IdempotencyPolicy,
    ) -> Result<ClaimOutcome> {
        let now = self.now();
        let mut state = self.lock();
        let scoped = (scope, key.clone());
        if let Some(record) = state
            .idempotency
            .get(&scoped)
            // An unfinished claim past its lock timeout created nothing: any request may
            // take the key over.
            .filter(|r| r.blocks(now, policy.lock_timeout))
        {
            if record.fingerprint != fingerprint {
                return Ok(ClaimOutcome::Mismatch);
            }
            return Ok(match &record.response {
                Some(response) => ClaimOutcome::Replay(response.clone()),
                None => ClaimOutcome::InProgress,
            });
        }
        // Absent, expired, or an unfinished claim whose holder is presumed dead: take it.
        let token = ClaimToken::generate();
        state.idempotency.insert(
            scoped,
            IdemRecord {
                fingerprint,
                token,
                locked_at: now,
                expires_at: now.saturating_add(policy.ttl),
                response: None,
            },
        );
        Ok(ClaimOutcome::Acquired(Claim {
            scope,
            key: key.clone(),
            token,
        }))
    }

    async fn complete(&self, completion: &Completion) -> Result<()> {
        let mut state = self.lock();
        state.check_completion(Some(completion), self.now())?;
        state.apply_completion(Some(completion.clone()), self.now());
        Ok(())
    }

    async fn release(&self, claim: &Claim) -> Result<()> {
        let mut state = self.lock();
        let scoped = (claim.scope, claim.key.clone());
        let held = state
            .idempotency
            .get(&scoped)
            .is_some_and(|r| r.token == claim.token && r.response.is_none());
        if held {
            state.idempotency.remove(&scoped);
        }
        Ok(())
    }

    async fn purge_expired(&self, limit: usize) -> Result<u64> {
        let now = self.now();
        let mut state = self.lock();
        let expired: Vec<_> = state
            .idempotency
            .iter()
            .filter(|(_, r)| r.expires_at <= now)
            .map(|(k, _)| k.clone())
            .take(limit)
            .collect();
        for key in &expired {
            state.idempotency.remove(key);
        }
        u64::try_from(expired.len()).map_err(Error::backend)
    }
}
