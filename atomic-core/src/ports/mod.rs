//! The ports: the narrow async traits the core needs from the outside world, each shaped by the
//! service that calls it. Adapters (in-memory here, PostgreSQL and Redis in their crates)
//! implement them; [`Ports`] is one set of them, used as `Arc<dyn Port>`.
//!
//! The store ports ([`AccountStore`], [`PaymentStore`], [`SettlementStore`],
//! [`MerchantStore`], [`ApiKeyStore`], [`IdempotencyStore`], [`EventStore`], [`WebhookStore`],
//! [`OutboxStore`]) are handed over together as one
//! [`Backend`], built from one value that implements them all: every creating write completes
//! its idempotency claim in the same transaction, so the claim records must live beside the
//! data, and the type says they do.

mod accounts;
mod api_keys;
mod audit;
mod card;
mod events;
mod idempotency;
mod merchants;
mod outbound;
mod outbox;
mod payments;
mod queue;
mod rate_limit;
mod settlement;
mod webhooks;

use std::sync::Arc;

pub use accounts::AccountStore;
pub use api_keys::ApiKeyStore;
pub use audit::{AuditReport, LedgerAudit};
pub use card::{CardProcessor, TestModeCards};
pub use events::EventStore;
pub use idempotency::IdempotencyStore;
pub use merchants::MerchantStore;
pub use outbound::{HostResolver, ResolveError, SendOutcome, WebhookRequest, WebhookSender};
pub use outbox::{DueDelivery, OutboxStore, Target};
pub use payments::{PaymentFilter, PaymentStore, RefundFilter};
pub use queue::{Delivery, Job, JobQueue};
pub use rate_limit::RateLimiter;
pub use settlement::{
    BeginOutcome, LeaseId, OpenPayments, RefundBegin, RefundResult, SettleOutcome, Settlement,
    SettlementResult, SettlementStore,
};
pub use webhooks::{DeliveryFilter, WebhookStore};

#[cfg(any(test, feature = "mocks"))]
pub use accounts::MockAccountStore;
#[cfg(any(test, feature = "mocks"))]
pub use api_keys::MockApiKeyStore;
#[cfg(any(test, feature = "mocks"))]
pub use card::MockCardProcessor;
#[cfg(any(test, feature = "mocks"))]
pub use events::MockEventStore;
#[cfg(any(test, feature = "mocks"))]
pub use idempotency::MockIdempotencyStore;
#[cfg(any(test, feature = "mocks"))]
pub use merchants::MockMerchantStore;
#[cfg(any(test, feature = "mocks"))]
pub use outbound::{MockHostResolver, MockWebhookSender};
#[cfg(any(test, feature = "mocks"))]
pub use outbox::MockOutboxStore;
#[cfg(any(test, feature = "mocks"))]
pub use payments::MockPaymentStore;
#[cfg(any(test, feature = "mocks"))]
pub use queue::MockJobQueue;
#[cfg(any(test, feature = "mocks"))]
pub use rate_limit::MockRateLimiter;
#[cfg(any(test, feature = "mocks"))]
pub use settlement::MockSettlementStore;
#[cfg(any(test, feature = "mocks"))]
pub use webhooks::MockWebhookStore;

use crate::time::Clock;

/// The store ports of one backend. Built from one value that implements every store port
/// ([`Backend::new`]), so the records a transaction must join (an idempotency completion and
/// the payment it answers for) are always in the same store.
#[derive(Clone)]
pub struct Backend {
    accounts: Arc<dyn AccountStore>,
    payments: Arc<dyn PaymentStore>,
    settlement: Arc<dyn SettlementStore>,
    merchants: Arc<dyn MerchantStore>,
    api_keys: Arc<dyn ApiKeyStore>,
    idempotency: Arc<dyn IdempotencyStore>,
    events: Arc<dyn EventStore>,
    webhooks: Arc<dyn WebhookStore>,
    outbox: Arc<dyn OutboxStore>,
}

impl Backend {
    /// Every store port, served by `store`.
    pub fn new<S>(store: Arc<S>) -> Self
    where
        S: AccountStore
            + PaymentStore
            + SettlementStore
            + MerchantStore
            + ApiKeyStore
            + IdempotencyStore
            + EventStore
            + WebhookStore
            + OutboxStore,
    {
        Self {
            accounts: store.clone(),
            payments: store.clone(),
            settlement: store.clone(),
            merchants: store.clone(),
            api_keys: store.clone(),
            idempotency: store.clone(),
            events: store.clone(),
            webhooks: store.clone(),
            outbox: store,
        }
    }

    /// Accounts and entries.
    pub fn accounts(&self) -> &Arc<dyn AccountStore> {
        &self.accounts
    }

    /// Payments and refunds, as requests see them.
    pub fn payments(&self) -> &Arc<dyn PaymentStore> {
        &self.payments
    }

    /// Settlement, as workers and the sweep see it.
    pub fn settlement(&self) -> &Arc<dyn SettlementStore> {
        &self.settlement
    }

    /// Merchants.
    pub fn merchants(&self) -> &Arc<dyn MerchantStore> {
        &self.merchants
    }

    /// API keys.
    pub fn api_keys(&self) -> &Arc<dyn ApiKeyStore> {
        &self.api_keys
    }

    /// Idempotency claims and stored responses.
    pub fn idempotency(&self) -> &Arc<dyn IdempotencyStore> {
        &self.idempotency
    }

    /// Events, as requests read them.
    pub fn events(&self) -> &Arc<dyn EventStore> {
        &self.events
    }

    /// Webhook endpoints and deliveries, as requests see them.
    pub fn webhooks(&self) -> &Arc<dyn WebhookStore> {
        &self.webhooks
    }

    /// Due deliveries and retention, as the dispatcher and the sweep see them.
    pub fn outbox(&self) -> &Arc<dyn OutboxStore> {
        &self.outbox
    }
}

/// Replacing one port of a backend with a mock, for tests that inject failures.
#[cfg(any(test, feature = "mocks"))]
impl Backend {
    /// This backend with `accounts` in place of its account store.
    pub fn with_accounts(mut self, accounts: Arc<dyn AccountStore>) -> Self {
        self.accounts = accounts;
        self
    }

    /// This backend with `payments` in place of its payment store.
    pub fn with_payments(mut self, payments: Arc<dyn PaymentStore>) -> Self {
        self.payments = payments;
        self
    }

    /// This backend with `settlement` in place of its settlement store.
    pub fn with_settlement(mut self, settlement: Arc<dyn SettlementStore>) -> Self {
        self.settlement = settlement;
        self
    }

    /// This backend with `merchants` in place of its merchant store.
    pub fn with_merchants(mut self, merchants: Arc<dyn MerchantStore>) -> Self {
        self.merchants = merchants;
        self
    }

    /// This backend with `api_keys` in place of its key store.
    pub fn with_api_keys(mut self, api_keys: Arc<dyn ApiKeyStore>) -> Self {
        self.api_keys = api_keys;
        self
    }

    /// This backend with `outbox` in place of its outbox store.
    pub fn with_outbox(mut self, outbox: Arc<dyn OutboxStore>) -> Self {
        self.outbox = outbox;
        self
    }

    /// This backend with `idempotency` in place of its idempotency store.
    pub fn with_idempotency(mut self, idempotency: Arc<dyn IdempotencyStore>) -> Self {
        self.idempotency = idempotency;
        self
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").finish_non_exhaustive()
    }
}

/// One complete set of adapters: what the services and the HTTP layer run on.
#[derive(Clone)]
pub struct Ports {
    /// The store ports, one backend behind them all.
    pub store: Backend,
    /// Settlement jobs (wake-up hints; the store is the source of truth).
    pub queue: Arc<dyn JobQueue>,
    /// Rate-limit counters.
    pub limiter: Arc<dyn RateLimiter>,
    /// The card processor.
    pub cards: Arc<dyn CardProcessor>,
    /// Resolves webhook endpoint hosts.
    pub resolver: Arc<dyn HostResolver>,
    /// Sends webhook deliveries.
    pub sender: Arc<dyn WebhookSender>,
    /// The clock services stamp records with.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports").finish_non_exhaustive()
    }
}
