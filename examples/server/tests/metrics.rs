//! Prometheus metrics (API.md, "Operations"): the server binary on PostgreSQL serves
//! `GET /metrics` on `METRICS_ADDR`, apart from the API; a small flow moves every counter by
//! exactly what it did. A `METRICS_ADDR` that cannot be bound stops start-up with one line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atomic_postgres::testkit::TestDatabase;
use common::receiver::{Answer, Receiver};
use common::{Answered, KEY, KEY_HASH, merchant_account, server, wait_listening_keeping};
use serde_json::{Value, json};

/// A series (name, labels) and the value it must have.
type Expected = (&'static str, Vec<(&'static str, &'static str)>, f64);

/// One scrape: every sample, keyed by its series as written (`name{labels}`).
#[derive(Debug)]
struct Scrape(HashMap<String, f64>);

impl Scrape {
    /// Parses the text format: comments skipped, `series value` per line.
    fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a sample line");
                (series.to_owned(), value.parse().expect("a number"))
            })
            .collect();
        Self(samples)
    }

    /// The value of `name` with exactly these labels (0 when the series is absent).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .find(|(series, _)| same_series(series, name, labels))
            .map_or(0.0, |(_, value)| *value)
    }
}

fn same_series(series: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    let (found_name, found_labels) = match series.split_once('{') {
        Some((n, rest)) => (n, rest.trim_end_matches('}')),
        None => (series, ""),
    };
    let mut found: Vec<&str> = found_labels.split(',').filter(|l| !l.is_empty()).collect();
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    found.sort_unstable();
    wanted.sort_unstable();
    found_name == name && found == wanted.iter().map(String::as_str).collect::<Vec<_>>()
}

/// The server on a database of its own, scraping on a port of its own; (API base, metrics URL).
async fn start(db: &TestDatabase) -> (tokio::process::Child, String, String) {
    let mut child = server()
        .env("DATABASE_URL", db.url())
        .env("MERCHANT_API_KEY_HASH", KEY_HASH)
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("RATE_LIMIT_GLOBAL", "off")
        .env("RATE_LIMIT_PAYMENTS", "4/1m")
        .env("SWEEP_INTERVAL", "200ms")
        .env("WEBHOOK_ALLOW_PRIVATE", "true")
        .env("WEBHOOK_RETRY_SCHEDULE", "1s")
        .spawn()
        .unwrap();
    let logs: Arc<Mutex<Vec<String>>> = Arc::default();
    let (address, _) = wait_listening_keeping(&mut child, Some(logs.clone())).await;
    let metrics = logs
        .lock()
        .unwrap()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|log| log["fields"]["message"] == "atomic-server listening")
        .and_then(|log| log["fields"]["metrics"].as_str().map(str::to_owned))
        .expect("the listening record names the metrics URL");
    (child, format!("http://{address}/api/v1"), metrics)
}

async fn post(
    http: &reqwest::Client,
    url: String,
    body: &Value,
    key: Option<&str>,
) -> (u16, Value) {
    let mut request = http.post(url).bearer_auth(KEY).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let reply = request.send().await.unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap())
}

/// Polls `url` until the object's status is one of `ends`.
async fn wait_for(http: &reqwest::Client, url: String, ends: &[&str]) -> String {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let body: Value = http.get(&url).bearer_auth(KEY).answer().await;
            // A payment comes as `data.payment`, a refund as `data`.
            let object = body["data"].get("payment").unwrap_or(&body["data"]);
            let status = object["status"].as_str().unwrap_or_default().to_owned();
            if ends.contains(&status.as_str()) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{url} did not reach {ends:?}"))
}

async fn scrape(http: &reqwest::Client, url: &str) -> (String, Scrape) {
    let reply = http.get(url).send().await.unwrap();
    assert_eq!(reply.status(), 200);
    assert!(
        reply.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "Prometheus text format"
    );
    let text = reply.text().await.unwrap();
    let parsed = Scrape::parse(&text);
    (text, parsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_moves_each_counter_by_exactly_what_it_did() {
    let db = TestDatabase::create().await;
    let (mut child, api, metrics_url) = start(&db).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let host_port = |url: &str| url.split('/').nth(2).unwrap().to_owned();
    assert_ne!(
        host_port(&metrics_url),
        host_port(&api),
        "a listener of its own"
    );
    let on_api = http
        .get(api.replace("/api/v1", "/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(on_api.status(), 404, "the API's port serves no metrics");

    // Two endpoints: one takes every success, one refuses every failure (1 retry, then FAILED).
    let ok = Receiver::start(Answer::Status(200)).await;
    let refusing = Receiver::start(Answer::Status(500)).await;
    for (receiver, event) in [(&ok, "payment.succeeded"), (&refusing, "payment.failed")] {
        let (status, body) = post(
            &http,
            format!("{api}/webhook-endpoints"),
            &json!({"url": receiver.url(), "events": [event]}),
            None,
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }

    let account = merchant_account(&http, &api, "Metrics Shop").await;
    let pay = |source: &str| json!({"merchantId": account, "amount": 1_000, "currency": "USD", "source": source});
    let mut ids = Vec::new();
    for (source, key) in [
        ("tok_visa", Some("order-1")),
        ("tok_visa", None),
        ("tok_chargeDeclined", None),
    ] {
        let (status, body) = post(&http, format!("{api}/payments"), &pay(source), key).await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["data"]["id"].as_str().unwrap().to_owned());
    }
    // The same request again under its key: a replay, no payment.
    let (status, body) = post(
        &http,
        format!("{api}/payments"),
        &pay("tok_visa"),
        Some("order-1"),
    )
    .await;
    assert_eq!(
        (status, body["data"]["id"].as_str().unwrap()),
        (202, ids[0].as_str())
    );
    // The fifth POST /payments this minute: the payments limiter (4/1m) refuses it.
    let (status, _) = post(&http, format!("{api}/payments"), &pay("tok_visa"), None).await;
    assert_eq!(status, 429);

    for (id, end) in ids.iter().zip(["SUCCESS", "SUCCESS", "FAILED"]) {
        let got = wait_for(
            &http,
            format!("{api}/payments/{id}"),
            &["SUCCESS", "FAILED"],
        )
        .await;
        assert_eq!(got, end);
    }
    let (status, body) = post(
        &http,
        format!("{api}/payments/{}/refunds", ids[0]),
        &json!({"amount": 400}),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let refund = body["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        wait_for(
            &http,
            format!("{api}/refunds/{refund}"),
            &["SUCCESS", "FAILED"]
        )
        .await,
        "SUCCESS"
    );

    // Each counter exactly; waited for, since webhooks and the sweep's gauges come after.
    let expected: Vec<Expected> = vec![
        (
            "atomic_payments_created_total",
            vec![("capture_method", "automatic")],
            3.0,
        ),
        (
            "atomic_payments_created_total",
            vec![("capture_method", "manual")],
            0.0,
        ),
        (
            "atomic_payments_finished_total",
            vec![("status", "SUCCESS"), ("reason", "none")],
            2.0,
        ),
        (
            "atomic_payments_finished_total",
            vec![("status", "FAILED"), ("reason", "card_declined")],
            1.0,
        ),
        ("atomic_refunds_created_total", vec![], 1.0),
        (
            "atomic_refunds_finished_total",
            vec![("status", "SUCCESS")],
            1.0,
        ),
        ("atomic_idempotency_replays_total", vec![], 1.0),
        (
            "atomic_rate_limited_total",
            vec![("policy", "payments")],
            1.0,
        ),
        (
            "atomic_http_requests_total",
            vec![
                ("method", "POST"),
                ("route", "/api/v1/payments"),
                ("status", "202"),
            ],
            4.0,
        ),
        (
            "atomic_http_requests_total",
            vec![
                ("method", "POST"),
                ("route", "/api/v1/payments"),
                ("status", "429"),
            ],
            1.0,
        ),
        (
            "atomic_http_requests_total",
            vec![
                ("method", "POST"),
                ("route", "/api/v1/payments/{id}/refunds"),
                ("status", "202"),
            ],
            1.0,
        ),
        (
            "atomic_http_request_duration_seconds_count",
            vec![("method", "POST"), ("route", "/api/v1/payments")],
            5.0,
        ),
        (
            "atomic_webhook_deliveries_total",
            vec![("outcome", "delivered")],
            2.0,
        ),
        (
            "atomic_webhook_deliveries_total",
            vec![("outcome", "failed_attempt")],
            1.0,
        ),
        (
            "atomic_webhook_deliveries_total",
            vec![("outcome", "failed")],
            1.0,
        ),
        ("atomic_open_payments", vec![], 0.0),
        ("atomic_oldest_open_payment_age_seconds", vec![], 0.0),
    ];
    let mismatches = |scrape: &Scrape| {
        expected
            .iter()
            .filter(|(name, labels, want)| scrape.get(name, labels) != *want)
            .map(|(name, labels, want)| {
                format!(
                    "{name}{labels:?}: want {want}, got {}",
                    scrape.get(name, labels)
                )
            })
            .collect::<Vec<_>>()
    };
    let mut last = String::new();
    let mut wrong = Vec::new();
    for _ in 0..100 {
        let (text, scraped) = scrape(&http, &metrics_url).await;
        // The gauges exist only once a sweep has run after the flow.
        let swept = text.contains("\natomic_open_payments ");
        wrong = mismatches(&scraped);
        last = text;
        if swept && wrong.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(wrong.is_empty(), "{wrong:#?}\n{last}");

    let scraped = Scrape::parse(&last);
    // Settlement ran in batches: at least one, covering the three payments and the refund.
    assert!(
        scraped.get("atomic_settlement_batch_size_count", &[]) >= 1.0,
        "{last}"
    );
    assert!(
        scraped.get("atomic_settlement_batch_size_sum", &[]) >= 4.0,
        "{last}"
    );
    assert!(
        scraped.get("atomic_settlement_duration_seconds_count", &[]) >= 1.0,
        "{last}"
    );
    // Group commit carried the three payments, each once, and the replay, whose statement found
    // its key taken and wrote nothing for it: four requests, in groups of at least one.
    assert_eq!(
        scraped.get("atomic_db_group_size_sum", &[("statement", "insert")]),
        4.0,
        "{last}"
    );
    assert!(
        (1.0..=4.0)
            .contains(&scraped.get("atomic_db_group_size_count", &[("statement", "insert")])),
        "{last}"
    );
    // The pool is reported, and it has connections.
    let pool = scraped.get("atomic_db_pool_connections", &[("state", "idle")])
        + scraped.get("atomic_db_pool_connections", &[("state", "in_use")]);
    assert!(pool >= 1.0, "{last}");
    // Routes are templates: no payment id in any label; help text is there.
    for id in &ids {
        assert!(
            !last.contains(id.as_str()),
            "a raw path reached a label:\n{last}"
        );
    }
    assert!(
        last.contains("# TYPE atomic_http_request_duration_seconds histogram"),
        "{last}"
    );
    assert!(
        last.contains("# HELP atomic_payments_finished_total"),
        "{last}"
    );

    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[tokio::test]
async fn a_metrics_address_that_cannot_be_bound_stops_start_up_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = server().env("METRICS_ADDR", &addr).output().await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "atomic-server: could not listen on METRICS_ADDR {addr}:"
        )),
        "{stderr}"
    );
    drop(taken);
}
