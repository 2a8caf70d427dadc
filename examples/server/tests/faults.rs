//! Process faults (TEST-MATRIX rows 1, 2, 5 and 9), in the production shape:
//! API and worker as separate processes on PostgreSQL and Redis. Each test ends with every
//! payment terminal, one posting per SUCCESS and none otherwise, the merchant's balance equal
//! to its SUCCESS amounts, and a clean books audit.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use atomic_redis::testkit::RedisServer;
use common::books::{Acked, assert_acked_stored};
use common::fault::{Fault, KEY, T_HEAL};
use serde_json::{Value, json};

/// Row 2: a worker process killed with SIGKILL in the middle of a backlog of 500. Its held
/// jobs come back after their lease, and every payment is settled exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_settlement_settles_each_payment_once() {
    const N: usize = 500;
    let fault = Fault::new().await;
    let account = fault.backlog_of(N).await;
    // Small batches, so the kill lands with work both done and held.
    let (mut worker, _) = fault
        .start_with("worker", None, &[("WORKER_BATCH", "4")])
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let settled_at_kill = loop {
        let settled = fault
            .count("SELECT count(*) FROM payments WHERE status IN ('SUCCESS', 'FAILED')")
            .await;
        if settled >= (N / 4) as i64 {
            break settled;
        }
        assert!(Instant::now() < deadline, "only {settled} settled in 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    worker.start_kill().unwrap(); // SIGKILL
    worker.wait().await.unwrap();
    let settled_at_restart = fault
        .count("SELECT count(*) FROM payments WHERE status IN ('SUCCESS', 'FAILED')")
        .await;
    assert!(
        settled_at_restart < N as i64,
        "the kill landed before the end ({settled_at_restart} of {N} settled)"
    );

    let (_worker, _) = fault.start("worker", None).await;
    let took = fault
        .until("every payment terminal", T_HEAL, || async {
            fault.open().await == 0
        })
        .await;
    fault.assert_books(&account, N as i64).await;
    println!(
        "row 2: payments={N} settled_at_kill={settled_at_kill} settled_after_kill={settled_at_restart} \
         terminal_after_restart={took:?} (T_heal {T_HEAL:?}) duplicates=0"
    );
}

/// Row 9: Redis loses the queue (FLUSHALL on a Redis of the test's own) while 1,000 payments
/// wait, PENDING, with no worker running. PostgreSQL is the source of truth: the recovery
/// sweep of the worker that starts next rebuilds the queue and everything settles once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_redis_loses_no_pending_payment() {
    const N: usize = 1_000;
    let redis = RedisServer::start().await;
    let fault = Fault::on_redis(redis.url()).await;
    let account = fault.backlog_of(N).await;
    let pending = fault
        .count("SELECT count(*) FROM payments WHERE status = 'PENDING'")
        .await;
    assert_eq!(pending, N as i64);
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let keys: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(keys, 0, "the queue is gone");

    let (_worker, _) = fault.start("worker", None).await;
    let took = fault
        .until("every payment terminal", T_HEAL, || async {
            fault.open().await == 0
        })
        .await;
    fault.assert_books(&account, N as i64).await;
    println!(
        "row 9: payments={N} pending_at_flush={pending} terminal_after={took:?} \
         (T_heal {T_HEAL:?}) duplicates=0"
    );
}

/// Sends payment `i` once (same key and body on every try); `Some(id)` on 202, `None` when
/// there was no definitive answer (no response, 409 in progress, 503).
async fn try_pay(http: &reqwest::Client, api: &str, account: &str, i: usize) -> Option<String> {
    let reply = http
        .post(format!("{api}/payments"))
        .bearer_auth(KEY)
        .header("Idempotency-Key", format!("row1-{i}"))
        .json(&json!({"merchantId": account, "amount": 1_000 + i, "currency": "USD", "source": "tok_visa"}))
        .send()
        .await
        .ok()?;
    let status = reply.status().as_u16();
    let body: Value = reply.json().await.ok()?;
    match status {
        202 => Some(body["data"]["id"].as_str().unwrap().to_owned()),
        409 | 503 => None,
        other => panic!("payment {i}: unexpected {other}: {body}"),
    }
}

/// Row 1: the API process (alone; the worker is another process) is killed with SIGKILL while
/// 200 creates are in flight, at a seeded moment 50-390 ms in (`ATOMIC_FAULT_SEED` replays
/// one), inside the 400 ms over which they are sent, so the kill always cuts some off. Clients retry whatever got no definitive answer, with the same key and body, against
/// a new API process. Every key ends with exactly one payment, every 202 seen is durable and
/// names that payment, and all of them settle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_killed_mid_accept_loses_no_202_and_makes_one_payment_per_key() {
    const N: usize = 200;
    let seed: u64 = std::env::var("ATOMIC_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
                .into()
        });
    // The creates are sent from 0 to 398 ms; the kill lands among them.
    let kill_after = Duration::from_millis(50 + seed % 341);
    println!("row 1: seed={seed} (ATOMIC_FAULT_SEED={seed} replays it) kill_after={kill_after:?}");
    let fault = Fault::new().await;
    // Short requests, so a claim held by a killed request goes stale within seconds.
    let short = [("REQUEST_TIMEOUT", "5s")];
    let (_worker, _) = fault.start_with("worker", None, &short).await;
    let (mut api_process, api) = fault.start_with("api", None, &short).await;
    let account = fault.merchant(&api).await;

    let mut clients = Vec::new();
    for i in 0..N {
        let (http, api, account) = (fault.http.clone(), api.clone(), account.clone());
        // Spread over 400 ms, so the seeded kill lands among them.
        let start = Duration::from_millis(2 * i as u64);
        clients.push(tokio::spawn(async move {
            tokio::time::sleep(start).await;
            try_pay(&http, &api, &account, i).await
        }));
    }
    tokio::time::sleep(kill_after).await;
    api_process.start_kill().unwrap();
    api_process.wait().await.unwrap();
    let mut seen: Vec<Option<String>> = Vec::new();
    for client in clients {
        seen.push(client.await.unwrap());
    }
    let answered_before_kill = seen.iter().flatten().count();
    let unanswered_at_kill = N - answered_before_kill;
    assert!(
        unanswered_at_kill > 0,
        "the kill at {kill_after:?} cut no request off: all {N} were answered before it"
    );
    let stored_at_kill = fault.count("SELECT count(*) FROM payments").await;

    let (_api, api) = fault.start_with("api", None, &short).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Every key is sent again (same key, same body): a replay for those answered before the
    // kill, which must name the same payment; a first answer for the others.
    let mut final_ids: Vec<Option<String>> = vec![None; N];
    while final_ids.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "keys still without a definitive answer after 60 s"
        );
        for (i, id) in final_ids.iter_mut().enumerate() {
            if id.is_none() {
                *id = try_pay(&fault.http, &api, &account, i).await;
            }
        }
        if final_ids.iter().any(Option::is_none) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // One payment per key, and each 202 seen before the kill named that very payment.
    assert_eq!(fault.count("SELECT count(*) FROM payments").await, N as i64);
    let mut mismatched = 0;
    for (before, after) in seen.iter().zip(&final_ids) {
        if let Some(before) = before
            && Some(before) != after.as_ref()
        {
            mismatched += 1;
        }
    }
    assert_eq!(
        mismatched, 0,
        "a 202 seen before the kill named another payment"
    );
    // Every 202 (before the kill and after) looked up by its id: stored, under its key and
    // amount.
    let acked: Vec<Acked> = seen
        .iter()
        .chain(&final_ids)
        .enumerate()
        .filter_map(|(n, id)| {
            let i = n % N;
            id.as_ref().map(|id| Acked {
                key: format!("row1-{i}"),
                id: id.clone(),
                amount: 1_000 + i as i64,
            })
        })
        .collect();
    let durable = assert_acked_stored(fault.store.pool(), &acked).await;
    let took = fault
        .until("every payment terminal", T_HEAL, || async {
            fault.open().await == 0
        })
        .await;
    fault.assert_books(&account, N as i64).await;
    println!(
        "row 1: seed={seed} creates={N} answered_before_kill={answered_before_kill} \
         unanswered_at_kill={unanswered_at_kill} stored_at_kill={stored_at_kill} \
         payments={N} acked_looked_up_by_id={durable} seen_but_missing=0 terminal_after={took:?}"
    );
}

/// Row 5: two worker processes race for the same payments. One pauses 1.5 s after each claim
/// (`worker.after_claim=sleep1500`), longer than its 1 s lease, so the other takes the same
/// jobs over (Redis reclaims them, the database's compare-and-set hands over the lease) and
/// settles them. When the slow one wakes, its settlement finds the lease gone and writes
/// nothing. Every payment is posted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_racing_for_the_same_jobs_post_each_payment_once() {
    const N: usize = 100;
    let fault = Fault::new().await;
    let account = fault.backlog_of(N).await;
    let lease = [("WORKER_LEASE", "1s")];
    let slow_logs: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (_slow, _) = fault
        .start_logged(
            "worker",
            Some("worker.after_claim=sleep1500"),
            &lease,
            slow_logs.clone(),
        )
        .await;
    // Let the slow worker claim first, then start the fast one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_fast, _) = fault.start_with("worker", None, &lease).await;
    let took = fault
        .until("every payment terminal", T_HEAL, || async {
            fault.open().await == 0
        })
        .await;
    // Give the slow worker time to wake and find its lease gone.
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    fault.assert_books(&account, N as i64).await;
    let lost = slow_logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("lease lost"))
        .count();
    assert!(
        lost >= 1,
        "the race was exercised: the slow worker lost at least one lease"
    );
    println!(
        "row 5: payments={N} lease=1s slow_worker_pause=1.5s leases_lost_by_slow_worker={lost} \
         terminal_after={took:?} duplicates=0"
    );
}
