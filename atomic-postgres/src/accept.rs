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
use crate::rows::{owner_uuid, scope_uuid, viewer_merchant};

/// Most inserts written by one statement.
pub(crate) const MAX_GROUP: usize = 256;

/// One request's insert, and where its answer goes.
pub(crate) struct Insert {
    pub(crate) payment: Payment,
    pub(crate) completion: Option<Completion>,
    pub(crate) answer: oneshot::Sender<Result<()>>,
}

const INSERT_GROUP: &str = "\
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::bigint[],
        $6::text[], $7::text[], $8::text[], $9::text[], $10::uuid[], $11::uuid[],
        $12::timestamptz[], $13::smallint[], $14::bytea[], $15::uuid[])
    AS i(id, merchant_account, funding_account, owner_merchant, amount, currency, source,
        description, idempotency_key, idempotency_token, created_by, created_at,
        response_status, response_body, scope)
), done AS (
    UPDATE idempotency_keys k SET response_status = i.response_status,
        response_body = i.response_body
    FROM input i
    WHERE i.idempotency_token IS NOT NULL AND k.scope = i.scope
      AND k.key = i.idempotency_key AND k.token = i.idempotency_token
      AND k.response_status IS NULL
    RETURNING i.id
)
INSERT INTO payments (id, merchant_account, funding_account, owner_merchant, amount, currency,
    source, description, idempotency_key, idempotency_token, created_by, status, touched_at,
    created_at, updated_at)
SELECT i.id, i.merchant_account, i.funding_account, i.owner_merchant, i.amount, i.currency,
    i.source, i.description, i.idempotency_key, i.idempotency_token, i.created_by, 'PENDING',
    now(), i.created_at, i.created_at
FROM input i
WHERE i.idempotency_token IS NULL OR i.id IN (SELECT id FROM done)
RETURNING id";

/// Starts `writers` writer tasks on `pool`; returns where to send inserts.
pub(crate) fn start(pool: PgPool, writers: usize) -> mpsc::Sender<Queued<Insert>> {
    crate::group::start(pool, writers, MAX_GROUP, |pool, group| async move {
        write(&pool, group).await;
    })
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

/// One statement for the whole group; the ids it inserted.
async fn insert_group(pool: &PgPool, group: &[Insert]) -> Result<Vec<Uuid>> {
    let n = group.len();
    let mut ids = Vec::with_capacity(n);
    let mut merchant_accounts = Vec::with_capacity(n);
    let mut funding_accounts = Vec::with_capacity(n);
    let mut owners = Vec::with_capacity(n);
    let mut amounts = Vec::with_capacity(n);
    let mut currencies = Vec::with_capacity(n);
    let mut sources = Vec::with_capacity(n);
    let mut descriptions = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let mut created_by = Vec::with_capacity(n);
    let mut created_at = Vec::with_capacity(n);
    let mut statuses: Vec<Option<i16>> = Vec::with_capacity(n);
    let mut bodies: Vec<Option<Vec<u8>>> = Vec::with_capacity(n);
    let mut scopes = Vec::with_capacity(n);
    for Insert {
        payment,
        completion,
        ..
    } in group
    {
        ids.push(payment.id.as_uuid());
        merchant_accounts.push(payment.merchant_account.as_uuid());
        funding_accounts.push(payment.funding_account.as_uuid());
        owners.push(owner_uuid(payment.owner));
        amounts.push(payment.amount.minor_units());
        currencies.push(payment.currency.as_str().to_owned());
        sources.push(payment.source.expose().to_owned());
        descriptions.push(payment.description.as_str().to_owned());
        created_by.push(viewer_merchant(payment.created_by));
        created_at.push(payment.created_at.as_datetime());
        match completion {
            Some(completion) => {
                // The key guarded by the claim (a payment carries its claim's key).
                keys.push(Some(completion.claim.key.as_str().to_owned()));
                tokens.push(Some(completion.claim.token.as_uuid()));
                statuses.push(Some(
                    i16::try_from(completion.response.status).map_err(Error::backend)?,
                ));
                bodies.push(Some(completion.response.body.to_vec()));
                scopes.push(Some(scope_uuid(completion.claim.scope)));
            }
            None => {
                keys.push(
                    payment
                        .idempotency_key
                        .as_ref()
                        .map(|k| k.as_str().to_owned()),
                );
                tokens.push(None);
                statuses.push(None);
                bodies.push(None);
                scopes.push(None);
            }
        }
    }
    // Planned anew for each group, never from a cached generic plan: a plan cached while
    // `idempotency_keys` was small joins it by sequential scan, and that plan would stay for
    // the connection's life while the table grows (a scan of every key per group). Planning
    // is paid once per group, not once per request.
    sqlx::query_scalar(INSERT_GROUP)
        .persistent(false)
        .bind(ids)
        .bind(merchant_accounts)
        .bind(funding_accounts)
        .bind(owners)
        .bind(amounts)
        .bind(currencies)
        .bind(sources)
        .bind(descriptions)
        .bind(keys)
        .bind(tokens)
        .bind(created_by)
        .bind(created_at)
        .bind(statuses)
        .bind(bodies)
        .bind(scopes)
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)
}
