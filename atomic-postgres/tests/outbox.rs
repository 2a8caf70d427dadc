//! The outbox on PostgreSQL, beyond the conformance kit: claims racing on many connections
//! never take one delivery twice; the per-endpoint bound holds from one claim to the next; a
//! delivery written beside its endpoint's deletion is still claimed (without a target) so it
//! can be ended; the schema refuses a second event for one change and a second delivery of one
//! event to one endpoint; and the limit of 16 endpoints holds under racing creations. Events
//! and deliveries are written here by hand, as the owner, so each test sets up exactly the
//! rows it needs. Each test has a database of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use atomic_core::Error;
use atomic_core::id::MerchantId;
use atomic_core::ports::{LeaseId, OutboxStore, WebhookStore};
use atomic_core::principal::{Owner, Principal};
use atomic_core::testkit::outbox::endpoint;
use atomic_core::time::Timestamp;
use atomic_core::webhook::MAX_ENDPOINTS_PER_OWNER;
use atomic_postgres::PgStore;
use atomic_postgres::testkit::TestDatabase;
use sqlx::PgPool;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(60);

/// A database whose pool has room for `connections` calls at once.
async fn database(connections: u32) -> (TestDatabase, PgStore, PgPool) {
    let db = TestDatabase::create_with(|config| config.max_connections = connections).await;
    let store = db.store();
    let pool = store.pool().clone();
    (db, store, pool)
}

/// Stores a live endpoint of `owner` receiving everything; its id.
async fn stored_endpoint(store: &PgStore, owner: Owner) -> Uuid {
    let e = endpoint(owner, &["*"]);
    store.create_endpoint(&e, None).await.unwrap();
    e.id.as_uuid()
}

/// Writes `n` payment events by hand, each with a PENDING delivery due now to every endpoint
/// of `endpoints`; the events' ids.
async fn due_deliveries(pool: &PgPool, endpoints: &[Uuid], n: usize) -> Vec<Uuid> {
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        let event = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO events (id, type, merchant_account, owner_merchant, payment_id, \
             refund_id, created_at, body) \
             VALUES ($1, 'payment.succeeded', gen_random_uuid(), NULL, gen_random_uuid(), NULL, \
                     now() - interval '1 second', '{}')",
        )
        .bind(event)
        .execute(pool)
        .await
        .unwrap();
        for endpoint in endpoints {
            insert_delivery(pool, event, *endpoint).await.unwrap();
        }
        events.push(event);
    }
    events
}

/// A PENDING delivery of `event` to `endpoint`, due since its event was written.
async fn insert_delivery(pool: &PgPool, event: Uuid, endpoint: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, event_id, endpoint_id, status, attempts, failures, \
         next_attempt_at, manual, created_at) \
         SELECT $1, $2, $3, 'PENDING', 0, 0, created_at, false, created_at \
         FROM events WHERE id = $2",
    )
    .bind(Uuid::now_v7())
    .bind(event)
    .bind(endpoint)
    .execute(pool)
    .await
    .map(|_| ())
}

/// The SQLSTATE and constraint of a refused statement.
fn refusal(result: Result<(), sqlx::Error>) -> (String, String) {
    match result {
        Err(sqlx::Error::Database(db)) => (
            db.code().unwrap_or_default().into_owned(),
            db.constraint().unwrap_or_default().to_owned(),
        ),
        other => panic!("the database must refuse, got {other:?}"),
    }
}

fn unique(constraint: &str) -> (String, String) {
    ("23505".to_owned(), constraint.to_owned())
}

/// Many dispatchers claiming at once, each on its own connection, until nothing is due: every
/// delivery is claimed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn racing_claims_never_take_one_delivery_twice() {
    let (_db, store, pool) = database(24).await;
    let mut endpoints = Vec::new();
    for _ in 0..6 {
        endpoints.push(stored_endpoint(&store, Owner::Platform).await);
    }
    due_deliveries(&pool, &endpoints, 100).await;
    let total = endpoints.len() * 100;

    let mut claimers = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let store = store.clone();
        claimers.spawn(async move {
            let mut mine = Vec::new();
            let mut empty = 0;
            // A claim can come back empty while others hold the rest; stop after a few.
            while empty < 3 {
                let claimed = store
                    .claim_deliveries(LeaseId::generate(), LEASE, 7, 1_000)
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    empty += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                mine.extend(claimed.into_iter().map(|d| d.delivery.id));
            }
            mine
        });
    }
    let mut all = Vec::new();
    while let Some(mine) = claimers.join_next().await {
        all.extend(mine.unwrap());
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "a delivery was claimed twice");
    assert_eq!(all.len(), total, "every due delivery was claimed");
    let held: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT lease) FROM webhook_deliveries WHERE lease IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(held > 1, "the claims ran under {held} lease(s)");
}

/// An endpoint holding `per_endpoint` deliveries gets none more from the next claim, and
/// gets one again once an attempt is written back; the other endpoint is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_endpoint_bound_holds_across_claims() {
    let (_db, store, pool) = database(4).await;
    let slow = stored_endpoint(&store, Owner::Platform).await;
    due_deliveries(&pool, &[slow], 10).await;

    let first = LeaseId::generate();
    let claimed = store.claim_deliveries(first, LEASE, 100, 3).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let second = store
        .claim_deliveries(LeaseId::generate(), LEASE, 100, 3)
        .await
        .unwrap();
    assert_eq!(second.len(), 0, "3 already held");

    let other = stored_endpoint(&store, Owner::Platform).await;
    due_deliveries(&pool, &[other], 2).await;
    let third = store
        .claim_deliveries(LeaseId::generate(), LEASE, 100, 3)
        .await
        .unwrap();
    assert_eq!(third.len(), 2);
    assert!(
        third
            .iter()
            .all(|d| d.delivery.endpoint_id.as_uuid() == other)
    );

    let mut done = claimed[0].delivery.clone();
    done.attempted(
        Timestamp::now(),
        &atomic_core::ports::SendOutcome::Answered(204),
        &atomic_core::webhook::RetrySchedule::default(),
    );
    assert_eq!(store.finish_deliveries(first, &[done]).await.unwrap(), 1);
    let fourth = store
        .claim_deliveries(LeaseId::generate(), LEASE, 100, 3)
        .await
        .unwrap();
    assert_eq!(fourth.len(), 1, "one hold ended, one more may be taken");
    assert_eq!(fourth[0].delivery.endpoint_id.as_uuid(), slow);
}

/// A delivery written for an endpoint deleted meanwhile (the event's transaction read the
/// endpoint before the deletion committed) is claimed without a target, so the dispatcher
/// can end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_of_a_deleted_endpoint_is_claimed_without_a_target() {
    let (_db, store, pool) = database(4).await;
    let live = stored_endpoint(&store, Owner::Platform).await;
    let gone = stored_endpoint(&store, Owner::Platform).await;
    store
        .delete_endpoint(gone.into(), Principal::Platform, Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    due_deliveries(&pool, &[live, gone], 1).await;
    let claimed = store
        .claim_deliveries(LeaseId::generate(), LEASE, 10, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    for due in &claimed {
        let to_live = due.delivery.endpoint_id.as_uuid() == live;
        assert_eq!(due.target.is_some(), to_live, "{due:?}");
    }
    let target = claimed.iter().find_map(|d| d.target.clone()).unwrap();
    assert_eq!(target.body, "{}", "the event's text, byte for byte");
}

/// L15 and L16 in the schema: hand-written SQL cannot add a second event for one change of a
/// payment or a refund, nor a second delivery of one event to one endpoint; the lawful
/// neighbours (another type, another endpoint) are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_refuses_a_second_event_per_change_and_delivery_per_endpoint() {
    let (_db, store, pool) = database(4).await;
    let event = |kind: &'static str, payment: Uuid, refund: Option<Uuid>| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO events (id, type, merchant_account, owner_merchant, payment_id, \
                 refund_id, created_at, body) \
                 VALUES ($1, $2, gen_random_uuid(), NULL, $3, $4, now(), '{}')",
            )
            .bind(Uuid::now_v7())
            .bind(kind)
            .bind(payment)
            .bind(refund)
            .execute(&pool)
            .await
            .map(|_| ())
        }
    };
    let (payment, refund) = (Uuid::now_v7(), Uuid::now_v7());
    event("payment.authorized", payment, None).await.unwrap();
    event("payment.canceled", payment, None).await.unwrap();
    assert_eq!(
        refusal(event("payment.canceled", payment, None).await),
        unique("events_one_per_payment_change")
    );
    event("refund.succeeded", payment, Some(refund))
        .await
        .unwrap();
    event("refund.succeeded", payment, Some(Uuid::now_v7()))
        .await
        .unwrap();
    assert_eq!(
        refusal(event("refund.succeeded", payment, Some(refund)).await),
        unique("events_one_per_refund_change")
    );

    let (a, b) = (
        stored_endpoint(&store, Owner::Platform).await,
        stored_endpoint(&store, Owner::Platform).await,
    );
    let written = due_deliveries(&pool, &[a], 1).await[0];
    insert_delivery(&pool, written, b).await.unwrap();
    assert_eq!(
        refusal(insert_delivery(&pool, written, a).await),
        unique("webhook_deliveries_one_per_endpoint")
    );
}

/// Seventeen creations for one owner at once, each on its own connection: sixteen succeed
/// and one is `LimitReached`; for several owners, the platform among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn racing_creations_stop_at_sixteen_endpoints_per_owner() {
    let tries = MAX_ENDPOINTS_PER_OWNER + 1;
    let (_db, store, _pool) = database(u32::try_from(tries).unwrap() + 2).await;
    let owners = [
        Owner::Platform,
        Owner::Merchant(MerchantId::generate()),
        Owner::Merchant(MerchantId::generate()),
    ];
    for owner in owners {
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(tries));
        let mut racing = tokio::task::JoinSet::new();
        for _ in 0..tries {
            let (store, start) = (store.clone(), start.clone());
            racing.spawn(async move {
                let e = endpoint(owner, &["*"]);
                start.wait().await;
                store.create_endpoint(&e, None).await
            });
        }
        let (mut made, mut refused) = (0, 0);
        while let Some(result) = racing.join_next().await {
            match result.unwrap() {
                Ok(()) => made += 1,
                Err(Error::LimitReached) => refused += 1,
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(
            (made, refused),
            (MAX_ENDPOINTS_PER_OWNER, 1),
            "owner {owner:?}"
        );
    }
}
