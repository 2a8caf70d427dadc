//! Crashes between two steps of the money path (TEST-MATRIX rows 3 and 4, and the window of row
//! 1 between storing a payment and enqueueing it). A server process is started with a failpoint
//! armed (`ATOMIC_FAILPOINTS`, compiled into test builds only) and aborts itself at that exact
//! step, as `kill -9` would; a second process without it then recovers. Each test ends with
//! every payment terminal, one posting per SUCCESS, none on anything else, and a clean books
//! audit. The production shape: PostgreSQL and Redis, API and worker as separate processes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::fault::{Fault, LEASE, PAYMENTS, SWEEP};
use tokio::process::Child;

const SIGABRT: i32 = 6;

/// Waits for a process to abort itself at its failpoint.
async fn aborted(child: &mut Child) {
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the failpoint fires within 30 s")
        .unwrap();
    assert_eq!(status.signal(), Some(SIGABRT), "{status:?}");
}

/// Row 3: the worker dies after its settlement committed and before it acknowledged the jobs.
/// The jobs come back to the next worker, which finds the payments finished and only acks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dead_after_the_settlement_commit_before_the_ack_posts_nothing_twice() {
    let fault = Fault::new().await;
    let account = fault.backlog().await;

    let (mut worker, _) = fault
        .start("worker", Some("worker.after_settle_commit"))
        .await;
    aborted(&mut worker).await;
    let settled_at_crash = fault
        .count("SELECT count(*) FROM payments WHERE status IN ('SUCCESS', 'FAILED')")
        .await;
    let unacked_at_crash = fault.unacked().await;
    assert!(settled_at_crash >= 1, "the settlement committed");
    assert!(
        unacked_at_crash >= settled_at_crash,
        "the settled jobs were never acked ({unacked_at_crash} unacked, {settled_at_crash} settled)"
    );

    // Each job the dead worker took is pending, delivered once.
    let at_crash = fault.deliveries().await;
    assert_eq!(at_crash.len() as i64, unacked_at_crash);
    assert!(
        at_crash.iter().all(|(_, delivered)| *delivered == 1),
        "pending at the crash, each delivered once: {at_crash:?}"
    );

    // The next worker pauses after each claim, before it acks: a job it took back from the
    // dead worker is seen pending with its second delivery.
    let (_worker, _) = fault
        .start("worker", Some("worker.after_claim=sleep1000"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let redelivered = loop {
        let most = fault
            .deliveries()
            .await
            .iter()
            .map(|(_, delivered)| *delivered)
            .max()
            .unwrap_or(0);
        if most >= 2 {
            break most;
        }
        assert!(
            Instant::now() < deadline,
            "no job seen pending with delivery count >= 2 (XPENDING) within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    fault
        .until(
            "every payment terminal",
            Duration::from_secs(30),
            || async { fault.open().await == 0 },
        )
        .await;
    // The redelivered jobs were acked: nothing is left pending.
    fault
        .until(
            "the pending jobs acked",
            Duration::from_secs(30),
            || async { fault.unacked().await == 0 },
        )
        .await;
    fault.assert_books(&account, PAYMENTS as i64).await;
    // Posted once: each SUCCESS has exactly one DEBIT and one CREDIT entry, a FAILED none.
    let entries: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT p.status, p.id::text, \
                count(*) FILTER (WHERE e.direction = 'DEBIT'), \
                count(*) FILTER (WHERE e.direction = 'CREDIT') \
         FROM payments p LEFT JOIN ledger_entries e ON e.payment_id = p.id \
         GROUP BY p.id, p.status",
    )
    .fetch_all(fault.store.pool())
    .await
    .unwrap();
    assert_eq!(entries.len(), PAYMENTS);
    for (status, id, debits, credits) in &entries {
        let expected = if status == "SUCCESS" { 1 } else { 0 };
        assert_eq!(
            (*debits, *credits),
            (expected, expected),
            "payment {id} ({status}): postings"
        );
    }
    let succeeded = entries.iter().filter(|(s, ..)| s == "SUCCESS").count();
    println!(
        "row 3: payments={PAYMENTS} settled_at_crash={settled_at_crash} \
         unacked_at_crash={unacked_at_crash} max_delivery_count_before_ack={redelivered} \
         success={succeeded} postings_per_success=1 DEBIT + 1 CREDIT duplicates=0"
    );
}

/// Row 4: the worker dies after claiming (PROCESSING committed under its lease) and before
/// posting anything. Once the lease runs out the payments are claimed again and settled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dead_after_the_claim_is_settled_once_after_its_lease() {
    let fault = Fault::new().await;
    let account = fault.backlog().await;

    let (mut worker, _) = fault.start("worker", Some("worker.after_claim")).await;
    aborted(&mut worker).await;
    let processing = fault
        .count("SELECT count(*) FROM payments WHERE status = 'PROCESSING'")
        .await;
    let posted = fault
        .count("SELECT count(*) FROM ledger_transactions")
        .await;
    assert!(processing >= 1, "the claim committed");
    assert_eq!(posted, 0, "nothing was posted before the crash");

    let (_worker, _) = fault.start("worker", None).await;
    // Pass criterion: terminal within lease + sweep interval + 5 s of the new worker.
    let limit = LEASE + SWEEP + Duration::from_secs(5);
    let took = fault
        .until("every payment terminal", limit, || async {
            fault.open().await == 0
        })
        .await;
    fault.assert_books(&account, PAYMENTS as i64).await;
    println!(
        "row 4: payments={PAYMENTS} processing_at_crash={processing} terminal_after={took:?} \
         (limit {limit:?}) duplicates=0"
    );
}

/// Row 1's narrowest window: the process dies after the payment is stored and before its job
/// is enqueued or the 202 sent. The client retries with the same key and gets that payment;
/// the recovery sweep, not the lost job, brings it to an end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_dead_between_storing_a_payment_and_enqueueing_it_loses_nothing() {
    let fault = Fault::new().await;
    let (mut first, api) = fault
        .start("both", Some("payment.after_insert_before_enqueue@5"))
        .await;
    let account = fault.merchant(&api).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(fault.pay(&api, &account, i).await.unwrap());
    }
    assert!(
        fault.pay(&api, &account, 4).await.is_err(),
        "the fifth request gets no answer"
    );
    aborted(&mut first).await;
    let stored = fault.count("SELECT count(*) FROM payments").await;
    assert_eq!(
        stored, 5,
        "the unanswered payment was stored before the crash"
    );

    let (_second, api) = fault.start("both", None).await;
    // The retry with the same key answers with the stored payment, and creates nothing.
    let retried = fault.pay(&api, &account, 4).await.unwrap();
    let stored_id: String =
        sqlx::query_scalar("SELECT id::text FROM payments WHERE idempotency_key = 'fault-4'")
            .fetch_one(fault.store.pool())
            .await
            .unwrap();
    assert_eq!(retried, stored_id);
    ids.push(retried);
    let took = fault
        .until(
            "every payment terminal",
            Duration::from_secs(30),
            || async { fault.open().await == 0 },
        )
        .await;
    fault.assert_books(&account, 5).await;
    println!(
        "payment.after_insert_before_enqueue: stored=5 answered_after_retry=5 terminal_after={took:?} duplicates=0"
    );
}
