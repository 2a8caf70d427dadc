//! The conformance kit: what every adapter of a port must do, written once and run by every
//! adapter crate (the in-memory adapters run it in this crate's tests). Each case is a plain
//! `pub async fn` over a kit of ports; the `*_conformance!` macros turn a whole suite into
//! `#[tokio::test]`s. Not a stable API: cases are added as behaviour is.
//!
//! Time is the adapter's business: a kit carries a [`TimeTravel`] that makes time pass for
//! the adapter (a manual clock here; aged rows or real waiting elsewhere).
//!
//! Store suites, each over a [`StoreKit`] (build one with [`StoreKit::new`]):
//! `ledger_store_conformance!` (accounts, payments, claims, settlement, the sweep),
//! `capture_conformance!` (authorize, capture, cancel, expiry), `refund_conformance!`,
//! `list_conformance!` (filters, cursors, the sweep over refunds and captures),
//! `merchant_store_conformance!`, `api_key_store_conformance!`,
//! `idempotency_store_conformance!`, `outbox_conformance!` (events, endpoints, deliveries); and `refund_drain_conformance!` for TEST-MATRIX row 35,
//! whose setup also gives a drain (a debit outside the ports; see
//! [`refunds::a_refund_the_balance_cannot_cover_fails_and_restores_the_refundable`]).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod api_keys;
pub mod capture;
pub mod flows;
pub mod idempotency;
pub mod ledger;
pub mod lists;
pub mod merchants;
pub mod outbox;
pub mod queue;
pub mod rate_limit;
pub mod refunds;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::account::Account;
use crate::api_key::ApiKey;
use crate::fresh::Fresh;
use crate::idempotency::{
    Claim, ClaimOutcome, Completion, Fingerprint, IdempotencyKey, IdempotencyPolicy, StoredResponse,
};
use crate::merchant::{Merchant, MerchantName, Onboarding};
use crate::metadata::Metadata;
use crate::money::{Amount, Currency};
use crate::payment::{CaptureMethod, CardSource, Description, NewPayment, Payment};
use crate::ports::{
    AccountStore, ApiKeyStore, Backend, EventStore, IdempotencyStore, JobQueue, LedgerAudit,
    MerchantStore, OutboxStore, PaymentStore, RateLimiter, SettlementStore, WebhookStore,
};
use crate::principal::Principal;
use crate::time::{ManualClock, Timestamp};

/// Makes time pass for an adapter.
#[async_trait]
pub trait TimeTravel: Send + Sync {
    /// After this returns, the adapter behaves as if `by` had passed.
    async fn advance(&self, by: Duration);
}

#[async_trait]
impl TimeTravel for ManualClock {
    async fn advance(&self, by: Duration) {
        ManualClock::advance(self, by);
    }
}

/// Real time: waits. For adapters whose clock is the server's own (Redis TTLs).
#[derive(Debug, Default)]
pub struct RealTime;

#[async_trait]
impl TimeTravel for RealTime {
    async fn advance(&self, by: Duration) {
        tokio::time::sleep(by).await;
    }
}

/// The store ports of one backend, and its time.
#[derive(Clone)]
pub struct StoreKit {
    /// Every store port, one value behind them all.
    pub store: Backend,
    /// The books audit, when the backend offers it.
    pub audit: Option<Arc<dyn LedgerAudit>>,
    pub time: Arc<dyn TimeTravel>,
}

impl StoreKit {
    /// The kit of `store`, which serves every store port and audits its own books.
    pub fn new<S>(store: Arc<S>, time: Arc<dyn TimeTravel>) -> Self
    where
        S: AccountStore
            + PaymentStore
            + SettlementStore
            + MerchantStore
            + ApiKeyStore
            + IdempotencyStore
            + EventStore
            + WebhookStore
            + OutboxStore
            + LedgerAudit,
    {
        Self {
            store: Backend::new(store.clone()),
            audit: Some(store),
            time,
        }
    }
}

/// A queue and its time.
#[derive(Clone)]
pub struct QueueKit {
    pub queue: Arc<dyn JobQueue>,
    pub time: Arc<dyn TimeTravel>,
}

/// A rate limiter and its time.
#[derive(Clone)]
pub struct LimiterKit {
    pub limiter: Arc<dyn RateLimiter>,
    pub time: Arc<dyn TimeTravel>,
}

/// A merchant as the fixtures create it.
#[derive(Clone, Debug)]
pub struct Onboarded {
    pub merchant: Merchant,
    pub account: Account,
    pub key: ApiKey,
}

impl Onboarded {
    pub fn principal(&self) -> Principal {
        Principal::Merchant(self.merchant.id)
    }
}

/// Onboards a merchant with a primary account in `currency`.
pub async fn onboard(kit: &StoreKit, currency: Currency) -> Onboarded {
    let name = MerchantName::parse("merchant").unwrap();
    let (onboarding, _raw) = Onboarding::new(name, currency, Timestamp::now()).unwrap();
    kit.store
        .merchants()
        .onboard(&onboarding, None)
        .await
        .unwrap();
    let Onboarding {
        merchant,
        account,
        key,
    } = onboarding.into_inner();
    Onboarded {
        merchant,
        account,
        key,
    }
}

/// The system account of `currency` (created if needed).
pub async fn system_account(kit: &StoreKit, currency: Currency) -> Account {
    kit.store
        .accounts()
        .ensure_system_account(&Account::system(currency, Timestamp::now()))
        .await
        .unwrap()
}

/// A `PENDING` payment into `to`, funded by `funding` (not stored).
pub fn payment(to: &Account, funding: &Account, minor_units: i64, token: &str) -> Fresh<Payment> {
    Payment::new(
        NewPayment {
            merchant_account: to.id,
            funding_account: funding.id,
            owner: to.owner,
            amount: Amount::new(minor_units).unwrap(),
            currency: to.currency,
            source: CardSource::parse(token).unwrap(),
            description: Description::default(),
            capture_method: CaptureMethod::Automatic,
            metadata: Metadata::default(),
            idempotency_key: None,
            created_by: Principal::Platform,
        },
        Timestamp::now(),
    )
}

/// Stores a `PENDING` payment of `minor_units` into the merchant's primary account.
pub async fn stored_payment(kit: &StoreKit, to: &Onboarded, minor_units: i64) -> Payment {
    let funding = system_account(kit, to.account.currency).await;
    let p = payment(&to.account, &funding, minor_units, "tok_visa");
    kit.store.payments().create_payment(&p, None).await.unwrap();
    p.into_inner()
}

/// `record` vouched for as if core had created it: for adapter tests that build records core
/// never would (backdated, or breaking a rule) to see a store's own guards or indexes at work.
pub fn vouched<T>(record: T) -> Fresh<T> {
    Fresh::new(record)
}

/// A unique idempotency key.
pub fn unique_key() -> IdempotencyKey {
    IdempotencyKey::parse(format!("key-{}", uuid::Uuid::now_v7())).unwrap()
}

/// A fingerprint for test body `n`.
pub fn fingerprint(n: u8) -> Fingerprint {
    Fingerprint::of("POST", "/api/v1/test", &[n])
}

/// A short idempotency policy for tests.
pub fn policy() -> IdempotencyPolicy {
    IdempotencyPolicy {
        ttl: Duration::from_secs(3600),
        lock_timeout: Duration::from_secs(60),
    }
}

/// Claims a fresh key and returns the claim.
pub async fn acquire(kit: &StoreKit, scope: Principal) -> Claim {
    match kit
        .store
        .idempotency()
        .claim(scope, &unique_key(), fingerprint(1), policy())
        .await
        .unwrap()
    {
        ClaimOutcome::Acquired(claim) => claim,
        other => panic!("a fresh key must be acquired, got {other:?}"),
    }
}

/// A claim that is no longer held: its key was given up, then taken by another request that
/// still holds it.
pub async fn taken_by_another(kit: &StoreKit, scope: Principal) -> Claim {
    let lost = acquire(kit, scope).await;
    kit.store.idempotency().release(&lost).await.unwrap();
    match kit
        .store
        .idempotency()
        .claim(scope, &lost.key, fingerprint(1), policy())
        .await
        .unwrap()
    {
        ClaimOutcome::Acquired(_) => lost,
        other => panic!("a released key must be acquired again, got {other:?}"),
    }
}

/// A completion of `claim` with a small body.
pub fn completion(claim: &Claim, body: &'static str) -> Completion {
    Completion {
        claim: claim.clone(),
        fingerprint: fingerprint(1),
        policy: policy(),
        response: StoredResponse {
            status: 201,
            body: bytes::Bytes::from_static(body.as_bytes()),
        },
    }
}

/// Asserts the audit, when the backend has one, finds nothing wrong.
pub async fn assert_books_clean(kit: &StoreKit) {
    if let Some(audit) = &kit.audit {
        let report = audit.audit(Duration::from_secs(24 * 3600)).await.unwrap();
        assert!(report.is_clean(), "books audit found violations:\n{report}");
    }
}

/// Generates one `#[tokio::test]` per case of a `testkit` suite module. `$kit` is an expression (usually an
/// `async` block) producing the suite's kit; it is evaluated once per test.
#[macro_export]
macro_rules! conformance_tests {
    ($module:ident, $kit:expr, [$($case:ident),+ $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let kit = $kit;
                $crate::testkit::$module::$case(&kit).await;
            }
        )+
    };
}
