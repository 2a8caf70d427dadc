//! `Idempotency-Key`: byte-identical replays, fingerprint mismatches, per-caller scope, errors
//! that release the key, header validation, and one payment under a concurrent burst.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Barrier;

use super::helpers::{
    Reply, TestApp, assert_error, assert_invalid_field, assert_success, balance, entries, onboard,
    payment_body, random_id, spawn_app, spawn_app_with, wait_terminal,
};

async fn post_keyed(
    app: &TestApp,
    key: &str,
    body: &str,
    idem: &str,
    request_id: Option<&str>,
) -> Reply {
    let mut request = app
        .client
        .post(app.url("/payments"))
        .bearer_auth(key)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", idem)
        .body(body.to_owned());
    if let Some(id) = request_id {
        request = request.header("X-Request-Id", id);
    }
    app.send(request).await
}

async fn payment_ids(app: &TestApp, key: &str) -> Vec<String> {
    let reply = app.get("/payments?limit=100", key).await;
    assert_success(&reply, 200);
    reply.item_ids()
}

#[tokio::test]
async fn a_replay_is_byte_identical_with_a_new_request_id() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let body = payment_body(&m.account_id, 5000, "tok_visa").to_string();
    let first = post_keyed(&app, &m.key, &body, "order-1001", Some("req-first")).await;
    assert_success(&first, 202);
    assert_eq!(
        first.header("idempotent-replayed"),
        None,
        "the first answer is not a replay"
    );
    assert_eq!(first.data()["idempotencyKey"], "order-1001");
    let id = first.data()["id"].as_str().unwrap().to_owned();

    let second = post_keyed(&app, &m.key, &body, "order-1001", Some("req-second")).await;
    assert_eq!(second.status, 202);
    assert_eq!(
        second.text, first.text,
        "byte-identical, original meta included"
    );
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        second.header("x-request-id"),
        Some("req-second"),
        "the header is the new request's"
    );
    assert_eq!(
        second.json["meta"]["requestId"], "req-first",
        "the body is the stored one"
    );

    // Still identical after the payment settled (the stored answer, not the current state).
    assert_eq!(wait_terminal(&app, &m.key, &id).await["status"], "SUCCESS");
    let third = post_keyed(&app, &m.key, &body, "order-1001", None).await;
    assert_eq!(
        (third.status, third.text.as_str()),
        (202, first.text.as_str())
    );
    assert_eq!(third.header("idempotent-replayed"), Some("true"));
    let fresh_id = third.header("x-request-id").unwrap();
    assert_ne!(fresh_id, "req-first");
    assert_ne!(fresh_id, "req-second");

    assert_eq!(payment_ids(&app, &m.key).await, vec![id], "one payment");
    assert_eq!(
        balance(&app, &m.key, &m.account_id).await,
        5000,
        "settled once"
    );
    assert_eq!(entries(&app, &m.key, &m.account_id).await.len(), 1);
}

#[tokio::test]
async fn reordered_keys_and_white_space_are_the_same_request() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let a = format!(
        r#"{{"merchantId":"{}","amount":100,"currency":"USD","source":"tok_visa"}}"#,
        m.account_id
    );
    let b = format!(
        "{{ \"source\" : \"tok_visa\",\n \"currency\":\"USD\", \"amount\": 100, \"merchantId\": \"{}\" }}",
        m.account_id
    );
    let first = post_keyed(&app, &m.key, &a, "k-reorder", None).await;
    assert_success(&first, 202);
    let second = post_keyed(&app, &m.key, &b, "k-reorder", None).await;
    assert_eq!(second.status, 202, "{}", second.text);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    assert_eq!(second.text, first.text);
    assert_eq!(payment_ids(&app, &m.key).await.len(), 1);
}

#[tokio::test]
async fn a_different_request_under_the_same_key_is_422() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let other_account = app
        .post(
            "/accounts",
            &m.key,
            &json!({"name": "Second", "currency": "USD"}),
            None,
        )
        .await;
    assert_success(&other_account, 201);
    let other_account = other_account.data()["id"].as_str().unwrap().to_owned();
    let original = payment_body(&m.account_id, 100, "tok_visa");
    let first = app
        .post("/payments", &m.key, &original, Some("k-mismatch"))
        .await;
    assert_success(&first, 202);

    let mut variants: Vec<Value> = Vec::new();
    let mut v = original.clone();
    v["amount"] = json!(101);
    variants.push(v);
    let mut v = original.clone();
    v["currency"] = json!("EUR");
    variants.push(v);
    let mut v = original.clone();
    v["merchantId"] = json!(other_account);
    variants.push(v);
    let mut v = original.clone();
    v["source"] = json!("tok_mastercard");
    variants.push(v);
    let mut v = original.clone();
    v["description"] = json!("changed");
    variants.push(v);
    let mut v = original.clone();
    v.as_object_mut().unwrap().remove("merchantId");
    variants.push(v);
    for variant in &variants {
        let reply = app
            .post("/payments", &m.key, variant, Some("k-mismatch"))
            .await;
        assert_error(&reply, 422, "idempotency_key_reused");
    }
    // Another route under the same key is another request, too.
    let account = app
        .post(
            "/accounts",
            &m.key,
            &json!({"name": "x", "currency": "USD"}),
            Some("k-mismatch"),
        )
        .await;
    assert_error(&account, 422, "idempotency_key_reused");
    // The original still replays.
    let again = app
        .post("/payments", &m.key, &original, Some("k-mismatch"))
        .await;
    assert_eq!(
        (again.status, again.text.as_str()),
        (202, first.text.as_str())
    );
    assert_eq!(payment_ids(&app, &m.key).await.len(), 1);
}

#[tokio::test]
async fn keys_are_scoped_to_the_caller() {
    let app = spawn_app().await;
    let a = onboard(&app, "A", "USD").await;
    let b = onboard(&app, "B", "USD").await;
    let ra = app
        .post(
            "/payments",
            &a.key,
            &json!({"amount": 100, "currency": "USD", "source": "tok_visa"}),
            Some("shared"),
        )
        .await;
    let rb = app
        .post(
            "/payments",
            &b.key,
            &json!({"amount": 100, "currency": "USD", "source": "tok_visa"}),
            Some("shared"),
        )
        .await;
    assert_success(&ra, 202);
    assert_success(&rb, 202);
    assert_eq!(
        rb.header("idempotent-replayed"),
        None,
        "B's request is not A's replay"
    );
    assert_ne!(ra.data()["id"], rb.data()["id"]);
    assert_eq!(ra.data()["merchantId"], a.account_id.as_str());
    assert_eq!(rb.data()["merchantId"], b.account_id.as_str());
    // Each replays its own.
    let ra2 = app
        .post(
            "/payments",
            &a.key,
            &json!({"amount": 100, "currency": "USD", "source": "tok_visa"}),
            Some("shared"),
        )
        .await;
    assert_eq!(ra2.text, ra.text);
    assert_eq!(
        payment_ids(&app, &a.key).await,
        vec![ra.data()["id"].as_str().unwrap().to_owned()]
    );
    assert_eq!(
        payment_ids(&app, &b.key).await,
        vec![rb.data()["id"].as_str().unwrap().to_owned()]
    );
    // The platform key is a caller of its own: same key, same body naming A's account, a new payment.
    let rp = app
        .post(
            "/payments",
            &app.platform_key,
            &payment_body(&a.account_id, 100, "tok_visa"),
            Some("shared"),
        )
        .await;
    assert_success(&rp, 202);
    assert_eq!(rp.header("idempotent-replayed"), None);
    assert_ne!(rp.data()["id"], ra.data()["id"]);
}

#[tokio::test]
async fn all_keys_of_a_merchant_share_one_idempotency_scope() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let minted = app.post("/api-keys", &m.key, &json!({}), None).await;
    assert_success(&minted, 201);
    let second = minted.data()["key"].as_str().unwrap().to_owned();
    let body = payment_body(&m.account_id, 100, "tok_visa");
    let first = app
        .post("/payments", &m.key, &body, Some("merchant-scope"))
        .await;
    assert_success(&first, 202);
    let replay = app
        .post("/payments", &second, &body, Some("merchant-scope"))
        .await;
    assert_eq!(
        (replay.status, replay.text.as_str()),
        (202, first.text.as_str())
    );
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    let mut other = body.clone();
    other["amount"] = json!(300);
    assert_error(
        &app.post("/payments", &second, &other, Some("merchant-scope"))
            .await,
        422,
        "idempotency_key_reused",
    );
    assert_eq!(payment_ids(&app, &m.key).await.len(), 1);
}

#[tokio::test]
async fn an_error_releases_the_key_for_a_corrected_retry() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let pk = app.platform_key.clone();

    // 404 merchant_not_found, then the corrected request under the same key.
    let wrong = app
        .post(
            "/payments",
            &pk,
            &payment_body(&random_id(), 100, "tok_visa"),
            Some("retry-1"),
        )
        .await;
    assert_error(&wrong, 404, "merchant_not_found");
    let fixed = app
        .post(
            "/payments",
            &pk,
            &payment_body(&m.account_id, 100, "tok_visa"),
            Some("retry-1"),
        )
        .await;
    assert_success(&fixed, 202);
    assert_eq!(fixed.header("idempotent-replayed"), None);

    // 422 currency_mismatch, then corrected.
    let mut eur = payment_body(&m.account_id, 100, "tok_visa");
    eur["currency"] = json!("EUR");
    assert_error(
        &app.post("/payments", &m.key, &eur, Some("retry-2")).await,
        422,
        "currency_mismatch",
    );
    let fixed = app
        .post(
            "/payments",
            &m.key,
            &payment_body(&m.account_id, 100, "tok_visa"),
            Some("retry-2"),
        )
        .await;
    assert_success(&fixed, 202);

    // 400 validation_error, then corrected.
    let bad = app
        .post(
            "/payments",
            &m.key,
            &payment_body(&m.account_id, 0, "tok_visa"),
            Some("retry-3"),
        )
        .await;
    assert_error(&bad, 400, "validation_error");
    assert_success(
        &app.post(
            "/payments",
            &m.key,
            &payment_body(&m.account_id, 1, "tok_visa"),
            Some("retry-3"),
        )
        .await,
        202,
    );

    // 403 forbidden, then corrected.
    let other = onboard(&app, "Other", "USD").await;
    let forbidden = app
        .post(
            "/payments",
            &m.key,
            &payment_body(&other.account_id, 100, "tok_visa"),
            Some("retry-4"),
        )
        .await;
    assert_error(&forbidden, 403, "forbidden");
    assert_success(
        &app.post(
            "/payments",
            &m.key,
            &payment_body(&m.account_id, 7, "tok_visa"),
            Some("retry-4"),
        )
        .await,
        202,
    );

    // An error retried unchanged runs anew: the same error, not a replay.
    let again = app
        .post(
            "/payments",
            &pk,
            &payment_body(&random_id(), 100, "tok_visa"),
            Some("retry-5"),
        )
        .await;
    assert_error(&again, 404, "merchant_not_found");
    let same = app
        .post(
            "/payments",
            &pk,
            &payment_body(&random_id(), 100, "tok_visa"),
            Some("retry-5"),
        )
        .await;
    assert_error(&same, 404, "merchant_not_found");
    assert_eq!(same.header("idempotent-replayed"), None);

    assert_eq!(payment_ids(&app, &pk).await.len(), 4);
}

#[tokio::test]
async fn a_quoted_key_is_the_same_key() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let body = payment_body(&m.account_id, 100, "tok_visa");
    let quoted = app.post("/payments", &m.key, &body, Some("\"abc\"")).await;
    assert_success(&quoted, 202);
    assert_eq!(
        quoted.data()["idempotencyKey"],
        "abc",
        "quotes are removed before use"
    );
    let bare = app.post("/payments", &m.key, &body, Some("abc")).await;
    assert_eq!(bare.status, 202);
    assert_eq!(bare.header("idempotent-replayed"), Some("true"));
    assert_eq!(bare.text, quoted.text);
    let mut other = body.clone();
    other["amount"] = json!(200);
    assert_error(
        &app.post("/payments", &m.key, &other, Some("\"abc\"")).await,
        422,
        "idempotency_key_reused",
    );
    assert_eq!(payment_ids(&app, &m.key).await.len(), 1);
}

#[tokio::test]
async fn bad_idempotency_keys_are_400() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let body = payment_body(&m.account_id, 100, "tok_visa");
    let too_long = "k".repeat(256);
    for bad in [too_long.as_str(), "", "tab\there", "\"unterminated", "\"\""] {
        let reply = app.post("/payments", &m.key, &body, Some(bad)).await;
        assert_invalid_field(&reply, "Idempotency-Key");
    }
    // Non-ASCII bytes.
    let reply = app
        .send(
            app.client
                .post(app.url("/payments"))
                .bearer_auth(&m.key)
                .json(&body)
                .header(
                    "Idempotency-Key",
                    reqwest::header::HeaderValue::from_bytes("clé".as_bytes()).unwrap(),
                ),
        )
        .await;
    assert_invalid_field(&reply, "Idempotency-Key");
    assert_eq!(payment_ids(&app, &m.key).await.len(), 0, "nothing stored");
    // 255 printable characters (a space included) are fine.
    let longest = format!("a b{}", "k".repeat(252));
    assert_eq!(longest.len(), 255);
    assert_success(
        &app.post("/payments", &m.key, &body, Some(&longest)).await,
        202,
    );
}

/// Issue 13 item 11c: one rule for an unbalanced quote, at either end of the key: a value
/// that starts or ends with `"` must be a whole RFC 8941 string, else 400.
#[tokio::test]
async fn an_unbalanced_quote_is_400_at_either_end() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let body = payment_body(&m.account_id, 100, "tok_visa");
    for bad in ["\"a", "a\"", "\"", "ab\\\""] {
        let reply = app.post("/payments", &m.key, &body, Some(bad)).await;
        assert_invalid_field(&reply, "Idempotency-Key");
    }
    assert_eq!(payment_ids(&app, &m.key).await.len(), 0, "nothing stored");
}

// Multi-threaded, so the server really handles the burst in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_identical_requests_make_one_payment() {
    const N: usize = 50;
    let app = Arc::new(spawn_app().await);
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let body = payment_body(&m.account_id, 777, "tok_visa");
    // Open N pooled connections first, so the burst is not staggered by TCP handshakes.
    let warm: Vec<_> = (0..N)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.get_anon("/health").await.status })
        })
        .collect();
    for task in warm {
        assert_eq!(task.await.unwrap(), 200);
    }
    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = Vec::new();
    for _ in 0..N {
        let (app, barrier, key, body) = (app.clone(), barrier.clone(), m.key.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let request = app
                .client
                .post(app.url("/payments"))
                .bearer_auth(&key)
                .header("Idempotency-Key", "burst-1")
                .json(&body);
            barrier.wait().await;
            app.send(request).await
        }));
    }
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    let mut ids = std::collections::HashSet::new();
    let (mut accepted, mut conflicts) = (0, 0);
    for reply in &replies {
        assert!(
            reply.status < 500,
            "no 5xx: {} {}",
            reply.status,
            reply.text
        );
        match reply.status {
            202 => {
                accepted += 1;
                ids.insert(reply.data()["id"].as_str().unwrap().to_owned());
            }
            409 => {
                assert_error(reply, 409, "idempotency_conflict");
                conflicts += 1;
            }
            other => panic!("202 or 409 only, got {other}: {}", reply.text),
        }
    }
    assert!(accepted >= 1, "{accepted} accepted, {conflicts} conflicts");
    assert_eq!(ids.len(), 1, "every 202 names the same payment: {ids:?}");
    let id = ids.into_iter().next().unwrap();
    assert_eq!(
        payment_ids(&app, &m.key).await,
        vec![id.clone()],
        "exactly one payment exists"
    );

    assert_eq!(wait_terminal(&app, &m.key, &id).await["status"], "SUCCESS");
    let after = app.post("/payments", &m.key, &body, Some("burst-1")).await;
    assert_eq!(after.status, 202);
    assert_eq!(after.header("idempotent-replayed"), Some("true"));
    assert_eq!(after.data()["id"], id.as_str());
    for reply in replies.iter().filter(|r| r.status == 202) {
        assert_eq!(
            after.text, reply.text,
            "the later retry replays the stored response byte for byte"
        );
    }
    assert_eq!(
        balance(&app, &m.key, &m.account_id).await,
        777,
        "no second job"
    );
    assert_eq!(entries(&app, &m.key, &m.account_id).await.len(), 1);
}

#[tokio::test]
async fn accounts_and_merchants_are_idempotent_too() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let body = json!({"name": "Savings", "currency": "USD"});
    let first = app.post("/accounts", &m.key, &body, Some("acct-1")).await;
    assert_success(&first, 201);
    let second = app.post("/accounts", &m.key, &body, Some("acct-1")).await;
    assert_eq!(
        (second.status, second.text.as_str()),
        (201, first.text.as_str()),
        "the stored status too"
    );
    assert_eq!(second.header("idempotent-replayed"), Some("true"));

    let body = json!({"name": "Shop", "currency": "EUR"});
    let first = app
        .post("/merchants", &app.platform_key, &body, Some("merch-1"))
        .await;
    assert_success(&first, 201);
    let second = app
        .post("/merchants", &app.platform_key, &body, Some("merch-1"))
        .await;
    // The raw key appears only in the response that minted it: the replay is the same bytes
    // without it.
    let secret = first.data()["apiKey"]["key"].as_str().unwrap().to_owned();
    assert_eq!(
        (second.status, second.text.as_str()),
        (
            201,
            first
                .text
                .replace(&format!(",\"key\":\"{secret}\""), "")
                .as_str()
        )
    );
    assert!(!second.text.contains(&secret));
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    let keys = app.get("/api-keys", &app.platform_key).await;
    assert_eq!(
        keys.items().len(),
        2,
        "one merchant onboarded by the two calls: {}",
        keys.text
    );
}

#[tokio::test]
async fn a_replayed_key_mint_never_shows_the_secret_again() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let first = app
        .post("/api-keys", &m.key, &json!({}), Some("mint-1"))
        .await;
    assert_success(&first, 201);
    let secret = first.data()["key"].as_str().unwrap().to_owned();
    let replay = app
        .post("/api-keys", &m.key, &json!({}), Some("mint-1"))
        .await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        (replay.status, replay.text.as_str()),
        (
            201,
            first
                .text
                .replace(&format!(",\"key\":\"{secret}\""), "")
                .as_str()
        )
    );
    assert_eq!(
        replay.data()["id"],
        first.data()["id"],
        "the same key, not a new one"
    );
    // The secret still works: it was shown once, and only once.
    assert_eq!(app.get("/payments", &secret).await.status, 200);
}

#[tokio::test]
async fn keys_expire_after_the_configured_ttl() {
    let app = spawn_app_with(&[("IDEMPOTENCY_TTL", "1s")]).await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let first = app
        .post(
            "/payments",
            &m.key,
            &payment_body(&m.account_id, 100, "tok_visa"),
            Some("short"),
        )
        .await;
    assert_success(&first, 202);
    let other = payment_body(&m.account_id, 200, "tok_visa");
    // Poll until the key has expired; before then the other body is refused as a reuse. At the
    // instant it expires, a write can find the key kept and the read after it find it free:
    // that one answer is 409 (nothing written, retry), and the retry is the new payment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conflict = false;
    loop {
        let reply = app.post("/payments", &m.key, &other, Some("short")).await;
        if reply.status == 202 {
            assert_eq!(reply.header("idempotent-replayed"), None);
            assert_ne!(reply.data()["id"], first.data()["id"]);
            break;
        }
        assert!(!conflict, "after a 409 the retry makes the payment: {}", reply.text);
        if reply.status == 409 {
            assert_error(&reply, 409, "idempotency_conflict");
            conflict = true;
            continue;
        }
        assert_error(&reply, 422, "idempotency_key_reused");
        assert!(
            Instant::now() < deadline,
            "the key was still kept after 10 s with IDEMPOTENCY_TTL=1s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(payment_ids(&app, &m.key).await.len(), 2);
}

#[tokio::test]
async fn a_platform_payment_without_merchant_id_is_a_body_error_before_the_key() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let first = app
        .post(
            "/payments",
            &app.platform_key,
            &payment_body(&m.account_id, 100, "tok_visa"),
            Some("plat-1"),
        )
        .await;
    assert_success(&first, 202);
    // Same key, a body missing merchantId: a validation error (checked before the key), not
    // idempotency_key_reused.
    let body = json!({"amount": 100, "currency": "USD", "source": "tok_visa"});
    let reply = app
        .post("/payments", &app.platform_key, &body, Some("plat-1"))
        .await;
    assert_error(&reply, 400, "validation_error");
    assert_eq!(reply.json["error"]["details"][0]["field"], "merchantId");
}

// Row 12, concurrent: one key, ten different bodies (amount, currency and account varied) sent
// at once. A different fingerprint is 422 even while the first is running (API.md), so one
// request wins with 202 and every other is refused; exactly one payment exists for the key,
// and the key still maps to the winner's payment afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_different_bodies_under_one_key_make_one_payment() {
    const N: usize = 10;
    let app = Arc::new(spawn_app().await);
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let mut accounts = Vec::new();
    for (name, currency) in [("Second USD", "USD"), ("Euro", "EUR")] {
        let opened = app
            .post(
                "/accounts",
                &m.key,
                &json!({"name": name, "currency": currency}),
                None,
            )
            .await;
        assert_success(&opened, 201);
        accounts.push(opened.data()["id"].as_str().unwrap().to_owned());
    }
    // Every body is a valid payment on its own, so whichever wins is accepted.
    let bodies: Vec<Value> = (0..N)
        .map(|i| match i % 3 {
            0 => payment_body(&m.account_id, 100 + i as i64, "tok_visa"),
            1 => payment_body(&accounts[0], 100 + i as i64, "tok_visa"),
            _ => json!({
                "merchantId": accounts[1],
                "amount": 100 + i as i64,
                "currency": "EUR",
                "source": "tok_visa",
            }),
        })
        .collect();
    let warm: Vec<_> = (0..N)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.get_anon("/health").await.status })
        })
        .collect();
    for task in warm {
        assert_eq!(task.await.unwrap(), 200);
    }
    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = Vec::new();
    for body in bodies.clone() {
        let (app, barrier, key) = (app.clone(), barrier.clone(), m.key.clone());
        tasks.push(tokio::spawn(async move {
            let request = app
                .client
                .post(app.url("/payments"))
                .bearer_auth(&key)
                .header("Idempotency-Key", "burst-mixed")
                .json(&body);
            barrier.wait().await;
            app.send(request).await
        }));
    }
    let mut accepted: Vec<(usize, Reply)> = Vec::new();
    let (mut reused, mut conflicts) = (0, 0);
    for (i, task) in tasks.into_iter().enumerate() {
        let reply = task.await.unwrap();
        match reply.status {
            202 => accepted.push((i, reply)),
            422 => {
                assert_error(&reply, 422, "idempotency_key_reused");
                reused += 1;
            }
            409 => {
                assert_error(&reply, 409, "idempotency_conflict");
                conflicts += 1;
            }
            other => panic!("202, 409 or 422 only, got {other}: {}", reply.text),
        }
    }
    let texts: Vec<&str> = accepted.iter().map(|(_, r)| r.text.as_str()).collect();
    assert_eq!(
        accepted.len(),
        1,
        "one body accepted under the key: {texts:#?}"
    );
    let (won, first) = accepted.pop().unwrap();
    assert_success(&first, 202);
    assert_eq!(reused + conflicts, N - 1, "every loser is refused");
    // Different fingerprints are checked first, so none of them is a 409.
    assert_eq!((reused, conflicts), (N - 1, 0), "422 for every other body");
    let id = first.data()["id"].as_str().unwrap().to_owned();
    assert_eq!(first.data()["amount"], bodies[won]["amount"]);
    assert_eq!(
        payment_ids(&app, &m.key).await,
        vec![id.clone()],
        "exactly one payment for the key"
    );
    assert_eq!(wait_terminal(&app, &m.key, &id).await["status"], "SUCCESS");
    // The key still maps to the winner's payment: its body replays, every other is refused.
    let again = app
        .post("/payments", &m.key, &bodies[won], Some("burst-mixed"))
        .await;
    assert_eq!(
        (again.status, again.text.as_str()),
        (202, first.text.as_str())
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    for (i, body) in bodies.iter().enumerate().filter(|(i, _)| *i != won) {
        let reply = app
            .post("/payments", &m.key, body, Some("burst-mixed"))
            .await;
        assert_error(&reply, 422, "idempotency_key_reused");
        assert!(!reply.text.contains(&id), "body {i}: {}", reply.text);
    }
    assert_eq!(payment_ids(&app, &m.key).await, vec![id]);
}
