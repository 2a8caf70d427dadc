//! Process faults around the worker (TEST-MATRIX rows 2 and 9), in the production shape:
//! API and worker as separate processes on PostgreSQL and Redis. Each test ends with every
//! payment terminal, one posting per SUCCESS and none otherwise, the merchant's balance equal
//! to its SUCCESS amounts, and a clean books audit.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use atomic_redis::testkit::RedisServer;
use common::fault::{Fault, LEASE, SWEEP};

/// T_heal of the matrix for this harness: lease + sweep interval + 30 s.
const T_HEAL: Duration = LEASE
    .saturating_add(SWEEP)
    .saturating_add(Duration::from_secs(30));

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
