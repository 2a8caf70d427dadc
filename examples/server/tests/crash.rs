//! The kill -9 test (issue 4, TEST-MATRIX row 1): the server binary on PostgreSQL takes 2,000
//! payments from 16 concurrent clients and is killed with SIGKILL while it settles them. It is
//! started again; the clients retry whatever got no answer with the same Idempotency-Key, as a
//! client should. Then every payment ends terminal, no payment is posted twice, each key made
//! one payment, the merchant's balance is the sum of its SUCCESS payments, and the books audit
//! finds nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use atomic_core::ports::LedgerAudit;
use atomic_postgres::testkit::TestDatabase;
use atomic_redis::testkit::{DeleteOnDrop, require_redis, unique_config};
use common::books::{Acked, assert_acked_stored, assert_postings_match_payments, t_heal};
use common::{KEY, KEY_HASH, onboard, server, wait_listening};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::process::Child;
use tokio::sync::Mutex;

const PAYMENTS: usize = 2_000;
const CLIENTS: usize = 16;
/// T_heal for the lease (2 s) and sweep interval (500 ms) the processes run with.
const T_HEAL: Duration = t_heal(Duration::from_secs(2), Duration::from_millis(500));

async fn start(db: &TestDatabase, extra: &[(String, String)]) -> (Child, String) {
    let mut child = server()
        .envs(extra.iter().map(|(k, v)| (k, v)))
        .env("DATABASE_URL", db.url())
        .env("DATABASE_POOL_SIZE", "12")
        .env("MERCHANT_API_KEY_HASH", KEY_HASH)
        .env("RATE_LIMIT_GLOBAL", "off")
        .env("RATE_LIMIT_PAYMENTS", "off")
        // Short leases and sweeps, so the test waits seconds, not minutes, for recovery; a
        // short request timeout, so a claim held by a killed request is stale sooner.
        .env("WORKER_LEASE", "2s")
        .env("SWEEP_INTERVAL", "500ms")
        .env("SWEEP_STALE_AFTER", "2s")
        .env("REQUEST_TIMEOUT", "5s")
        .spawn()
        .unwrap();
    let (address, storage) = wait_listening(&mut child).await;
    assert!(storage.contains("PostgreSQL"), "{storage}");
    (child, format!("http://{address}/api/v1"))
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Amount and card of payment `i`: a mix of successes and declines.
fn payment_of(i: usize) -> (i64, &'static str) {
    let amount = i64::try_from(i % 997).unwrap() + 1;
    (
        amount,
        if i % 10 == 7 {
            "tok_chargeDeclined"
        } else {
            "tok_visa"
        },
    )
}

/// Sends payment `i` once; `Some(payment id)` on 202, `None` when there was no usable answer.
async fn send(http: &reqwest::Client, api: &str, account: &str, i: usize) -> Option<String> {
    let (amount, source) = payment_of(i);
    let reply = http
        .post(format!("{api}/payments"))
        .bearer_auth(KEY)
        .header("Idempotency-Key", format!("crash-{i}"))
        .json(
            &json!({"merchantId": account, "amount": amount, "currency": "USD", "source": source}),
        )
        .send()
        .await
        .ok()?;
    let status = reply.status().as_u16();
    let body: Value = reply.json().await.ok()?;
    match status {
        202 => Some(body["data"]["id"].as_str().unwrap().to_owned()),
        // A request cut by the kill still holds its key until the claim goes stale, and a
        // server that just started may be busy: both are "try again later".
        409 | 503 => None,
        other => panic!("payment {i}: unexpected {other}: {body}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_settling_on_postgres_loses_nothing_and_doubles_nothing() {
    kill_9_while_settling("postgres", &[]).await;
}

/// The production shape: the killed process also held reserved Redis jobs; they come back to
/// the new process after their lease (TEST-MATRIX row 1 with the Redis queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_settling_on_postgres_and_redis_loses_nothing_and_doubles_nothing() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    require_redis(&url).await;
    let config = unique_config(&url);
    let _keys = DeleteOnDrop::new(&config);
    kill_9_while_settling(
        "postgres+redis",
        &[
            ("REDIS_URL".to_owned(), url),
            ("REDIS_KEY_PREFIX".to_owned(), config.prefix.clone()),
        ],
    )
    .await;
}

async fn kill_9_while_settling(shape: &str, extra: &[(String, String)]) {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (mut child, api) = start(&db, extra).await;
    let merchant = onboard(&http, &api, KEY, "Crash Shop").await;
    let account = merchant["data"]["account"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let t0 = Instant::now();
    // Phase 1: 16 clients send the 2,000 payments; the server is killed mid-way.
    let accepted: Arc<Mutex<HashMap<usize, String>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (http, api, account) = (http.clone(), api.clone(), account.clone());
        let (accepted, next) = (accepted.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= PAYMENTS {
                    break;
                }
                if let Some(id) = send(&http, &api, &account, i).await {
                    accepted.lock().await.insert(i, id);
                }
            }
        }));
    }
    // Kill once more than half the payments are stored and the server is both accepting and
    // settling: some payments done, some open (with batched settlement the workers keep up, so
    // the backlog is small).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (settled_at_kill, open_at_kill) = loop {
        let stored = count(&pool, "SELECT count(*) FROM payments").await;
        let settled = count(
            &pool,
            "SELECT count(*) FROM payments WHERE status IN ('SUCCESS', 'FAILED')",
        )
        .await;
        let open = count(
            &pool,
            "SELECT count(*) FROM payments WHERE status IN ('PENDING', 'PROCESSING')",
        )
        .await;
        if stored > i64::try_from(PAYMENTS / 2).unwrap() && settled >= 100 && open >= 1 {
            break (settled, open);
        }
        assert!(
            Instant::now() < deadline,
            "the server never had half the payments stored with settled and open ones at once \
             ({stored} stored, {settled} settled, {open} open)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    for client in clients {
        client.await.unwrap();
    }
    let answered_before_kill = accepted.lock().await.len();
    let stored_at_kill = count(&pool, "SELECT count(*) FROM payments").await;

    let phase1 = t0.elapsed();
    // Phase 2: start again; retry every payment without an answer, same key, until accepted.
    let (_child, api) = start(&db, extra).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut retried = 0;
    loop {
        let missing: Vec<usize> = {
            let accepted = accepted.lock().await;
            (0..PAYMENTS)
                .filter(|i| !accepted.contains_key(i))
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} payments never accepted",
            missing.len()
        );
        for i in missing {
            retried += 1;
            if let Some(id) = send(&http, &api, &account, i).await {
                accepted.lock().await.insert(i, id);
            } else {
                // 409 until the killed request's claim is stale: wait a little, then retry.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    let phase2 = t0.elapsed();
    // Every payment ends terminal, by the sweep and the workers of the new process.
    let started = Instant::now();
    loop {
        let open = count(
            &pool,
            "SELECT count(*) FROM payments WHERE status IN ('PENDING', 'PROCESSING')",
        )
        .await;
        if open == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{open} payments still open after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered_in = started.elapsed();

    // One payment per key, and it is the one the client was told about: every 202 looked up
    // by its id, under its key and amount.
    let accepted = accepted.lock().await.clone();
    let stored = count(&pool, "SELECT count(*) FROM payments").await;
    assert_eq!(
        stored,
        i64::try_from(PAYMENTS).unwrap(),
        "one payment per key"
    );
    let ids: std::collections::HashSet<&String> = accepted.values().collect();
    assert_eq!(
        ids.len(),
        PAYMENTS,
        "each key answered with its own payment"
    );
    let acked: Vec<Acked> = accepted
        .iter()
        .map(|(i, id)| Acked {
            key: format!("crash-{i}"),
            id: id.clone(),
            amount: payment_of(*i).0,
        })
        .collect();
    let durable = assert_acked_stored(&pool, &acked).await;
    let terminal = count(
        &pool,
        "SELECT count(*) FROM payments WHERE status IN ('SUCCESS', 'FAILED')",
    )
    .await;
    // Each posting against its payment, and each account's balance against its SUCCESS sum.
    let posted = assert_postings_match_payments(&pool).await;
    let success_sum = count(
        &pool,
        "SELECT coalesce(sum(amount), 0)::bigint FROM payments WHERE status = 'SUCCESS'",
    )
    .await;
    let expected_success: i64 = (0..PAYMENTS)
        .map(payment_of)
        .filter(|(_, source)| *source == "tok_visa")
        .map(|(amount, _)| amount)
        .sum();
    let audit = db.store().audit(T_HEAL).await.unwrap();
    println!(
        "crash test ({shape}): sent={PAYMENTS} answered_before_kill={answered_before_kill} \
         stored_at_kill={stored_at_kill} settled_at_kill={settled_at_kill} \
         open_at_kill={open_at_kill} retried={retried} terminal_after_restart={terminal} \
         durable_by_id={durable} postings={} recovered_in={recovered_in:?} phase1={phase1:?} phase2={phase2:?}",
        posted.postings
    );
    assert_eq!(terminal, stored, "every payment is terminal");
    assert_eq!(
        success_sum, expected_success,
        "exactly the tok_visa payments succeeded"
    );
    assert!(
        audit.is_clean(),
        "books audit (L12 after {T_HEAL:?}):\n{audit}"
    );
}
