//! `IdempotencyStore` on [`PgStore`]: a claim is one `INSERT … ON CONFLICT DO UPDATE … WHERE`
//! (take the key when it is new, expired, or held unfinished by a presumed-dead claimant,
//! whatever the new request's body), so two concurrent claims can never both acquire;
//! completions are conditional updates on the claim's token.
//! Concurrent claims are group-committed ([`crate::group`]): one multi-row statement takes
//! every key of a group, and a group that fails (the same key twice) is retried key by key.

use async_trait::async_trait;
use atomic_core::idempotency::{
    Claim, ClaimOutcome, ClaimToken, Completion, Fingerprint, IdempotencyKey, IdempotencyPolicy,
    StoredResponse,
};
use atomic_core::ports::IdempotencyStore;
use atomic_core::principal::Principal;
use atomic_core::{Error, Result};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::{corrupt, from_sqlx};
use crate::rows::{micros, scope_uuid};
use crate::store::PgStore;

// Key statements as macros so they are assembled at compile time with `concat!`.

/// Takes the key row `k` on conflict: every column from the row the statement meant to
/// insert. The statement's `WHERE` says who may take it.
macro_rules! take_key {
    () => {
        "ON CONFLICT (scope, key) DO UPDATE
SET fingerprint = EXCLUDED.fingerprint, token = EXCLUDED.token, locked_at = EXCLUDED.locked_at,
    expires_at = EXCLUDED.expires_at, response_status = EXCLUDED.response_status,
    response_body = EXCLUDED.response_body"
    };
}

/// Whether the key row `k` is free to take: expired, or unfinished and older than the lock
/// timeout (`$lock`, in microseconds), when its claimant is presumed dead.
macro_rules! key_is_free {
    ($lock:literal) => {
        concat!(
            "k.expires_at <= now()
   OR (k.response_status IS NULL AND k.locked_at <= now() - ",
            $lock,
            " * interval '1 microsecond')"
        )
    };
}

/// [`Completion`]'s rule for the key row `k`: free to take, or held unfinished by the
/// completion's own token.
macro_rules! completion_may_take {
    ($lock:literal) => {
        concat!(
            "(k.token = EXCLUDED.token AND k.response_status IS NULL)
   OR ",
            $crate::idempotency::key_is_free!($lock)
        )
    };
}

pub(crate) use {completion_may_take, key_is_free, take_key};

const CLAIM: &str = concat!(
    "INSERT INTO idempotency_keys AS k (scope, key, fingerprint, token, locked_at, expires_at)
VALUES ($1, $2, $3, $4, now(), now() + $5 * interval '1 microsecond')
",
    take_key!(),
    "
WHERE ",
    key_is_free!("$6"),
    "
RETURNING token"
);

// CLAIM for a group of keys in one statement (rows in key order, so two groups never
// deadlock); every row shares the group's lock timeout ($6).
pub(crate) const CLAIM_MANY: &str = concat!(
    "INSERT INTO idempotency_keys AS k (scope, key, fingerprint, token, locked_at, expires_at)
SELECT i.scope, i.key, i.fingerprint, i.token, now(), now() + i.ttl * interval '1 microsecond'
FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::uuid[], $5::bigint[])
    AS i(scope, key, fingerprint, token, ttl)
ORDER BY i.scope, i.key
",
    take_key!(),
    "
WHERE ",
    key_is_free!("$6"),
    "
RETURNING token"
);

/// Most claims taken by one statement.
const MAX_CLAIMS: usize = 256;

/// One request's attempt to take a key, and where its answer goes (`true`: taken).
pub(crate) struct TakeRequest {
    scope: Uuid,
    key: String,
    fingerprint: [u8; 32],
    token: Uuid,
    ttl: i64,
    lock_timeout: i64,
    answer: oneshot::Sender<Result<bool>>,
}

/// Starts the writers that take keys in groups; returns where to send requests.
pub(crate) fn start_takers(
    pool: PgPool,
    writers: usize,
) -> mpsc::Sender<crate::group::Queued<TakeRequest>> {
    crate::group::start(
        pool,
        writers,
        "claim",
        MAX_CLAIMS,
        |pool, group| async move {
            take_group(&pool, group).await;
        },
    )
}

async fn take_group(pool: &PgPool, group: Vec<TakeRequest>) {
    let same_policy = group
        .iter()
        .all(|r| r.lock_timeout == group[0].lock_timeout);
    if same_policy && !group.is_empty() {
        match take_many(pool, &group).await {
            Ok(taken) => {
                for request in group {
                    let took = taken.contains(&request.token);
                    answer(pool, request, Ok(took)).await;
                }
                return;
            }
            Err(Error::Unavailable(source)) => {
                let message = source.to_string();
                for request in group {
                    let _ = request
                        .answer
                        .send(Err(Error::unavailable(message.clone())));
                }
                return;
            }
            // E.g. the same key twice in one group: each on its own.
            Err(_) => {}
        }
    }
    for request in group {
        let result = take_many(pool, std::slice::from_ref(&request))
            .await
            .map(|taken| taken.contains(&request.token));
        answer(pool, request, result).await;
    }
}

/// Answers a claim's caller. A caller gone by then (its request dropped: client gone, request
/// timeout) can never use or release a key taken for it, so the writer releases it: a claim
/// nobody holds must not block its key.
async fn answer(pool: &PgPool, request: TakeRequest, result: Result<bool>) {
    let took = matches!(result, Ok(true));
    if request.answer.send(result).is_err() && took {
        let released = sqlx::query(RELEASE)
            .bind(request.scope)
            .bind(&request.key)
            .bind(request.token)
            .execute(pool)
            .await;
        if let Err(error) = released {
            // The lock timeout frees the key in the end.
            tracing::warn!(%error, "could not release a claim whose caller left");
        }
    }
}

const RELEASE: &str = "\
DELETE FROM idempotency_keys
WHERE scope = $1 AND key = $2 AND token = $3 AND response_status IS NULL";

/// Tries to take every key of `group` in one statement; the tokens that were stored.
async fn take_many(pool: &PgPool, group: &[TakeRequest]) -> Result<Vec<Uuid>> {
    sqlx::query_scalar(CLAIM_MANY)
        .bind(group.iter().map(|r| r.scope).collect::<Vec<_>>())
        .bind(group.iter().map(|r| r.key.clone()).collect::<Vec<_>>())
        .bind(
            group
                .iter()
                .map(|r| r.fingerprint.to_vec())
                .collect::<Vec<_>>(),
        )
        .bind(group.iter().map(|r| r.token).collect::<Vec<_>>())
        .bind(group.iter().map(|r| r.ttl).collect::<Vec<_>>())
        .bind(group.first().map_or(0, |r| r.lock_timeout))
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)
}

const CURRENT: &str = "\
SELECT fingerprint, response_status, response_body FROM idempotency_keys
WHERE scope = $1 AND key = $2 AND expires_at > now()";

const COMPLETE: &str = concat!(
    "INSERT INTO idempotency_keys AS k
    (scope, key, fingerprint, token, locked_at, expires_at, response_status, response_body)
VALUES ($1, $2, $3, $4, now(), now() + $5 * interval '1 microsecond', $7, $8)
",
    take_key!(),
    "
WHERE ",
    completion_may_take!("$6")
);

/// Writes a completion inside the caller's transaction, taking the key when it is free
/// ([`Completion`]'s rule); [`Error::IdempotencyClaimLost`] when another holds it or it is
/// finished.
pub(crate) async fn complete_in(conn: &mut PgConnection, completion: &Completion) -> Result<()> {
    let claim = &completion.claim;
    let done = sqlx::query(COMPLETE)
        .bind(scope_uuid(claim.scope))
        .bind(claim.key.as_str())
        .bind(completion.fingerprint.as_bytes().as_slice())
        .bind(claim.token.as_uuid())
        .bind(micros(completion.policy.ttl))
        .bind(micros(completion.policy.lock_timeout))
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
    /// One round of a claim: takes the key, or says why it is not ours; `None` when the key
    /// vanished between the two statements (try again).
    async fn try_claim(
        &self,
        scope: Principal,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        policy: IdempotencyPolicy,
    ) -> Result<Option<ClaimOutcome>> {
        let token = ClaimToken::generate();
        let taken = self
            .take_key(scope, key, fingerprint, policy, token)
            .await?;
        if taken {
            return Ok(Some(ClaimOutcome::Acquired(Claim {
                scope,
                key: key.clone(),
                token,
            })));
        }
        self.why_not_taken(scope, key, fingerprint).await
    }

    /// Takes the key for `token` when it is new, expired, or held unfinished past the lock
    /// timeout (whatever the body); whether it was taken. With group commit on, one statement
    /// (and one commit) takes the keys of all concurrent claims.
    async fn take_key(
        &self,
        scope: Principal,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        policy: IdempotencyPolicy,
        token: ClaimToken,
    ) -> Result<bool> {
        let Some(takers) = self.takers() else {
            return self
                .take_key_alone(scope, key, fingerprint, policy, token)
                .await;
        };
        let (answer, answered) = oneshot::channel();
        let request = TakeRequest {
            scope: scope_uuid(scope),
            key: key.as_str().to_owned(),
            fingerprint: *fingerprint.as_bytes(),
            token: token.as_uuid(),
            ttl: micros(policy.ttl),
            lock_timeout: micros(policy.lock_timeout),
            answer,
        };
        // A claim withdrawn before a writer took it holds no key.
        crate::group::submit(takers, request, answered, self.call_timeout()).await
    }

    /// [`CLAIM`] on its own: the key is taken when the token stored is `token`.
    async fn take_key_alone(
        &self,
        scope: Principal,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        policy: IdempotencyPolicy,
        token: ClaimToken,
    ) -> Result<bool> {
        let stored = self
            .call(async {
                sqlx::query(CLAIM)
                    .bind(scope_uuid(scope))
                    .bind(key.as_str())
                    .bind(fingerprint.as_bytes().as_slice())
                    .bind(token.as_uuid())
                    .bind(micros(policy.ttl))
                    .bind(micros(policy.lock_timeout))
                    .fetch_optional(self.pool())
                    .await
                    .map_err(from_sqlx)
            })
            .await?;
        let Some(row) = stored else {
            return Ok(false);
        };
        let stored_token: Uuid = row.try_get("token").map_err(from_sqlx)?;
        Ok(stored_token == token.as_uuid())
    }

    /// Why a key that could not be taken is not ours, read from the key as it is now. It may
    /// have changed since (completed, expired, purged): `None` when it is gone (try again).
    async fn why_not_taken(
        &self,
        scope: Principal,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
    ) -> Result<Option<ClaimOutcome>> {
        let current = self.call(async {
            sqlx::query(CURRENT)
                .bind(scope_uuid(scope))
                .bind(key.as_str())
                .fetch_optional(self.pool())
                .await
                .map_err(from_sqlx)
        });
        let Some(row) = current.await? else {
            return Ok(None);
        };
        held_key_outcome(&row, fingerprint).map(Some)
    }
}

/// What a live key held by another claim answers a request with `fingerprint`: another body
/// is a mismatch whatever the key's state; the same body replays the stored response, or is
/// in progress while the holder has stored none.
fn held_key_outcome(row: &PgRow, fingerprint: Fingerprint) -> Result<ClaimOutcome> {
    let stored: Vec<u8> = row.try_get("fingerprint").map_err(from_sqlx)?;
    if stored.as_slice() != fingerprint.as_bytes().as_slice() {
        return Ok(ClaimOutcome::Mismatch);
    }
    let status: Option<i16> = row.try_get("response_status").map_err(from_sqlx)?;
    let body: Option<Vec<u8>> = row.try_get("response_body").map_err(from_sqlx)?;
    Ok(match (status, body) {
        (Some(status), Some(body)) => ClaimOutcome::Replay(StoredResponse {
            status: u16::try_from(status).map_err(|_| corrupt("response status"))?,
            body: body.into(),
        }),
        _ => ClaimOutcome::InProgress,
    })
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
        // Not under one `call` bound: a bound around the group submit would fire before the
        // submit's own and abandon a claim a writer has taken. Each step is bounded instead.
        // Each round either decides or saw the key vanish between its two statements; three
        // rounds in a row of that is a key being purged and re-taken under us.
        for _ in 0..3 {
            if let Some(outcome) = self.try_claim(scope, key, fingerprint, policy).await? {
                return Ok(outcome);
            }
        }
        Ok(ClaimOutcome::InProgress)
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
            sqlx::query(RELEASE)
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
