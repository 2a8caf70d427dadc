//! TEST-MATRIX row 14 against the default 24 h idempotency window, on PostgreSQL: the core's
//! services (claim, prepare, submit with the completion) create a payment under a key; 23 h
//! later the same key and body replay the stored answer and add no payment row; 25 h later,
//! once the expired key is purged, the same request is a new payment (one new row).
//! PostgreSQL decides with its own `now()`, so time passes by moving every stored time back
//! (the conformance kit's time travel).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on the unexpected

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use atomic_core::idempotency::{
    ClaimOutcome, Completion, Fingerprint, IdempotencyKey, IdempotencyPolicy, StoredResponse,
};
use atomic_core::memory::{MemoryQueue, MemoryRateLimiter};
use atomic_core::merchant::MerchantName;
use atomic_core::payment::CaptureMethod;
use atomic_core::ports::Backend;
use atomic_core::ports::{IdempotencyStore, TestModeCards};
use atomic_core::service::CoreConfig;
use atomic_core::time::SystemClock;
use atomic_core::{
    Amount, CardSource, Currency, Metadata, PaymentRequest, Ports, Principal, Services,
};
use atomic_postgres::PgStore;
use atomic_postgres::testkit::TestDatabase;

const HOUR: Duration = Duration::from_secs(3600);

/// The same POST /payments each time: same key, same body.
async fn pay(services: &Services, caller: Principal, key: &IdempotencyKey) -> Outcome {
    let body = br#"{"amount":1000,"currency":"USD","source":"tok_visa"}"#;
    let fingerprint = Fingerprint::of("POST", "/api/v1/payments", body);
    match services
        .claim_idempotency_key(caller, key, fingerprint)
        .await
        .unwrap()
    {
        ClaimOutcome::Acquired(claim) => {
            let request = PaymentRequest {
                merchant_account: None,
                amount: Amount::new(1000).unwrap(),
                currency: Currency::USD,
                source: CardSource::parse("tok_visa").unwrap(),
                description: None,
                capture_method: CaptureMethod::Automatic,
                metadata: Metadata::default(),
            };
            let payment = services
                .payments
                .prepare(caller, request, Some(&claim))
                .await
                .unwrap();
            let answer = Bytes::from(format!(r#"{{"id":"{}"}}"#, payment.id));
            let completion = Completion {
                claim,
                fingerprint,
                policy: CoreConfig::default().idempotency,
                response: StoredResponse {
                    status: 202,
                    body: answer.clone(),
                },
            };
            services
                .payments
                .submit(&payment, Some(completion))
                .await
                .unwrap();
            Outcome::Created(answer)
        }
        ClaimOutcome::Replay(stored) => {
            assert_eq!(stored.status, 202);
            Outcome::Replayed(stored.body)
        }
        other => panic!("same key, same body: {other:?}"),
    }
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Created(Bytes),
    Replayed(Bytes),
}

async fn payments(store: &PgStore) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_key_replays_at_23_h_and_is_a_new_payment_at_25_h_once_reaped() {
    let db = TestDatabase::create().await;
    let store = db.store();
    let kit = db.kit();
    let ports = Ports {
        store: Backend::new(Arc::new(store.clone())),
        queue: Arc::new(MemoryQueue::new(Arc::new(SystemClock))),
        limiter: Arc::new(MemoryRateLimiter::new(Arc::new(SystemClock))),
        cards: Arc::new(TestModeCards),
        ..Ports::in_memory()
    };
    // The default policy: keys live 24 h.
    let config = CoreConfig::default();
    assert_eq!(config.idempotency, IdempotencyPolicy::default());
    assert_eq!(config.idempotency.ttl, 24 * HOUR);
    let services = Services::start(ports, config).await.unwrap();
    let (onboarding, _raw) = services
        .merchants
        .prepare(
            Principal::Platform,
            MerchantName::parse("Window Shop").unwrap(),
            Currency::USD,
        )
        .unwrap();
    services.merchants.submit(&onboarding, None).await.unwrap();
    let caller = Principal::Merchant(onboarding.merchant.id);
    let key = IdempotencyKey::parse("row-14-key").unwrap();

    let before = payments(&store).await;
    let Outcome::Created(first) = pay(&services, caller, &key).await else {
        panic!("a fresh key creates a payment");
    };
    assert_eq!(payments(&store).await, before + 1);

    // 23 h later: inside the window, the stored answer, byte for byte, and no new row.
    kit.time.advance(23 * HOUR).await;
    assert_eq!(
        store.purge_expired(100_000).await.unwrap(),
        0,
        "nothing expired at 23 h"
    );
    assert_eq!(
        pay(&services, caller, &key).await,
        Outcome::Replayed(first.clone()),
        "same key and body at 23 h: the stored answer"
    );
    let at_23_h = payments(&store).await;
    assert_eq!(at_23_h, before + 1, "a replay at 23 h adds no payment row");

    // 25 h after the first request: expired, reaped, and the same request is a new payment.
    kit.time.advance(2 * HOUR).await;
    assert_eq!(
        store.purge_expired(100_000).await.unwrap(),
        1,
        "the key is reaped at 25 h"
    );
    let Outcome::Created(second) = pay(&services, caller, &key).await else {
        panic!("after 25 h and the purge, the key creates a new payment");
    };
    assert_ne!(second, first, "a different payment");
    let at_25_h = payments(&store).await;
    assert_eq!(at_25_h, at_23_h + 1, "one new payment row at 25 h");
    println!(
        "row 14: window=24h rows_before={before} after_first={} at_23h={at_23_h} (replay) \
         at_25h={at_25_h} (new payment)",
        before + 1
    );
}
