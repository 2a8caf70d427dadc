//! TEST-MATRIX row 36: a worker process killed with SIGKILL while a backlog of 500 mixed jobs
//! settles (200 charges, 150 captures, 150 refunds), API and worker as separate processes on
//! PostgreSQL and Redis. Its held jobs come back after their lease; every job ends terminal,
//! each capture and each refund is posted exactly once, and the books audit (L13, L14) is clean.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use atomic_core::ports::LedgerAudit;
use common::books::assert_postings_match_payments;
use common::fault::{Fault, KEY, T_HEAL};
use serde_json::{Value, json};

const CHARGES: usize = 200;
const CAPTURES: usize = 150;
const REFUNDS: usize = 150;
const OPEN_WORK: &str = "SELECT (SELECT count(*) FROM payments WHERE status IN ('PENDING', 'PROCESSING')) \
     + (SELECT count(*) FROM refunds WHERE status IN ('PENDING', 'PROCESSING'))";

async fn post(fault: &Fault, url: String, key: String, body: Value) -> Value {
    let reply = fault
        .http
        .post(url)
        .bearer_auth(KEY)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = reply.status().as_u16();
    let body: Value = reply.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body["data"].clone()
}

async fn pay(fault: &Fault, api: &str, account: &str, i: usize, manual: bool) -> String {
    let method = if manual { "manual" } else { "automatic" };
    let body = json!({"merchantId": account, "amount": 1_000 + i, "currency": "USD",
                      "source": "tok_visa", "captureMethod": method});
    post(
        fault,
        format!("{api}/payments"),
        format!("pay-{method}-{i}"),
        body,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn until_no_open_work(fault: &Fault, within: Duration) -> Duration {
    fault
        .until("no open payment or refund", within, || async {
            fault.count(OPEN_WORK).await == 0
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_captures_and_refunds_settle_posts_each_once() {
    let fault = Fault::new().await;
    // Payments to capture and to refund, settled first by a process of both roles.
    let (mut both, api) = fault.start("both", None).await;
    let account = fault.merchant(&api).await;
    let mut manual = Vec::new();
    let mut automatic = Vec::new();
    for i in 0..CAPTURES.max(REFUNDS) {
        manual.push(pay(&fault, &api, &account, i, true).await);
        automatic.push(pay(&fault, &api, &account, i, false).await);
    }
    until_no_open_work(&fault, Duration::from_secs(60)).await;
    both.kill().await.unwrap();

    // The backlog: captures, refunds and new charges, accepted by an API process alone.
    let (mut api_process, api) = fault.start("api", None).await;
    let mut wanted = HashMap::new();
    for (i, id) in manual.iter().take(CAPTURES).enumerate() {
        let amount = 1_000 + i - i % 7;
        let url = format!("{api}/payments/{id}/capture");
        post(
            &fault,
            url,
            format!("capture-{i}"),
            json!({"amount": amount}),
        )
        .await;
        wanted.insert(id.clone(), amount);
    }
    for (i, id) in automatic.iter().take(REFUNDS).enumerate() {
        let url = format!("{api}/payments/{id}/refunds");
        post(
            &fault,
            url,
            format!("refund-{i}"),
            json!({"amount": 500 + i}),
        )
        .await;
    }
    for i in 0..CHARGES {
        pay(&fault, &api, &account, 10_000 + i, false).await;
    }
    api_process.kill().await.unwrap();
    let backlog = fault.count(OPEN_WORK).await;
    assert_eq!(backlog, (CHARGES + CAPTURES + REFUNDS) as i64);

    // A worker with small batches, killed with work both done and held.
    let (mut worker, _) = fault
        .start_with("worker", None, &[("WORKER_BATCH", "4")])
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while fault.count(OPEN_WORK).await > backlog * 3 / 4 {
        assert!(Instant::now() < deadline, "a quarter not settled in 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.start_kill().unwrap(); // SIGKILL
    worker.wait().await.unwrap();
    let open_at_kill = fault.count(OPEN_WORK).await;
    assert!(open_at_kill > 0, "the kill landed before the end");

    let (_worker, _) = fault.start("worker", None).await;
    let took = until_no_open_work(&fault, T_HEAL).await;

    let posted = assert_postings_match_payments(fault.store.pool()).await;
    let audit = fault.store.audit(T_HEAL).await.unwrap();
    assert!(audit.is_clean(), "books audit:\n{audit}");
    let captured: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT id::text, amount_captured, status FROM payments WHERE capture_method = 'manual'",
    )
    .fetch_all(fault.store.pool())
    .await
    .unwrap();
    for (id, amount, status) in &captured {
        assert_eq!(status, "SUCCESS", "capture of {id}");
        assert_eq!(
            Some(*amount as usize),
            wanted.get(id).copied(),
            "capture of {id}"
        );
    }
    let refunded: i64 = fault
        .count("SELECT count(*) FROM refunds WHERE status = 'SUCCESS'")
        .await;
    assert_eq!(refunded, REFUNDS as i64);
    println!(
        "row 36: jobs={backlog} open_at_kill={open_at_kill} terminal_after_restart={took:?} \
         (T_heal {T_HEAL:?}) captures={} refunds={refunded} postings={} audit clean",
        captured.len(),
        posted.postings
    );
}
