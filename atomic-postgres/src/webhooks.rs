//! [`WebhookStore`] on [`PgStore`]: endpoints (deleted softly: `deleted_at`, after which every
//! method here treats them as gone) and their deliveries, each reached only through an
//! endpoint the viewer may see.
//!
//! The limit of endpoints per owner holds however many creations race: a creation takes a
//! transaction-scoped advisory lock on its owner, then counts and inserts in one statement
//! whose snapshot is taken after the lock, so it sees every creation committed before it.

use async_trait::async_trait;
use atomic_core::id::{DeliveryId, WebhookEndpointId};
use atomic_core::idempotency::Completion;
use atomic_core::page::{CreatedRange, Page, PageRequest};
use atomic_core::ports::{DeliveryFilter, WebhookStore};
use atomic_core::principal::Principal;
use atomic_core::time::Timestamp;
use atomic_core::webhook::{
    ENDPOINT_DELETED, MAX_ENDPOINTS_PER_OWNER, WebhookDelivery, WebhookEndpoint,
};
use atomic_core::{Error, Fresh, Result};

use crate::accounts::limit_plus_one;
use crate::error::from_sqlx;
use crate::idempotency::complete_in;
use crate::rows::{self, delivery_columns, endpoint_columns, owner_uuid, viewer_merchant};
use crate::store::PgStore;

// Serialises the creations of one owner ($1, NULL: the platform) until the transaction ends.
const LOCK_OWNER: &str = "SELECT pg_advisory_xact_lock(\
     hashtextextended('webhook_endpoints:' || coalesce($1::text, 'platform'), 0))";

// Inserts the endpoint unless its owner ($2) already has $8 live ones.
const INSERT_ENDPOINT: &str = "\
INSERT INTO webhook_endpoints (id, owner_merchant, url, events, description, secret, created_at)
SELECT $1, $2, $3, $4, $5, $6, $7
WHERE (SELECT count(*) FROM webhook_endpoints WHERE deleted_at IS NULL
       AND CASE WHEN $2::uuid IS NULL THEN owner_merchant IS NULL ELSE owner_merchant = $2 END)
    < $8";

const SELECT_ENDPOINT: &str = concat!(
    "SELECT ",
    endpoint_columns!(),
    " FROM webhook_endpoints WHERE id = $1 AND deleted_at IS NULL \
     AND ($2::uuid IS NULL OR owner_merchant = $2)"
);

// A page of endpoints, newest first: $1 viewer's merchant (NULL: all), $2 cursor, $3 limit,
// [$4, $5) created range.
const LIST_ENDPOINTS: &str = concat!(
    "SELECT ",
    endpoint_columns!(),
    " FROM webhook_endpoints WHERE deleted_at IS NULL \
     AND ($1::uuid IS NULL OR owner_merchant = $1) \
     AND ($2::uuid IS NULL OR id < $2) \
     AND ($4::timestamptz IS NULL OR created_at >= $4) \
     AND ($5::timestamptz IS NULL OR created_at < $5) ORDER BY id DESC LIMIT $3"
);

const DELETE_ENDPOINT: &str = concat!(
    "UPDATE webhook_endpoints SET deleted_at = $3 \
     WHERE id = $1 AND deleted_at IS NULL AND ($2::uuid IS NULL OR owner_merchant = $2) \
     RETURNING ",
    endpoint_columns!()
);

// What `WebhookDelivery::endpoint_deleted` does to each PENDING delivery of endpoint $1 (the
// others are as they were), ending any hold on it.
const FAIL_PENDING: &str = "\
UPDATE webhook_deliveries SET status = 'FAILED', last_error = $2, next_attempt_at = NULL,
    resume_at = NULL, manual = false, lease = NULL, leased_until = NULL
WHERE endpoint_id = $1 AND status = 'PENDING'";

// Delivery $1 of endpoint $2, if the endpoint is live and the viewer's ($3), locked; the
// endpoint is share-locked too, so a deletion running at the same time is waited for and
// seen.
const SELECT_DELIVERY_FOR_RETRY: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    " FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2 AND endpoint_id IN (\
         SELECT id FROM webhook_endpoints WHERE id = $2 AND deleted_at IS NULL \
         AND ($3::uuid IS NULL OR owner_merchant = $3) FOR SHARE) \
     FOR NO KEY UPDATE"
);

// A manual retry's state ($2..$5) for delivery $1, ending any hold on it.
const WRITE_RETRY: &str = "\
UPDATE webhook_deliveries SET status = $2, next_attempt_at = $3, resume_at = $4, manual = $5,
    lease = NULL, leased_until = NULL
WHERE id = $1";

// A page of endpoint $1's deliveries, newest first: $2 cursor, $3 limit, $4 status, [$5, $6)
// created range.
const LIST_DELIVERIES: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    " FROM webhook_deliveries WHERE endpoint_id = $1 \
     AND ($2::uuid IS NULL OR id < $2) \
     AND ($4::text IS NULL OR status = $4) \
     AND ($5::timestamptz IS NULL OR created_at >= $5) \
     AND ($6::timestamptz IS NULL OR created_at < $6) ORDER BY id DESC LIMIT $3"
);

fn limit_of_endpoints() -> i64 {
    i64::try_from(MAX_ENDPOINTS_PER_OWNER).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Whether endpoint `id` is live and `viewer` may see it.
    async fn endpoint_visible(&self, id: WebhookEndpointId, viewer: Principal) -> Result<bool> {
        let found = sqlx::query(
            "SELECT 1 FROM webhook_endpoints WHERE id = $1 AND deleted_at IS NULL \
             AND ($2::uuid IS NULL OR owner_merchant = $2)",
        )
        .bind(id.as_uuid())
        .bind(viewer_merchant(viewer))
        .fetch_optional(self.pool())
        .await
        .map_err(from_sqlx)?;
        Ok(found.is_some())
    }
}

#[async_trait]
impl WebhookStore for PgStore {
    async fn create_endpoint(
        &self,
        endpoint: &Fresh<WebhookEndpoint>,
        completion: Option<Completion>,
    ) -> Result<()> {
        self.call(async {
            let owner = owner_uuid(endpoint.owner);
            let mut tx = self.begin().await?;
            sqlx::query(LOCK_OWNER)
                .bind(owner)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            let inserted = sqlx::query(INSERT_ENDPOINT)
                .bind(endpoint.id.as_uuid())
                .bind(owner)
                .bind(endpoint.url.as_str())
                .bind(endpoint.subscription.names())
                .bind(endpoint.description.as_ref().map(|d| d.as_str()))
                .bind(endpoint.secret.reveal())
                .bind(endpoint.created_at.as_datetime())
                .bind(limit_of_endpoints())
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            if inserted.rows_affected() == 0 {
                return Err(Error::LimitReached);
            }
            if let Some(completion) = &completion {
                complete_in(&mut tx, completion).await?;
            }
            tx.commit().await.map_err(from_sqlx)
        })
        .await
    }

    async fn endpoint(
        &self,
        id: WebhookEndpointId,
        viewer: Principal,
    ) -> Result<Option<WebhookEndpoint>> {
        self.call(async {
            let row = sqlx::query(SELECT_ENDPOINT)
                .bind(id.as_uuid())
                .bind(viewer_merchant(viewer))
                .fetch_optional(self.pool())
                .await
                .map_err(from_sqlx)?;
            row.as_ref().map(rows::endpoint).transpose()
        })
        .await
    }

    async fn endpoints(
        &self,
        viewer: Principal,
        created: CreatedRange,
        page: PageRequest<WebhookEndpointId>,
    ) -> Result<Page<WebhookEndpoint>> {
        self.call(async {
            let merchant = viewer_merchant(viewer);
            let cursor = page.starting_after.map(|c| c.as_uuid());
            self.check_cursor(
                "SELECT 1 FROM webhook_endpoints WHERE id = $1 AND deleted_at IS NULL \
                 AND ($2::uuid IS NULL OR owner_merchant = $2)",
                cursor,
                merchant,
            )
            .await?;
            let found = sqlx::query(LIST_ENDPOINTS)
                .persistent(false)
                .bind(merchant)
                .bind(cursor)
                .bind(limit_plus_one(page.limit.get()))
                .bind(created.gte.map(|t| t.as_datetime()))
                .bind(created.lt.map(|t| t.as_datetime()))
                .fetch_all(self.pool())
                .await
                .map_err(from_sqlx)?;
            let items = found
                .iter()
                .map(rows::endpoint)
                .collect::<Result<Vec<_>>>()?;
            Ok(Page::from_overfetch(items, page.limit))
        })
        .await
    }

    async fn delete_endpoint(
        &self,
        id: WebhookEndpointId,
        viewer: Principal,
        at: Timestamp,
    ) -> Result<Option<WebhookEndpoint>> {
        self.call(async {
            let mut tx = self.begin().await?;
            let row = sqlx::query(DELETE_ENDPOINT)
                .bind(id.as_uuid())
                .bind(viewer_merchant(viewer))
                .bind(at.as_datetime())
                .fetch_optional(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let endpoint = rows::endpoint(&row)?;
            sqlx::query(FAIL_PENDING)
                .bind(id.as_uuid())
                .bind(ENDPOINT_DELETED)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            tx.commit().await.map_err(from_sqlx)?;
            Ok(Some(endpoint))
        })
        .await
    }

    async fn deliveries(
        &self,
        endpoint: WebhookEndpointId,
        viewer: Principal,
        filter: &DeliveryFilter,
        page: PageRequest<DeliveryId>,
    ) -> Result<Option<Page<WebhookDelivery>>> {
        self.call(async {
            if !self.endpoint_visible(endpoint, viewer).await? {
                return Ok(None);
            }
            let cursor = page.starting_after.map(|c| c.as_uuid());
            // The cursor must be one of this endpoint's deliveries ($2: the endpoint).
            self.check_cursor(
                "SELECT 1 FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2",
                cursor,
                Some(endpoint.as_uuid()),
            )
            .await?;
            let found = sqlx::query(LIST_DELIVERIES)
                .persistent(false)
                .bind(endpoint.as_uuid())
                .bind(cursor)
                .bind(limit_plus_one(page.limit.get()))
                .bind(filter.status.map(|s| s.as_str()))
                .bind(filter.created.gte.map(|t| t.as_datetime()))
                .bind(filter.created.lt.map(|t| t.as_datetime()))
                .fetch_all(self.pool())
                .await
                .map_err(from_sqlx)?;
            let items = found
                .iter()
                .map(rows::delivery)
                .collect::<Result<Vec<_>>>()?;
            Ok(Some(Page::from_overfetch(items, page.limit)))
        })
        .await
    }

    async fn retry_delivery(
        &self,
        endpoint: WebhookEndpointId,
        delivery: DeliveryId,
        viewer: Principal,
        at: Timestamp,
    ) -> Result<Option<WebhookDelivery>> {
        self.call(async {
            let mut tx = self.begin().await?;
            let row = sqlx::query(SELECT_DELIVERY_FOR_RETRY)
                .bind(delivery.as_uuid())
                .bind(endpoint.as_uuid())
                .bind(viewer_merchant(viewer))
                .fetch_optional(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let mut delivery = rows::delivery(&row)?;
            delivery.retry_now(at);
            sqlx::query(WRITE_RETRY)
                .bind(delivery.id.as_uuid())
                .bind(delivery.status.as_str())
                .bind(delivery.next_attempt_at.map(|t| t.as_datetime()))
                .bind(delivery.resume_at.map(|t| t.as_datetime()))
                .bind(delivery.manual)
                .execute(&mut *tx)
                .await
                .map_err(from_sqlx)?;
            tx.commit().await.map_err(from_sqlx)?;
            Ok(Some(delivery))
        })
        .await
    }
}
