//! `MerchantStore` on [`PgStore`]: onboarding writes the merchant, its primary account, its
//! first API key and the idempotency completion in one transaction.

use async_trait::async_trait;
use atomic_core::id::MerchantId;
use atomic_core::idempotency::Completion;
use atomic_core::merchant::{Merchant, Onboarding};
use atomic_core::ports::MerchantStore;
use atomic_core::{Fresh, Result};

use crate::accounts::insert_account;
use crate::api_keys::insert_key;
use crate::error::from_sqlx;
use crate::idempotency::complete_in;
use crate::rows;
use crate::store::PgStore;

#[async_trait]
impl MerchantStore for PgStore {
    async fn onboard(
        &self,
        onboarding: &Fresh<Onboarding>,
        completion: Option<Completion>,
    ) -> Result<()> {
        let Onboarding {
            merchant,
            account,
            key,
        } = &**onboarding;
        self.call(async {
            let mut tx = self.begin().await?;
            if let Some(completion) = &completion {
                complete_in(&mut tx, completion).await?;
            }
            sqlx::query(
                "INSERT INTO merchants (id, name, primary_account, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(merchant.id.as_uuid())
            .bind(merchant.name.as_str())
            .bind(merchant.primary_account.as_uuid())
            .bind(merchant.created_at.as_datetime())
            .execute(&mut *tx)
            .await
            .map_err(from_sqlx)?;
            insert_account(&mut tx, account).await?;
            insert_key(&mut tx, key).await?;
            tx.commit().await.map_err(from_sqlx)
        })
        .await
    }

    async fn merchant(&self, id: MerchantId) -> Result<Option<Merchant>> {
        self.call(async {
            let row = sqlx::query(
                "SELECT id, name, primary_account, created_at FROM merchants WHERE id = $1",
            )
            .bind(id.as_uuid())
            .fetch_optional(self.pool())
            .await
            .map_err(from_sqlx)?;
            row.as_ref().map(rows::merchant).transpose()
        })
        .await
    }
}
