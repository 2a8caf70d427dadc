//! `ApiKeyStore` on [`PgStore`]: key records found by their SHA-256 hash (unique in the
//! schema), listed and revoked only within the viewer's merchant, filtered in SQL.

use async_trait::async_trait;
use atomic_core::Result;
use atomic_core::api_key::{ApiKey, KeyHash};
use atomic_core::id::ApiKeyId;
use atomic_core::idempotency::Completion;
use atomic_core::page::{CreatedRange, Page, PageRequest};
use atomic_core::ports::ApiKeyStore;
use atomic_core::principal::Principal;
use atomic_core::time::Timestamp;
use sqlx::PgConnection;

use crate::error::from_sqlx;
use crate::idempotency::complete_in;
use crate::rows::{self, api_key_columns, viewer_merchant};
use crate::store::PgStore;

const BY_HASH: &str = concat!(
    "SELECT ",
    api_key_columns!(),
    " FROM api_keys WHERE hash = $1"
);

const LIST: &str = concat!(
    "SELECT ",
    api_key_columns!(),
    " FROM api_keys WHERE ($1::uuid IS NULL OR merchant_id = $1) \
     AND ($2::uuid IS NULL OR id < $2) \
     AND ($4::timestamptz IS NULL OR created_at >= $4) \
     AND ($5::timestamptz IS NULL OR created_at < $5) ORDER BY id DESC LIMIT $3"
);

const REVOKE: &str = concat!(
    "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $3) \
     WHERE id = $1 AND ($2::uuid IS NULL OR merchant_id = $2) RETURNING ",
    api_key_columns!()
);

/// Stores a new key record in the caller's transaction.
pub(crate) async fn insert_key(conn: &mut PgConnection, key: &ApiKey) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, merchant_id, prefix, hash, created_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(key.id.as_uuid())
    .bind(key.merchant_id.as_uuid())
    .bind(&key.prefix)
    .bind(key.hash.as_bytes().as_slice())
    .bind(key.created_at.as_datetime())
    .bind(key.revoked_at.map(|t| t.as_datetime()))
    .execute(conn)
    .await
    .map_err(from_sqlx)?;
    Ok(())
}

#[async_trait]
impl ApiKeyStore for PgStore {
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<ApiKey>> {
        self.call(async {
            let row = sqlx::query(BY_HASH)
                .bind(hash.as_bytes().as_slice())
                .fetch_optional(self.pool())
                .await
                .map_err(from_sqlx)?;
            row.as_ref().map(rows::api_key).transpose()
        })
        .await
    }

    async fn create_key(&self, key: &ApiKey, completion: Option<Completion>) -> Result<()> {
        self.call(async {
            let mut tx = self.begin().await?;
            if let Some(completion) = &completion {
                complete_in(&mut tx, completion).await?;
            }
            insert_key(&mut tx, key).await?;
            tx.commit().await.map_err(from_sqlx)
        })
        .await
    }

    async fn keys(
        &self,
        viewer: Principal,
        created: CreatedRange,
        page: PageRequest<ApiKeyId>,
    ) -> Result<Page<ApiKey>> {
        self.call(async {
            let merchant = viewer_merchant(viewer);
            self.check_cursor(
                "SELECT 1 FROM api_keys WHERE id = $1 AND ($2::uuid IS NULL OR merchant_id = $2)",
                page.starting_after.map(|c| c.as_uuid()),
                merchant,
            )
            .await?;
            let found = sqlx::query(LIST)
                .bind(merchant)
                .bind(page.starting_after.map(|c| c.as_uuid()))
                .bind(i64::try_from(page.limit.get().saturating_add(1)).unwrap_or(i64::MAX))
                .bind(created.gte.map(|t| t.as_datetime()))
                .bind(created.lt.map(|t| t.as_datetime()))
                .fetch_all(self.pool())
                .await
                .map_err(from_sqlx)?;
            let items = found
                .iter()
                .map(rows::api_key)
                .collect::<Result<Vec<_>>>()?;
            Ok(Page::from_overfetch(items, page.limit))
        })
        .await
    }

    async fn revoke_key(
        &self,
        id: ApiKeyId,
        viewer: Principal,
        at: Timestamp,
    ) -> Result<Option<ApiKey>> {
        self.call(async {
            let row = sqlx::query(REVOKE)
                .bind(id.as_uuid())
                .bind(viewer_merchant(viewer))
                .bind(at.as_datetime())
                .fetch_optional(self.pool())
                .await
                .map_err(from_sqlx)?;
            row.as_ref().map(rows::api_key).transpose()
        })
        .await
    }
}
