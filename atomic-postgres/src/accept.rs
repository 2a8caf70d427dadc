//! Group commit of payment inserts (see [`crate::group`]): concurrent `create_payment` calls
//! are written as ONE statement per group (at most [`MAX_GROUP`]), so one commit (one WAL
//! flush) and one round trip serve many requests. Each request is answered only after the
//! statement that wrote it committed; each payment's idempotency completion is in that same
//! statement, and a payment whose claim is no longer held is not inserted
//! (`IdempotencyClaimLost` for that one alone). If the statement fails for a reason one row may
//! cause (a constraint), each insert of the group is retried on its own, so only the culprit
//! fails. A caller that gives up withdraws an insert no writer has taken ([`crate::group`]), so a
//! timeout never turns a stored payment into a 503.

use atomic_core::idempotency::Completion;
use atomic_core::{Error, Payment, Result};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::error::from_sqlx;
use crate::group::Queued;
use crate::idempotency::{completion_may_take, take_key};
use crate::rows::{metadata_json, micros, owner_uuid, scope_uuid, viewer_merchant};

/// Most inserts written by one statement.
pub(crate) const MAX_GROUP: usize = 256;

/// One request's insert, and where its answer goes.
pub(crate) struct Insert {
    pub(crate) payment: Payment,
    pub(crate) completion: Option<Completion>,
    pub(crate) answer: oneshot::Sender<Result<()>>,
}

// The keys are taken by the statement that inserts the payments ([`Completion`]'s rule, in key
// order so two groups never deadlock); a payment is inserted only when its key was taken. Every
// row shares the group's lock timeout ($20).
pub(crate) const INSERT_GROUP: &str = concat!(
    "WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::bigint[],
        $6::text[], $7::text[], $8::text[], $9::text[], $10::uuid[], $11::uuid[],
        $12::timestamptz[], $13::smallint[], $14::bytea[], $15::uuid[], $16::text[],
        $17::text[], $18::bytea[], $19::bigint[])
    AS i(id, merchant_account, funding_account, owner_merchant, amount, currency, source,
        description, idempotency_key, idempotency_token, created_by, created_at,
        response_status, response_body, scope, capture_method, metadata, fingerprint, ttl)
), keyed AS (
    INSERT INTO idempotency_keys AS k
        (scope, key, fingerprint, token, locked_at, expires_at, response_status, response_body)
    SELECT i.scope, i.idempotency_key, i.fingerprint, i.idempotency_token, now(),
        now() + i.ttl * interval '1 microsecond', i.response_status, i.response_body
    FROM input i
    WHERE i.idempotency_token IS NOT NULL
    ORDER BY i.scope, i.idempotency_key
    ",
    take_key!(),
    "
    WHERE ",
    completion_may_take!("$20"),
    "
    RETURNING k.token
)
INSERT INTO payments (id, merchant_account, funding_account, owner_merchant, amount, currency,
    source, description, capture_method, metadata, idempotency_key, idempotency_token,
    created_by, status, touched_at, created_at, updated_at)
SELECT i.id, i.merchant_account, i.funding_account, i.owner_merchant, i.amount, i.currency,
    i.source, i.description, i.capture_method, i.metadata::jsonb, i.idempotency_key,
    i.idempotency_token, i.created_by, 'PENDING', now(), i.created_at, i.created_at
FROM input i
WHERE i.idempotency_token IS NULL OR i.idempotency_token IN (SELECT token FROM keyed)
RETURNING id"
);

/// Starts `writers` writer tasks on `pool`; returns where to send inserts.
pub(crate) fn start(pool: PgPool, writers: usize) -> mpsc::Sender<Queued<Insert>> {
    crate::group::start(
        pool,
        writers,
        "insert",
        MAX_GROUP,
        |pool, group| async move {
            write(&pool, group).await;
        },
    )
}

/// Writes one group and answers each request.
async fn write(pool: &PgPool, group: Vec<Insert>) {
    match insert_group(pool, &group).await {
        Ok(inserted) => {
            for insert in group {
                let result = if inserted.contains(&insert.payment.id.as_uuid()) {
                    Ok(())
                } else {
                    Err(Error::IdempotencyClaimLost)
                };
                let _ = insert.answer.send(result);
            }
        }
        Err(Error::Unavailable(source)) => {
            let message = source.to_string();
            for insert in group {
                let _ = insert.answer.send(Err(Error::unavailable(message.clone())));
            }
        }
        Err(_) if group.len() > 1 => {
            // Something in the group cannot be written: each on its own, so only it fails.
            for insert in group {
                let result = write_one(pool, &insert).await;
                let _ = insert.answer.send(result);
            }
        }
        Err(error) => {
            if let Some(insert) = group.into_iter().next() {
                let _ = insert.answer.send(Err(error));
            }
        }
    }
}

/// Writes one insert on its own (group commit off, or isolating a failed group).
pub(crate) async fn write_one(pool: &PgPool, insert: &Insert) -> Result<()> {
    let inserted = insert_group(pool, std::slice::from_ref(insert)).await?;
    if inserted.contains(&insert.payment.id.as_uuid()) {
        Ok(())
    } else {
        Err(Error::IdempotencyClaimLost)
    }
}

/// The columns of a group, one array per column (bound with `unnest`).
#[derive(Default)]
struct Columns {
    ids: Vec<Uuid>,
    merchant_accounts: Vec<Uuid>,
    funding_accounts: Vec<Uuid>,
    owners: Vec<Option<Uuid>>,
    amounts: Vec<i64>,
    currencies: Vec<String>,
    sources: Vec<String>,
    descriptions: Vec<String>,
    keys: Vec<Option<String>>,
    tokens: Vec<Option<Uuid>>,
    created_by: Vec<Option<Uuid>>,
    created_at: Vec<time::OffsetDateTime>,
    statuses: Vec<Option<i16>>,
    bodies: Vec<Option<Vec<u8>>>,
    scopes: Vec<Option<Uuid>>,
    capture_methods: Vec<&'static str>,
    metadata: Vec<String>,
    fingerprints: Vec<Option<Vec<u8>>>,
    ttls: Vec<Option<i64>>,
    /// The lock timeout every completion of the group shares.
    lock_timeout: Option<i64>,
}

impl Columns {
    fn push(&mut self, payment: &Payment, completion: Option<&Completion>) -> Result<()> {
        self.ids.push(payment.id.as_uuid());
        self.merchant_accounts
            .push(payment.merchant_account.as_uuid());
        self.funding_accounts
            .push(payment.funding_account.as_uuid());
        self.owners.push(owner_uuid(payment.owner));
        self.amounts.push(payment.amount.minor_units());
        self.currencies.push(payment.currency.as_str().to_owned());
        self.sources.push(payment.source.expose().to_owned());
        self.descriptions
            .push(payment.description.as_str().to_owned());
        self.created_by.push(viewer_merchant(payment.created_by));
        self.created_at.push(payment.created_at.as_datetime());
        self.capture_methods.push(payment.capture_method.as_str());
        self.metadata.push(metadata_json(&payment.metadata));
        match completion {
            Some(completion) => {
                // The key guarded by the claim (a payment carries its claim's key).
                self.keys
                    .push(Some(completion.claim.key.as_str().to_owned()));
                self.tokens.push(Some(completion.claim.token.as_uuid()));
                self.statuses.push(Some(
                    i16::try_from(completion.response.status).map_err(Error::backend)?,
                ));
                self.bodies.push(Some(completion.response.body.to_vec()));
                self.scopes.push(Some(scope_uuid(completion.claim.scope)));
                self.fingerprints
                    .push(Some(completion.fingerprint.as_bytes().to_vec()));
                self.ttls.push(Some(micros(completion.policy.ttl)));
                let lock_timeout = micros(completion.policy.lock_timeout);
                if *self.lock_timeout.get_or_insert(lock_timeout) != lock_timeout {
                    // One statement takes keys under one lock timeout: such a group is
                    // written insert by insert.
                    return Err(Error::backend(MixedLockTimeouts));
                }
            }
            None => {
                self.keys.push(
                    payment
                        .idempotency_key
                        .as_ref()
                        .map(|k| k.as_str().to_owned()),
                );
                self.tokens.push(None);
                self.statuses.push(None);
                self.bodies.push(None);
                self.scopes.push(None);
                self.fingerprints.push(None);
                self.ttls.push(None);
            }
        }
        Ok(())
    }
}

/// A group whose completions differ in lock timeout, which one statement cannot take.
#[derive(Debug, thiserror::Error)]
#[error("the group's completions differ in lock timeout")]
struct MixedLockTimeouts;

/// One statement for the whole group; the ids it inserted.
async fn insert_group(pool: &PgPool, group: &[Insert]) -> Result<Vec<Uuid>> {
    let mut c = Columns::default();
    for insert in group {
        c.push(&insert.payment, insert.completion.as_ref())?;
    }
    // Prepared once per connection: its plan reads only the group's own rows (the keys are
    // taken through their unique index), so a generic plan made while the tables were small
    // stays right as they grow.
    sqlx::query_scalar(INSERT_GROUP)
        .bind(c.ids)
        .bind(c.merchant_accounts)
        .bind(c.funding_accounts)
        .bind(c.owners)
        .bind(c.amounts)
        .bind(c.currencies)
        .bind(c.sources)
        .bind(c.descriptions)
        .bind(c.keys)
        .bind(c.tokens)
        .bind(c.created_by)
        .bind(c.created_at)
        .bind(c.statuses)
        .bind(c.bodies)
        .bind(c.scopes)
        .bind(c.capture_methods)
        .bind(c.metadata)
        .bind(c.fingerprints)
        .bind(c.ttls)
        .bind(c.lock_timeout)
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)
}
