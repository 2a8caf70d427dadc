//! A key revoked through one server process fails at once for key management on every other
//! process sharing the database (API.md: key management never trusts a cached key), so a
//! revoked key can never mint its own replacement or revoke others in its cache window. Other
//! routes may trust it for at most `API_KEY_CACHE_TTL`, which the first test makes long so the
//! window is certainly open; the second measures that window on an ordinary route.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use atomic_postgres::testkit::TestDatabase;
use common::{KEY, KEY_HASH, onboard, server, wait_listening};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::Child;

async fn start(db: &TestDatabase, cache_ttl: &str) -> (Child, String) {
    let mut child = server()
        .env("ROLE", "both")
        .env("DATABASE_URL", db.url())
        .env("MERCHANT_API_KEY_HASH", KEY_HASH)
        .env("RATE_LIMIT_GLOBAL", "off")
        .env("RATE_LIMIT_PAYMENTS", "off")
        .env("API_KEY_CACHE_TTL", cache_ttl)
        .spawn()
        .unwrap();
    let (address, _) = wait_listening(&mut child).await;
    (child, format!("http://{address}/api/v1"))
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: &str,
) -> (u16, Value) {
    let reply = http
        .request(method, url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = reply.status().as_u16();
    (status, reply.json().await.unwrap_or(Value::Null))
}

/// A new merchant's raw API key and its id, onboarded through `api`.
async fn merchant_key(http: &reqwest::Client, api: &str) -> (String, String) {
    let onboarded = onboard(http, api, KEY, "Revoked Shop").await;
    let field = |name: &str| {
        onboarded["data"]["apiKey"][name]
            .as_str()
            .unwrap()
            .to_owned()
    };
    (field("key"), field("id"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_process_cannot_manage_keys_on_another() {
    let db = TestDatabase::create().await;
    let (_a, one) = start(&db, "60s").await;
    let (_b, other) = start(&db, "60s").await;
    let http = reqwest::Client::new();
    let (key, key_id) = merchant_key(&http, &one).await;
    // A second key of the merchant, which the revoked one will try to revoke.
    let (status, second) = call(
        &http,
        reqwest::Method::POST,
        format!("{other}/api-keys"),
        &key,
    )
    .await;
    assert_eq!(status, 201);
    let second_id = second["data"]["id"].as_str().unwrap().to_owned();
    // The other process now remembers the key as valid.
    let (status, _) = call(
        &http,
        reqwest::Method::GET,
        format!("{other}/payments"),
        &key,
    )
    .await;
    assert_eq!(status, 200);

    let (status, _) = call(
        &http,
        reqwest::Method::DELETE,
        format!("{one}/api-keys/{key_id}"),
        KEY,
    )
    .await;
    assert_eq!(status, 200, "revoked through the first process");

    let (status, minted) = call(
        &http,
        reqwest::Method::POST,
        format!("{other}/api-keys"),
        &key,
    )
    .await;
    assert_eq!(
        status, 401,
        "a revoked key minted a replacement on another process: {minted}"
    );
    let (status, revoked) = call(
        &http,
        reqwest::Method::DELETE,
        format!("{other}/api-keys/{second_id}"),
        &key,
    )
    .await;
    assert_eq!(
        status, 401,
        "a revoked key revoked another key on another process: {revoked}"
    );
    let keys: Vec<Value> =
        sqlx::query_scalar("SELECT to_jsonb(k) FROM api_keys k WHERE revoked_at IS NULL")
            .fetch_all(db.store().pool())
            .await
            .unwrap();
    assert_eq!(keys.len(), 1, "only the second key is active: {keys:?}");
}

/// `GET /payments` on `api` with `key`: an ordinary route, which may trust a cached key.
async fn list_payments(http: &reqwest::Client, api: &str, key: &str) -> (u16, Value) {
    call(http, reqwest::Method::GET, format!("{api}/payments"), key).await
}

/// Row 24 on an ordinary route: with `API_KEY_CACHE_TTL=1s` on two processes, a key revoked
/// through one is 401 on every request started after the revoke on that process (it forgets
/// the key at once), and 401 on the other no later than TTL + 1 s after the revoke was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_401_everywhere_within_the_cache_ttl() {
    const TTL: Duration = Duration::from_secs(1);
    const BOUND: Duration = Duration::from_secs(2);
    let db = TestDatabase::create().await;
    let (_a, one) = start(&db, "1s").await;
    let (_b, other) = start(&db, "1s").await;
    let http = reqwest::Client::new();
    let (key, key_id) = merchant_key(&http, &one).await;
    // Both processes now hold the key in their caches.
    for api in [&one, &other] {
        let (status, _) = list_payments(&http, api, &key).await;
        assert_eq!(status, 200, "{api}: the key works before the revoke");
    }

    let revoked_at = Instant::now();
    let (status, _) = call(
        &http,
        reqwest::Method::DELETE,
        format!("{one}/api-keys/{key_id}"),
        KEY,
    )
    .await;
    assert_eq!(status, 200, "revoked through the first process");
    let answered_at = revoked_at.elapsed();

    // The other process, polled from now on until the first 401 (its cache may still trust
    // the key for up to the TTL), while the revoking process is asked in parallel.
    let polled = {
        let (http, other, key) = (http.clone(), other.clone(), key.clone());
        tokio::spawn(async move {
            let deadline = revoked_at + Duration::from_secs(5);
            loop {
                let (status, _) = list_payments(&http, &other, &key).await;
                if status == 401 {
                    return revoked_at.elapsed();
                }
                assert_eq!(status, 200, "200 (cached) or 401 only");
                assert!(
                    Instant::now() < deadline,
                    "the other process still accepts the key 5 s after the revoke"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // The revoking process: every request started after the revoke is 401, at once, for
    // longer than the TTL.
    let mut statuses = Vec::new();
    while revoked_at.elapsed() < TTL + Duration::from_millis(200) {
        let (status, body) = list_payments(&http, &one, &key).await;
        statuses.push(status);
        if status == 401 {
            assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        }
    }
    let accepted = statuses.iter().filter(|s| **s != 401).count();
    assert_eq!(
        accepted, 0,
        "not 401 after the revoke on the revoking process: {statuses:?}"
    );

    let first_401 = polled.await.unwrap();
    eprintln!(
        "revoke answered in {answered_at:?}; {} requests on the revoking process, all 401; \
         first 401 on the other process {first_401:?} after the revoke",
        statuses.len()
    );
    assert!(
        first_401 <= BOUND,
        "first 401 on the other process {first_401:?} after the revoke (bound {BOUND:?})"
    );
    // And it stays 401 there.
    for _ in 0..20 {
        let (status, _) = list_payments(&http, &other, &key).await;
        assert_eq!(status, 401, "accepted again on the other process");
    }
}
