//! A key revoked through one server process fails at once for key management on every other
//! process sharing the database (API.md: key management never trusts a cached key), so a
//! revoked key can never mint its own replacement or revoke others in its cache window. Other
//! routes may trust it for at most `API_KEY_CACHE_TTL`, which the test makes long so the
//! window is certainly open.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use atomic_postgres::testkit::TestDatabase;
use common::{KEY, KEY_HASH, server, wait_listening};
use serde_json::{Value, json};
use tokio::process::Child;

async fn start(db: &TestDatabase) -> (Child, String) {
    let mut child = server()
        .env("ROLE", "both")
        .env("DATABASE_URL", db.url())
        .env("MERCHANT_API_KEY_HASH", KEY_HASH)
        .env("RATE_LIMIT_GLOBAL", "off")
        .env("RATE_LIMIT_PAYMENTS", "off")
        .env("API_KEY_CACHE_TTL", "60s")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_process_cannot_manage_keys_on_another() {
    let db = TestDatabase::create().await;
    let (_a, one) = start(&db).await;
    let (_b, other) = start(&db).await;
    let http = reqwest::Client::new();
    let onboarded: Value = http
        .post(format!("{one}/merchants"))
        .bearer_auth(KEY)
        .json(&json!({"name": "Revoked Shop", "currency": "USD"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = onboarded["data"]["apiKey"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let key_id = onboarded["data"]["apiKey"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
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
