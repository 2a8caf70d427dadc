//! `IdempotencyStore` on [`PgStore`]: a claim is one `INSERT … ON CONFLICT DO UPDATE … WHERE`
//! (take the key when it is new, expired, or held by a presumed-dead claimant), so two concurrent
//! claims can never both acquire; completions are conditional updates on the claim's token.

use async_trait::async_trait;
use atomic_core::idempotency::{
    Claim, ClaimOutcome, ClaimToken, Completion, Fingerprint, IdempotencyKey, IdempotencyPolicy,
    StoredResponse,
};
use atomic_core::ports::IdempotencyStore;
use atomic_core::principal::Principal;
use atomic_core::{Error, Result};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::error::{corrupt, from_sqlx};
use crate::rows::{micros, scope_uuid};
use crate::store::PgStore;

const CLAIM: &str = "\
INSERT INTO idempotency_keys AS k (scope, key, fingerprint, token, locked_at, expires_at)
VALUES ($1, $2, $3, $4, now(), now() + $5 * interval '1 microsecond')
ON CONFLICT (scope, key) DO UPDATE
SET fingerprint = EXCLUDED.fingerprint, token = EXCLUDED.token, locked_at = EXCLUDED.locked_at,
    expires_at = EXCLUDED.expires_at, response_status = NULL, response_body = NULL
WHERE k.expires_at <= now()
   OR (k.response_status IS NULL AND k.fingerprint = EXCLUDED.fingerprint
       AND k.locked_at <= now() - $6 * interval '1 microsecond')
RETURNING token";

const CURRENT: &str = "\
SELECT fingerprint, response_status, response_body FROM idempotency_keys
WHERE scope = $1 AND key = $2 AND expires_at > now()";

const COMPLETE: &str = "\
UPDATE idempotency_keys SET response_status = $4, response_body = $5
WHERE scope = $1 AND key = $2 AND token = $3 AND response_status IS NULL";

/// Stores the response of a held claim inside the caller's transaction;
/// [`Error::IdempotencyClaimLost`] when the claim is no longer held.
pub(crate) async fn complete_in(conn: &mut PgConnection, completion: &Completion) -> Result<()> {
    let claim = &completion.claim;
    let done = sqlx::query(COMPLETE)
        .bind(scope_uuid(claim.scope))
        .bind(claim.key.as_str())
        .bind(claim.token.as_uuid())
        .bind(i16::try_from(completion.response.status).map_err(Error::backend)?)
        .bind(completion.response.body.as_ref())
        .execute(conn)
        .await
        .map_err(from_sqlx)?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(Error::IdempotencyClaimLost)
    }
}

impl PgStore {
    async fn try_claim(
        &self,
        scope: Principal,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        policy: IdempotencyPolicy,
    ) -> Result<Option<ClaimOutcome>> {
        let token = ClaimToken::generate();
        let taken = sqlx::query(CLAIM)
            .bind(scope_uuid(scope))
            .bind(key.as_str())
            .bind(fingerprint.as_bytes().as_slice())
            .bind(token.as_uuid())
            .bind(micros(policy.ttl))
            .bind(micros(policy.lock_timeout))
            .fetch_optional(self.pool())
            .await
            .map_err(from_sqlx)?;
        if let Some(row) = taken {
            let stored: Uuid = row.try_get("token").map_err(from_sqlx)?;
            if stored == token.as_uuid() {
                return Ok(Some(ClaimOutcome::Acquired(Claim {
                    scope,
                    key: key.clone(),
                    token,
                })));
            }
        }
        // The key is live and not ours: say why. It may have changed since (completed,
        // expired, purged); an absent row means "try again".
        let Some(row) = sqlx::query(CURRENT)
            .bind(scope_uuid(scope))
            .bind(key.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(from_sqlx)?
        else {
            return Ok(None);
        };
        let stored: Vec<u8> = row.try_get("fingerprint").map_err(from_sqlx)?;
        if stored.as_slice() != fingerprint.as_bytes().as_slice() {
            return Ok(Some(ClaimOutcome::Mismatch));
        }
        let status: Option<i16> = row.try_get("response_status").map_err(from_sqlx)?;
        let body: Option<Vec<u8>> = row.try_get("response_body").map_err(from_sqlx)?;
        Ok(Some(match (status, body) {
            (Some(status), Some(body)) => ClaimOutcome::Replay(StoredResponse {
                status: u16::try_from(status).map_err(|_| corrupt("response status"))?,
                body: body.into(),
            }),
            _ => ClaimOutcome::InProgress,
        }))
    }
}

#[async_trait]
impl IdempotencyStore for PgStore {
    async fn claim(
        &self,
        scope: Principal,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        policy: IdempotencyPolicy,
    ) -> Result<ClaimOutcome> {
        self.call(async {
            // Each round either decides or saw the key vanish between its two statements;
            // three rounds in a row of that is a key being purged and re-taken under us.
            for _ in 0..3 {
                if let Some(outcome) = self.try_claim(scope, key, fingerprint, policy).await? {
                    return Ok(outcome);
                }
            }
            Ok(ClaimOutcome::InProgress)
        })
        .await
    }

    async fn complete(&self, completion: &Completion) -> Result<()> {
        self.call(async {
            let mut conn = self.pool().acquire().await.map_err(from_sqlx)?;
            complete_in(&mut conn, completion).await
        })
        .await
    }

    async fn release(&self, claim: &Claim) -> Result<()> {
        self.call(async {
            sqlx::query(
                "DELETE FROM idempotency_keys \
                 WHERE scope = $1 AND key = $2 AND token = $3 AND response_status IS NULL",
            )
            .bind(scope_uuid(claim.scope))
            .bind(claim.key.as_str())
            .bind(claim.token.as_uuid())
            .execute(self.pool())
            .await
            .map_err(from_sqlx)?;
            Ok(())
        })
        .await
    }

    async fn purge_expired(&self, limit: usize) -> Result<u64> {
        self.call(async {
            let done = sqlx::query(
                "DELETE FROM idempotency_keys WHERE (scope, key) IN (\
                 SELECT scope, key FROM idempotency_keys WHERE expires_at <= now() \
                 LIMIT $1 FOR UPDATE SKIP LOCKED)",
            )
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .execute(self.pool())
            .await
            .map_err(from_sqlx)?;
            Ok(done.rows_affected())
        })
        .await
    }
}
