//! The ports: the narrow async traits the core needs from the outside world, each shaped by the
//! service that calls it. Adapters (in-memory here, PostgreSQL and Redis in their crates)
//! implement them; [`Ports`] is one set of them, used as `Arc<dyn Port>`.
//!
//! The store ports ([`LedgerStore`], [`MerchantStore`], [`ApiKeyStore`],
//! [`IdempotencyStore`]) must share one backend: every creating write completes its
//! idempotency claim in the same transaction, so the claim records must live beside the data.

mod api_keys;
mod audit;
mod card;
mod idempotency;
mod ledger;
mod merchants;
mod queue;
mod rate_limit;

use std::sync::Arc;

pub use api_keys::ApiKeyStore;
pub use audit::{AuditReport, LedgerAudit};
pub use card::{CardProcessor, TestModeCards};
pub use idempotency::IdempotencyStore;
pub use ledger::{BeginOutcome, LeaseId, LedgerStore, SettleOutcome, Settlement, SettlementResult};
pub use merchants::MerchantStore;
pub use queue::{Delivery, JobQueue};
pub use rate_limit::RateLimiter;

#[cfg(any(test, feature = "mocks"))]
pub use api_keys::MockApiKeyStore;
#[cfg(any(test, feature = "mocks"))]
pub use card::MockCardProcessor;
#[cfg(any(test, feature = "mocks"))]
pub use idempotency::MockIdempotencyStore;
#[cfg(any(test, feature = "mocks"))]
pub use ledger::MockLedgerStore;
#[cfg(any(test, feature = "mocks"))]
pub use merchants::MockMerchantStore;
#[cfg(any(test, feature = "mocks"))]
pub use queue::MockJobQueue;
#[cfg(any(test, feature = "mocks"))]
pub use rate_limit::MockRateLimiter;

use crate::time::Clock;

/// One complete set of adapters: what the services and the HTTP layer run on.
#[derive(Clone)]
pub struct Ports {
    /// Accounts, payments, entries and settlement.
    pub ledger: Arc<dyn LedgerStore>,
    /// Merchants.
    pub merchants: Arc<dyn MerchantStore>,
    /// API keys.
    pub api_keys: Arc<dyn ApiKeyStore>,
    /// Idempotency claims and stored responses.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Payment jobs (wake-up hints; the ledger store is the source of truth).
    pub queue: Arc<dyn JobQueue>,
    /// Rate-limit counters.
    pub limiter: Arc<dyn RateLimiter>,
    /// The card processor.
    pub cards: Arc<dyn CardProcessor>,
    /// The clock services stamp records with.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports").finish_non_exhaustive()
    }
}
