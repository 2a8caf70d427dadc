//! TEST-MATRIX row 31: SIGTERM while clients pay at about 100 requests/s, on PostgreSQL and
//! Redis. Every request sent before the signal is answered (no reset), the process exits 0,
//! it leaves no payment PROCESSING (what its workers held is finished or released), and a
//! new process settles the rest: every 202 durable, one posting per SUCCESS, clean audit.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use atomic_core::ports::LedgerAudit;
use atomic_postgres::testkit::TestDatabase;
use atomic_redis::testkit::{DeleteOnDrop, require_redis, unique_config};
use common::books::{Acked, assert_acked_stored, assert_postings_match_payments, t_heal};
use common::{KEY, KEY_HASH, merchant_account, server, wait_listening};
use serde_json::{Value, json};
use tokio::process::Child;
use tokio::sync::Mutex;

const CLIENTS: usize = 8;
/// T_heal for the lease (2 s) and sweep interval (500 ms) the processes run with.
const T_HEAL: Duration = t_heal(Duration::from_secs(2), Duration::from_millis(500));

/// One request as the client saw it.
struct Sent {
    key: String,
    amount: i64,
    started: Instant,
    /// When the answer (or the error) came.
    answered: Instant,
    /// `Ok((status, payment id if 202))`, or the transport error.
    outcome: Result<(u16, Option<String>), String>,
}

async fn start(db: &TestDatabase, redis: &str, prefix: &str) -> (Child, String) {
    let mut child = server()
        .env("DATABASE_URL", db.url())
        .env("REDIS_URL", redis)
        .env("REDIS_KEY_PREFIX", prefix)
        .env("MERCHANT_API_KEY_HASH", KEY_HASH)
        .env("RATE_LIMIT_GLOBAL", "off")
        .env("RATE_LIMIT_PAYMENTS", "off")
        .env("WORKER_LEASE", "2s")
        .env("SWEEP_INTERVAL", "500ms")
        .env("SWEEP_STALE_AFTER", "1s")
        .spawn()
        .unwrap();
    let (address, _) = wait_listening(&mut child).await;
    (child, format!("http://{address}/api/v1"))
}

async fn count(db: &TestDatabase, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(db.store().pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_what_it_took_and_leaves_nothing_processing() {
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    require_redis(&redis).await;
    let config = unique_config(&redis);
    let _keys = DeleteOnDrop::new(&config);
    let db = TestDatabase::create().await;
    let (mut child, api) = start(&db, &redis, &config.prefix).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let account = merchant_account(&http, &api, "Shutdown Shop").await;

    // About 100 requests/s from 8 clients, until a second after the signal.
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let stop_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (http, api, account, sent, stop_at) = (
            http.clone(),
            api.clone(),
            account.clone(),
            sent.clone(),
            stop_at.clone(),
        );
        clients.push(tokio::spawn(async move {
            for i in 0.. {
                if stop_at.lock().await.is_some_and(|t| Instant::now() > t) {
                    break;
                }
                let started = Instant::now();
                let reply = http
                    .post(format!("{api}/payments"))
                    .bearer_auth(KEY)
                    .header("Idempotency-Key", format!("term-{c}-{i}"))
                    .json(&json!({"merchantId": account, "amount": 100 + i, "currency": "USD", "source": if i % 10 == 3 { "tok_chargeDeclined" } else { "tok_visa" }}))
                    .send()
                    .await;
                let outcome = match reply {
                    Ok(reply) => {
                        let status = reply.status().as_u16();
                        let body: Value = reply.json().await.unwrap_or(Value::Null);
                        Ok((status, body["data"]["id"].as_str().map(str::to_owned)))
                    }
                    Err(e) => Err(e.to_string()),
                };
                let answered = Instant::now();
                let failed = outcome.is_err();
                sent.lock().await.push(Sent {
                    key: format!("term-{c}-{i}"),
                    amount: 100 + i,
                    started,
                    answered,
                    outcome,
                });
                if failed {
                    // The server is gone or going: no point hammering a closed port.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(Duration::from_millis(70)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = child.id().unwrap().to_string();
    // Taken just before the signal is sent: a request begun before this is "before SIGTERM".
    let signal_at = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    *stop_at.lock().await = Some(signal_at + Duration::from_secs(1));
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits within 30 s")
        .unwrap();
    for client in clients {
        client.await.unwrap();
    }
    assert!(exit.success(), "exit status {exit:?}");
    let processing_after_exit = count(
        &db,
        "SELECT count(*) FROM payments WHERE status = 'PROCESSING'",
    )
    .await;
    assert_eq!(
        processing_after_exit, 0,
        "nothing left PROCESSING by the stopped process"
    );

    let sent = sent.lock().await;
    let before: Vec<&Sent> = sent
        .iter()
        // Every request whose sending began before the signal was sent, however close to it.
        .filter(|s| s.started < signal_at)
        .collect();
    // How close to the signal the last of them began.
    let closest = before
        .iter()
        .map(|s| signal_at - s.started)
        .min()
        .unwrap_or_default();
    // Of those, the ones still unanswered when the signal was sent.
    let in_flight = before.iter().filter(|s| s.answered > signal_at).count();
    let answered_before = before
        .iter()
        .filter(|s| matches!(s.outcome, Ok((202, Some(_)))))
        .count();
    assert!(
        before.len() >= 50,
        "{} requests before the signal",
        before.len()
    );
    let unanswered: Vec<String> = before
        .iter()
        .filter(|s| !matches!(s.outcome, Ok((202, Some(_)))))
        .map(|s| {
            format!(
                "{:?} before the signal: {:?}",
                signal_at - s.started,
                s.outcome
            )
        })
        .collect();
    assert!(
        unanswered.is_empty(),
        "{} of {} requests sent before SIGTERM got no complete 202: {unanswered:#?}",
        unanswered.len(),
        before.len()
    );
    for s in sent.iter() {
        if let Ok((status, _)) = s.outcome {
            assert!(status == 202 || status == 503, "status {status}");
        }
    }
    let accepted: Vec<Acked> = sent
        .iter()
        .filter_map(|s| match &s.outcome {
            Ok((202, Some(id))) => Some(Acked {
                key: s.key.clone(),
                id: id.clone(),
                amount: s.amount,
            }),
            _ => None,
        })
        .collect();
    let refused_after = sent.len() - before.len() - (accepted.len() - answered_before);

    // A new process settles whatever was left PENDING.
    let (_child, _) = start(&db, &redis, &config.prefix).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(
        &db,
        "SELECT count(*) FROM payments WHERE status IN ('PENDING', 'PROCESSING')",
    )
    .await
        > 0
    {
        assert!(Instant::now() < deadline, "payments still open after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every 202 looked up by its id; each posting against its payment; L12 at T_heal.
    assert_acked_stored(db.store().pool(), &accepted).await;
    assert_postings_match_payments(db.store().pool()).await;
    let audit = db.store().audit(T_HEAL).await.unwrap();
    assert!(
        audit.is_clean(),
        "books audit (L12 after {T_HEAL:?}):\n{audit}"
    );
    println!(
        "row 31: sent={} before_signal={} answered_before_signal={answered_before} \
         in_flight_at_signal={in_flight} last_started={closest:?}_before_signal accepted={} \
         not_answered_after_signal={refused_after} processing_after_exit=0 audit=clean",
        sent.len(),
        before.len(),
        accepted.len()
    );
}
