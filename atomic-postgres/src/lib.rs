//! PostgreSQL adapters for Atomic's store ports: the store of record for merchants, accounts,
//! payments, the double-entry ledger, API keys and idempotency records.
//!
//! One [`PgStore`] implements [`AccountStore`](atomic_core::ports::AccountStore),
//! [`PaymentStore`](atomic_core::ports::PaymentStore),
//! [`SettlementStore`](atomic_core::ports::SettlementStore),
//! [`MerchantStore`](atomic_core::ports::MerchantStore),
//! [`ApiKeyStore`](atomic_core::ports::ApiKeyStore),
//! [`IdempotencyStore`](atomic_core::ports::IdempotencyStore),
//! [`EventStore`](atomic_core::ports::EventStore),
//! [`WebhookStore`](atomic_core::ports::WebhookStore),
//! [`OutboxStore`](atomic_core::ports::OutboxStore) and
//! [`LedgerAudit`](atomic_core::ports::LedgerAudit) on one connection pool, so a creating write
//! and its idempotency completion share one database transaction, and so do a state change and
//! the event (with its webhook deliveries) it writes. The schema in
//! `migrations/` ([`MIGRATOR`]) guards the books a second time with constraints and triggers:
//! positive amounts, one charge posting per payment and one posting per refund, balanced
//! postings of the captured or refunded amount, refunds within what was captured, no overdrawn
//! merchant account, legal status transitions only, metadata within its bounds, and an
//! append-only ledger.
//!
//! Time-based decisions (leases, idempotency windows, the sweep) use the database's clock, so
//! servers with skewed clocks agree. Every call is bounded: a pool acquire timeout, a
//! `statement_timeout`, and an overall timeout per call turn a stuck or unreachable database into
//! [`atomic_core::Error::Unavailable`] (HTTP 503), never a hang.
//!
//! ```no_run
//! # async fn run() -> Result<(), atomic_postgres::Error> {
//! use atomic_postgres::{PgConfig, PgStore};
//! let store = PgStore::connect(&PgConfig::new("postgres://postgres@127.0.0.1/atomic")).await?;
//! store.migrate().await?;
//! # Ok(()) }
//! ```

mod accept;
mod accounts;
mod api_keys;
mod audit;
mod config;
mod error;
mod events;
pub mod floor;
mod group;
mod idempotency;
mod ledger;
mod merchants;
mod outbox;
mod payments;
mod rows;
mod settlement;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
mod webhooks;

pub use config::PgConfig;
pub use error::Error;
pub use store::PgStore;

/// The schema's migrations, embedded from the workspace's `migrations/` directory.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
