//! [`OutboxStore`] on [`PgStore`]: the webhook dispatcher claims due deliveries under a lease
//! (one statement, `FOR NO KEY UPDATE SKIP LOCKED`, so any number of dispatchers share the
//! work and never claim one delivery twice), writes them back while its lease holds, and the
//! retention sweep deletes old events with their deliveries.

use std::time::Duration;

use async_trait::async_trait;
use atomic_core::Result;
use atomic_core::ports::{DueDelivery, LeaseId, OutboxStore, Target};
use atomic_core::time::Timestamp;
use atomic_core::webhook::{WebhookDelivery, WebhookUrl};
use atomic_webhook_signature::Secret;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::error::{corrupt, from_sqlx};
use crate::rows::{self, DeliveryColumns, delivery_columns, micros};
use crate::store::{PgStore, batch_query};

// Claims up to $3 due deliveries under lease $1 for $2 microseconds, at most $4 held per
// endpoint, oldest due first; each with its endpoint (and whether it is deleted) and its
// event's body.
//
// - `pending`: the endpoints that have PENDING deliveries, found by skipping through
//   `webhook_deliveries_pending` one endpoint at a time (deleted endpoints included: a
//   delivery written while its endpoint was being deleted is claimed so it can be ended);
// - `held`: the live holds per endpoint;
// - `chosen`: per endpoint, its oldest due deliveries that nobody holds, as many as it has
//   room for ($4 less its holds; read from its index, so an endpoint with a backlog costs
//   no more than one with none), then the oldest $3 of all those;
// - the chosen rows are locked by primary key, skipping those another claim is taking, and
//   tested again (a claim that committed in between has leased them); the lease is set.
//
// Two claims running at once both count the holds as they were before either: each keeps
// within $4 per endpoint, so together they may hold up to $4 per claim under way.
const CLAIM: &str = concat!(
    "WITH RECURSIVE pending AS ( \
         (SELECT endpoint_id FROM webhook_deliveries WHERE status = 'PENDING' \
          ORDER BY endpoint_id LIMIT 1) \
         UNION ALL \
         SELECT (SELECT d.endpoint_id FROM webhook_deliveries d \
                 WHERE d.status = 'PENDING' AND d.endpoint_id > p.endpoint_id \
                 ORDER BY d.endpoint_id LIMIT 1) \
         FROM pending p WHERE p.endpoint_id IS NOT NULL), \
     held AS ( \
         SELECT endpoint_id, count(*) AS n FROM webhook_deliveries \
         WHERE lease IS NOT NULL AND leased_until > now() GROUP BY endpoint_id), \
     chosen AS ( \
         SELECT due.id FROM pending p \
         CROSS JOIN LATERAL ( \
             SELECT d.id, d.next_attempt_at, \
                 row_number() OVER (ORDER BY d.next_attempt_at, d.id) AS nth \
             FROM webhook_deliveries d \
             WHERE d.endpoint_id = p.endpoint_id AND d.status = 'PENDING' \
               AND d.next_attempt_at <= now() \
               AND (d.leased_until IS NULL OR d.leased_until <= now()) \
             ORDER BY d.next_attempt_at, d.id LIMIT $4) due \
         LEFT JOIN held h ON h.endpoint_id = p.endpoint_id \
         WHERE due.nth <= $4 - coalesce(h.n, 0) \
         ORDER BY due.next_attempt_at, due.id LIMIT $3), \
     claimed AS ( \
         UPDATE webhook_deliveries SET lease = $1, \
             leased_until = now() + $2 * interval '1 microsecond' \
         WHERE id IN (SELECT l.id FROM webhook_deliveries l \
             WHERE l.id = ANY(ARRAY(SELECT id FROM chosen)) AND l.status = 'PENDING' \
               AND l.next_attempt_at <= now() \
               AND (l.leased_until IS NULL OR l.leased_until <= now()) \
             FOR NO KEY UPDATE SKIP LOCKED) \
         RETURNING ",
    delivery_columns!(),
    ") SELECT c.*, e.url, e.secret, e.deleted_at IS NOT NULL AS endpoint_deleted, ev.body \
     FROM claimed c JOIN webhook_endpoints e ON e.id = c.endpoint_id \
     JOIN events ev ON ev.id = c.event_id \
     ORDER BY c.next_attempt_at, c.id"
);

// Writes each delivery ($2..) still held under lease $1, ending the hold.
const FINISH: &str = "\
UPDATE webhook_deliveries d SET status = u.status, attempts = u.attempts,
    failures = u.failures, last_attempt_at = u.last_attempt_at,
    last_status_code = u.last_status_code, last_error = u.last_error,
    next_attempt_at = u.next_attempt_at, resume_at = u.resume_at, manual = u.manual,
    lease = NULL, leased_until = NULL
FROM unnest($2::uuid[], $3::text[], $4::int[], $5::int[], $6::timestamptz[], $7::int[],
    $8::text[], $9::timestamptz[], $10::timestamptz[], $11::bool[])
    AS u(id, status, attempts, failures, last_attempt_at, last_status_code, last_error,
        next_attempt_at, resume_at, manual)
WHERE d.id = u.id AND d.lease = $1";

// Deletes up to $2 events created before $1, oldest first (their deliveries by the cascade).
// Not `FOR UPDATE SKIP LOCKED`, which needs the UPDATE privilege the server's role has not on
// events: a purge racing another waits for its rows and counts only those it deleted.
const PURGE: &str = "\
DELETE FROM events WHERE id IN (
    SELECT id FROM events WHERE created_at < $1 ORDER BY created_at LIMIT $2)";

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A claimed row as the dispatcher gets it.
fn due(row: &PgRow) -> Result<DueDelivery> {
    let delivery = rows::delivery(row)?;
    let deleted: bool = row.try_get("endpoint_deleted").map_err(from_sqlx)?;
    let target = if deleted {
        None
    } else {
        let url: String = row.try_get("url").map_err(from_sqlx)?;
        let secret: String = row.try_get("secret").map_err(from_sqlx)?;
        Some(Target {
            url: WebhookUrl::parse(&url).map_err(|_| corrupt("endpoint url"))?,
            secret: Secret::parse(&secret).map_err(|_| corrupt("endpoint secret"))?,
            body: row.try_get("body").map_err(from_sqlx)?,
        })
    };
    Ok(DueDelivery { delivery, target })
}

#[async_trait]
impl OutboxStore for PgStore {
    async fn claim_deliveries(
        &self,
        lease: LeaseId,
        duration: Duration,
        limit_to: usize,
        per_endpoint: usize,
    ) -> Result<Vec<DueDelivery>> {
        if limit_to == 0 || per_endpoint == 0 {
            return Ok(Vec::new());
        }
        self.call(async {
            let found = batch_query(CLAIM)
                .bind(lease.as_uuid())
                .bind(micros(duration))
                .bind(limit(limit_to))
                .bind(limit(per_endpoint))
                .fetch_all(self.pool())
                .await
                .map_err(from_sqlx)?;
            // A row that cannot be read stays held until its lease runs out; the others go.
            Ok(found
                .iter()
                .filter_map(|row| {
                    due(row)
                        .inspect_err(|error| {
                            tracing::warn!(?error, "a claimed delivery cannot be read");
                        })
                        .ok()
                })
                .collect())
        })
        .await
    }

    async fn finish_deliveries(
        &self,
        lease: LeaseId,
        deliveries: &[WebhookDelivery],
    ) -> Result<usize> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        let d = DeliveryColumns::of(deliveries)?;
        self.call(async {
            let done = batch_query(FINISH)
                .bind(lease.as_uuid())
                .bind(d.ids)
                .bind(d.statuses)
                .bind(d.attempts)
                .bind(d.failures)
                .bind(d.last_attempt_at)
                .bind(d.last_status_code)
                .bind(d.last_error)
                .bind(d.next_attempt_at)
                .bind(d.resume_at)
                .bind(d.manual)
                .execute(self.pool())
                .await
                .map_err(from_sqlx)?;
            Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
        })
        .await
    }

    async fn purge_events(&self, before: Timestamp, limit_to: usize) -> Result<usize> {
        if limit_to == 0 {
            return Ok(0);
        }
        self.call(async {
            let done = sqlx::query(PURGE)
                .bind(before.as_datetime())
                .bind(limit(limit_to))
                .execute(self.pool())
                .await
                .map_err(from_sqlx)?;
            Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
        })
        .await
    }
}
