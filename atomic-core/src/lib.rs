//! Atomic's core: the payment gateway's domain, with no I/O of its own.
//!
//! - Domain values that cannot hold invalid states: [`Amount`], [`Currency`], [`Payment`]
//!   (whose state machine refuses every undocumented transition), [`Transfer`] (balanced by
//!   construction), [`Account`], API keys and idempotency keys.
//! - [`ports`]: the narrow async traits the core needs (account, payment and settlement stores,
//!   handed over as one [`ports::Backend`]; job queue, rate limiter, idempotency store, key and
//!   merchant stores, card processor), used as `Arc<dyn Port>`.
//! - [`service`]: what applications call: payments (with manual capture and cancel), refunds,
//!   accounts, merchants, keys, the settlement [`Worker`] and the recovery [`Sweeper`]. Every
//!   create, capture, cancel and refund takes an optional idempotency key.
//! - [`memory`]: in-memory adapters for every port, and (feature `testkit`) the conformance
//!   suite every adapter runs.
//!
//! ```
//! use atomic_core::{Amount, CardSource, Currency, PaymentRequest, Ports, Principal, Services};
//! use atomic_core::service::{CoreConfig, WorkerConfig};
//! use atomic_core::account::AccountName;
//! use atomic_core::idempotency::IdempotencyKey;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let services = Services::start(Ports::in_memory(), CoreConfig::default()).await?;
//! let account = services.accounts.prepare(
//!     Principal::Platform, AccountName::parse("Coffee shop").unwrap(), Currency::USD);
//! services.accounts.submit(&account, None).await?;
//!
//! let pay = || PaymentRequest {
//!     merchant_account: Some(account.id),
//!     amount: Amount::for_payment(4_50).unwrap(),
//!     currency: Currency::USD,
//!     source: CardSource::parse("tok_visa").unwrap(),
//!     description: None,
//!     capture_method: Default::default(),
//!     metadata: Default::default(),
//! };
//! // Paying twice under one idempotency key creates one payment.
//! let key = IdempotencyKey::parse("order-1042").unwrap();
//! let payment = services.payments.create(Principal::Platform, pay(), Some(key.clone())).await?;
//! let again = services.payments.create(Principal::Platform, pay(), Some(key)).await?;
//! assert_eq!(again.id, payment.id);
//!
//! services.worker(WorkerConfig::default()).run_once().await?;
//! let settled = services.payments.get(Principal::Platform, payment.id).await?;
//! assert_eq!(settled.status().as_str(), "SUCCESS");
//! assert_eq!(services.accounts.get(Principal::Platform, account.id).await?.balance.minor_units(), 450);
//! # Ok::<(), atomic_core::Error>(())
//! # }).unwrap();
//! ```

pub mod account;
pub mod api_key;
pub mod card;
pub mod error;
pub mod event;
pub mod failpoint;
pub mod fresh;
pub mod hex;
pub mod id;
pub mod idempotency;
pub mod ledger;
pub mod memory;
pub mod merchant;
pub mod metadata;
pub mod money;
pub mod page;
pub mod payment;
pub mod ports;
pub mod principal;
pub mod rate_limit;
pub mod refund;
pub mod service;
pub mod telemetry;
pub mod text;
pub mod time;
pub mod webhook;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use account::{Account, AccountKind};
pub use error::{Error, Invalid, Result};
pub use fresh::Fresh;
pub use id::{AccountId, ApiKeyId, EntryId, MerchantId, PaymentId, RefundId, TransactionId};
pub use ledger::{Direction, Entry, Transfer};
pub use metadata::{Metadata, MetadataFilter};
pub use money::{Amount, Balance, Currencies, Currency, MAX_PAYMENT_AMOUNT};
pub use payment::{
    CancellationReason, CaptureMethod, CardSource, FailureReason, Payment, PaymentStatus,
};
pub use ports::Ports;
pub use principal::{Owner, Principal};
pub use refund::{Refund, RefundRequest, RefundStatus};
pub use service::{PaymentRequest, Services, Sweeper, Worker};
pub use time::{Clock, Timestamp};
