//! [`MerchantStore`]: merchants and their onboarding.

use async_trait::async_trait;

use crate::error::Result;
use crate::fresh::Fresh;
use crate::id::MerchantId;
use crate::idempotency::Completion;
use crate::merchant::{Merchant, Onboarding};

/// Where merchants live.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait MerchantStore: Send + Sync + 'static {
    /// Stores the merchant, its primary account and its first key in ONE transaction, and
    /// completes `completion` in it.
    async fn onboard(
        &self,
        onboarding: &Fresh<Onboarding>,
        completion: Option<Completion>,
    ) -> Result<()>;

    /// The merchant.
    async fn merchant(&self, id: MerchantId) -> Result<Option<Merchant>>;
}
