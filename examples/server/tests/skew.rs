//! TEST-MATRIX row 15: clock skew. Two API processes run ten minutes ahead of and behind the
//! machine's clock (`ATOMIC_CLOCK_SKEW`, test builds only), and so do two workers, all on one
//! PostgreSQL and one Redis. Nothing that decides anything may read those clocks: leases and
//! their expiry and idempotency windows use the database's clock, limiter windows Redis's. So
//! no worker takes a lease over early, a key answered by one API replays on the other, 50
//! concurrent duplicates across both make one payment, the two APIs share each rate-limit
//! window (at most L per window, not 2L), and every payment settles once.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fault::{Fault, KEY};
use serde_json::{Value, json};

/// The idempotency window, shorter than the skew: a window measured on a process clock
/// instead of the database's would end 5 minutes before it began for a key answered by the
/// API behind, and a replay would make a second payment. (With the default 24 h window, ten
/// minutes of skew would shorten it unseen.)
const TTL: (&str, &str) = ("IDEMPOTENCY_TTL", "5m");
const AHEAD: [(&str, &str); 3] = [
    ("ATOMIC_CLOCK_SKEW", "+10m"),
    ("RATE_LIMIT_PAYMENTS", "20/2s"),
    TTL,
];
const BEHIND: [(&str, &str); 3] = [
    ("ATOMIC_CLOCK_SKEW", "-10m"),
    ("RATE_LIMIT_PAYMENTS", "20/2s"),
    TTL,
];

async fn post(
    http: &reqwest::Client,
    api: &str,
    key: Option<&str>,
    body: &Value,
) -> (u16, Value, Option<u64>) {
    let mut request = http
        .post(format!("{api}/payments"))
        .bearer_auth(KEY)
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let reply = request.send().await.unwrap();
    let status = reply.status().as_u16();
    let remaining = reply
        .headers()
        .get("ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (status, reply.json().await.unwrap_or(Value::Null), remaining)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_process_clocks_change_no_decision() {
    let fault = Fault::new().await;
    let (_ahead, api_ahead) = fault.start_with("api", None, &AHEAD).await;
    let (_behind, api_behind) = fault.start_with("api", None, &BEHIND).await;
    let account = fault.merchant(&api_ahead).await;
    let http = fault.http.clone();

    // Idempotency: answered ahead, replayed behind, and the reverse, same payment each time
    // (the window, 5 min, is shorter than the 10 min skew).
    let body =
        json!({"merchantId": account, "amount": 500, "currency": "USD", "source": "tok_visa"});
    for (key, first_api, then_api) in [
        ("skew-1", &api_ahead, &api_behind),
        ("skew-2", &api_behind, &api_ahead),
    ] {
        let (s1, first, _) = post(&http, first_api, Some(key), &body).await;
        let (s2, replay, _) = post(&http, then_api, Some(key), &body).await;
        assert_eq!((s1, s2), (202, 202), "{key}: {first} {replay}");
        assert_eq!(
            first["data"]["id"], replay["data"]["id"],
            "{key}: the window is not shortened"
        );
    }

    // 50 concurrent duplicates split over both APIs: one payment.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let api = if i % 2 == 0 {
            api_ahead.clone()
        } else {
            api_behind.clone()
        };
        let (http, body) = (http.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            post(&http, &api, Some("skew-dup"), &body).await
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        let (status, reply, _) = task.await.unwrap();
        assert!(
            status == 202 || status == 409 || status == 429,
            "{status} {reply}"
        );
        if status == 202 {
            ids.insert(reply["data"]["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        ids.len(),
        1,
        "one payment for 50 duplicates across skewed APIs"
    );

    // Workers ten minutes apart; the one behind pauses 500 ms after each claim, well inside
    // its 2 s lease: if leases used process clocks, the one ahead would take them over.
    let slow_logs: Arc<Mutex<Vec<String>>> = Arc::default();
    let (_slow, _) = fault
        .start_logged(
            "worker",
            Some("worker.after_claim=sleep500"),
            &[("ATOMIC_CLOCK_SKEW", "-10m")],
            slow_logs.clone(),
        )
        .await;
    let (_fast, _) = fault
        .start_with("worker", None, &[("ATOMIC_CLOCK_SKEW", "+10m")])
        .await;

    // The limiter: both APIs hammered at once for about three 2 s windows.
    let started = Instant::now();
    let run_for = Duration::from_millis(4_500);
    let mut hammer = Vec::new();
    for c in 0..20 {
        let api = if c % 2 == 0 {
            api_ahead.clone()
        } else {
            api_behind.clone()
        };
        let (http, body) = (http.clone(), body.clone());
        hammer.push(tokio::spawn(async move {
            let mut remaining = Vec::new();
            while started.elapsed() < run_for {
                // A payment each time it is allowed, for the workers.
                let (status, _, left) = post(&http, &api, None, &body).await;
                match status {
                    202 => remaining.push(left.unwrap()),
                    429 => {}
                    other => panic!("unexpected {other}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            remaining
        }));
    }
    let mut handed_out = [0u32; 20];
    let mut allowed = 0;
    for task in hammer {
        for left in task.await.unwrap() {
            handed_out[left as usize] += 1;
            allowed += 1;
        }
    }
    let elapsed = started.elapsed();
    let windows = elapsed.as_millis().div_ceil(2_000) as u32 + 1;
    let most = *handed_out.iter().max().unwrap();
    assert!(
        most <= windows,
        "a remaining count was handed out {most} times in {windows} windows: the APIs kept separate windows"
    );

    // Everything settles, once; no lease was taken over early.
    let took = fault
        .until(
            "every payment terminal",
            Duration::from_secs(30),
            || async { fault.open().await == 0 },
        )
        .await;
    let payments = fault.count("SELECT count(*) FROM payments").await;
    fault.assert_books(&account, payments).await;
    let (lost, settled_by_slow) = {
        let logs = slow_logs.lock().unwrap();
        let count = |what: &str| logs.iter().filter(|l| l.contains(what)).count();
        (count("lease lost"), count("payment settled"))
    };
    assert_eq!(lost, 0, "premature reclaims");
    assert!(payments >= 20, "{payments} payments");
    assert!(
        settled_by_slow > 0,
        "the slow worker settled some (it was exercised)"
    );
    println!(
        "row 15: skews=+10m/-10m replay_across_apis=same_id duplicates_50=1_payment \
         limiter allowed={allowed} in {windows} windows (L=20, max uses of one count {most}) \
         premature_reclaims=0 payments={payments} settled_by_slow_worker={settled_by_slow} \
         settled_in={took:?} audit=clean"
    );
}
