//! TEST-MATRIX row 42: authorization expiry with two sweepers, and captures racing it. Two
//! server processes share one database, each running its own sweeper with
//! `AUTHORIZATION_TTL=2s`. 200 manual-capture payments are authorized; a quarter of them are
//! captured through the other process while their authorizations run out. Every payment whose
//! capture was accepted ends `SUCCESS` with one posting of its amount; every other one ends
//! `CANCELED` (`expired`), canceled exactly once across both sweepers, with no posting.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use atomic_core::ports::LedgerAudit;
use atomic_postgres::testkit::TestDatabase;
use common::{Answered, Captured, KEY, KEY_HASH, merchant_account, server};
use serde_json::{Value, json};
use tokio::process::Child;

const PAYMENTS: usize = 200;
const TTL: Duration = Duration::from_secs(2);

async fn start(db: &TestDatabase) -> (Child, Captured, String) {
    let mut child = server()
        .env("DATABASE_URL", db.url())
        .env("DATABASE_POOL_SIZE", "8")
        .env("MERCHANT_API_KEY_HASH", KEY_HASH)
        .env("RATE_LIMIT_GLOBAL", "off")
        .env("RATE_LIMIT_PAYMENTS", "off")
        .env("AUTHORIZATION_TTL", "2s")
        .env("SWEEP_INTERVAL", "100ms")
        .env("SWEEP_STALE_AFTER", "1s")
        .env("WORKER_LEASE", "2s")
        .spawn()
        .unwrap();
    let captured = Captured::start(&mut child);
    let address = captured.address().await;
    (child, captured, format!("http://{address}/api/v1"))
}

async fn get(http: &reqwest::Client, api: &str, id: &str) -> Value {
    let reply: Value = http
        .get(format!("{api}/payments/{id}"))
        .bearer_auth(KEY)
        .answer()
        .await;
    reply["data"]["payment"].clone()
}

/// Creates `PAYMENTS` manual-capture payments through `api`; their ids and amounts.
async fn authorize_all(http: &reqwest::Client, api: &str, account: &str) -> Vec<(String, i64)> {
    let mut made = Vec::with_capacity(PAYMENTS);
    for i in 0..PAYMENTS {
        let amount = i64::try_from(i).unwrap() + 100;
        let reply = http
            .post(format!("{api}/payments"))
            .bearer_auth(KEY)
            .json(
                &json!({"merchantId": account, "amount": amount, "currency": "USD",
                          "source": "tok_visa", "captureMethod": "manual"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 202);
        let body: Value = reply.json().await.unwrap();
        made.push((body["data"]["id"].as_str().unwrap().to_owned(), amount));
    }
    made
}

/// Waits until no payment is `PENDING` or `PROCESSING` any more (and, with `authorized`
/// false, none is `AUTHORIZED` either).
async fn settle(pool: &sqlx::PgPool, authorized: bool, within: Duration) {
    let sql = if authorized {
        "SELECT count(*) FROM payments WHERE status IN ('PENDING', 'PROCESSING')"
    } else {
        "SELECT count(*) FROM payments WHERE status IN ('PENDING', 'PROCESSING', 'AUTHORIZED')"
    };
    let started = Instant::now();
    loop {
        let open: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        if open == 0 {
            return;
        }
        assert!(started.elapsed() < within, "{open} payments still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many times each payment was canceled for expiry, by the processes' own log records.
fn expiries(lines: &[String]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for line in lines {
        let Ok(log) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if log["fields"]["message"] == "authorization expired; payment canceled" {
            let id = log["fields"]["payment_id"].as_str().unwrap().to_owned();
            *seen.entry(id).or_default() += 1;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorizations_expire_exactly_once_and_a_capture_that_won_is_never_canceled() {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let http = reqwest::Client::new();
    let (mut a, a_log, api_a) = start(&db).await;
    let (mut b, b_log, api_b) = start(&db).await;
    let account = merchant_account(&http, &api_a, "Expiry Shop").await;

    let payments = authorize_all(&http, &api_a, &account).await;
    settle(&pool, true, Duration::from_secs(30)).await;

    // A quarter of them are captured through the other process, spread over the TTL so the
    // later ones race their authorization's expiry (whoever wins, the assertions hold).
    let mut captures = tokio::task::JoinSet::new();
    for (k, (id, _)) in payments.iter().step_by(4).enumerate() {
        let (http, api, id) = (http.clone(), api_b.clone(), id.clone());
        let at = Duration::from_millis(50 * k as u64);
        captures.spawn(async move {
            tokio::time::sleep(at).await;
            let reply = http
                .post(format!("{api}/payments/{id}/capture"))
                .bearer_auth(KEY)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            (id, reply.status().as_u16())
        });
    }
    let mut accepted = HashMap::new();
    while let Some(done) = captures.join_next().await {
        let (id, status) = done.unwrap();
        assert!(matches!(status, 202 | 409), "capture of {id}: {status}");
        accepted.insert(id, status == 202);
    }
    settle(&pool, false, TTL + Duration::from_secs(30)).await;
    let mut finished = HashMap::new();
    for (id, _) in &payments {
        finished.insert(id.clone(), get(&http, &api_a, id).await);
    }

    a.start_kill().unwrap();
    b.start_kill().unwrap();
    let mut lines = a_log.finish(&mut a).await;
    lines.extend(b_log.finish(&mut b).await);
    let expired = expiries(&lines);

    for (id, amount) in &payments {
        let payment = &finished[id];
        if accepted.get(id).copied().unwrap_or(false) {
            assert_eq!(payment["status"], "SUCCESS", "{payment}");
            assert_eq!(payment["amountCaptured"], *amount, "{payment}");
            assert!(
                !expired.contains_key(id),
                "a captured payment was expired: {id}"
            );
        } else {
            assert_eq!(payment["status"], "CANCELED", "{payment}");
            assert_eq!(payment["cancellationReason"], "expired", "{payment}");
            assert_eq!(
                expired.get(id),
                Some(&1),
                "{id} canceled once across both sweepers"
            );
        }
    }
    let canceled: Vec<String> = expired.keys().cloned().collect();
    let postings: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ledger_entries WHERE payment_id = ANY($1::uuid[])",
    )
    .bind(&canceled)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(postings, 0, "nothing is posted for a canceled payment");
    // One `payment.canceled` event per expired payment, and none for a captured one.
    let events: Vec<(String, i64)> = sqlx::query_as(
        "SELECT payment_id::text, count(*) FROM events WHERE type = 'payment.canceled' \
         GROUP BY payment_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let events: std::collections::HashMap<String, i64> = events.into_iter().collect();
    for id in accepted.keys().chain(expired.keys()) {
        let expected = i64::from(expired.contains_key(id));
        assert_eq!(
            events.get(id).copied().unwrap_or(0),
            expected,
            "payment.canceled events of {id}"
        );
    }
    let audit = db.store().audit(Duration::from_secs(60)).await.unwrap();
    assert!(audit.is_clean(), "{audit}");
    let won = accepted.values().filter(|won| **won).count();
    println!(
        "row 42: authorized={PAYMENTS} captures_sent={} captures_accepted={won} \
         expired={} (each once, two sweepers) canceled_events={} (one each) \
         postings_of_canceled=0 audit clean",
        accepted.len(),
        expired.len(),
        events.values().sum::<i64>()
    );
}
