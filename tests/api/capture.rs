//! Authorize now, capture later (API.md v1.1): `captureMethod`, `POST /payments/:id/capture`
//! and `POST /payments/:id/cancel`, their answers, their errors in API.md's order, and the one
//! posting a capture makes.

use serde_json::{Value, json};

use super::helpers::{
    ENTRY_FIELDS, PAYMENT_FIELDS, TestApp, assert_error, assert_invalid_field, assert_keys,
    assert_success, authorized, balance, entries, onboard, pay_body, payment, payment_body,
    random_id, spawn_app, spawn_app_with, succeeded, wait_payment, wait_terminal,
};

fn manual(account_id: &str, amount: i64, source: &str) -> Value {
    let mut body = payment_body(account_id, amount, source);
    body["captureMethod"] = json!("manual");
    body
}

async fn capture(app: &TestApp, key: &str, id: &str, body: &Value) -> super::helpers::Reply {
    app.post(&format!("/payments/{id}/capture"), key, body, None)
        .await
}

async fn cancel(app: &TestApp, key: &str, id: &str) -> super::helpers::Reply {
    app.post(&format!("/payments/{id}/cancel"), key, &json!({}), None)
        .await
}

#[tokio::test]
async fn a_new_payment_shows_every_v11_field_with_its_default() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let created = pay_body(&app, &m.key, &payment_body(&m.account_id, 500, "tok_visa")).await;
    assert_keys(&created, PAYMENT_FIELDS);
    assert_eq!(created["captureMethod"], "automatic");
    assert_eq!(created["amountCaptured"], 0);
    assert_eq!(created["amountRefunded"], 0);
    assert_eq!(created["cancellationReason"], Value::Null);
    assert_eq!(created["metadata"], json!({}));
    let done = wait_terminal(&app, &m.key, created["id"].as_str().unwrap()).await;
    assert_eq!(
        done["amountCaptured"], 500,
        "automatic capture posts the amount"
    );
    assert_eq!(done["amountRefunded"], 0);

    let mut body = manual(&m.account_id, 700, "tok_visa");
    body["metadata"] = json!({"orderId": "A-1001", "note": ""});
    let created = pay_body(&app, &m.key, &body).await;
    assert_eq!(created["captureMethod"], "manual");
    assert_eq!(
        created["metadata"],
        json!({"orderId": "A-1001", "note": ""})
    );
    let id = created["id"].as_str().unwrap();
    let held = wait_payment(&app, &m.key, id, &["AUTHORIZED"]).await;
    assert_keys(&held, PAYMENT_FIELDS);
    assert_eq!(held["amountCaptured"], 0);
    assert_eq!(held["metadata"], created["metadata"]);
    assert!(
        entries(&app, &m.key, &m.account_id).await.len() == 1,
        "only the automatic one"
    );
}

#[tokio::test]
async fn capture_method_is_automatic_or_manual_only() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    for bad in [
        json!("Manual"),
        json!(""),
        json!("later"),
        json!(1),
        json!(true),
        json!({}),
    ] {
        let mut body = payment_body(&m.account_id, 100, "tok_visa");
        body["captureMethod"] = bad.clone();
        let reply = app.post("/payments", &m.key, &body, None).await;
        assert_invalid_field(&reply, "captureMethod");
    }
    let listed = app.get("/payments", &m.key).await;
    assert_eq!(listed.items().len(), 0, "nothing stored");
}

#[tokio::test]
async fn manual_capture_of_part_posts_exactly_that_part_once() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let id = authorized(&app, &m.key, &m.account_id, 10_000).await;
    assert_eq!(
        balance(&app, &m.key, &m.account_id).await,
        0,
        "nothing posted yet"
    );
    assert!(entries(&app, &m.key, &m.account_id).await.is_empty());

    let reply = capture(&app, &m.key, &id, &json!({"amount": 6_000})).await;
    assert_success(&reply, 202);
    let p = reply.data();
    assert_keys(p, PAYMENT_FIELDS);
    assert_eq!(p["id"], id.as_str());
    assert_eq!(p["status"], "PROCESSING", "{}", reply.text);
    assert_eq!(p["amount"], 10_000);

    let done = wait_terminal(&app, &m.key, &id).await;
    assert_eq!(done["status"], "SUCCESS");
    assert_eq!(done["amountCaptured"], 6_000);
    assert_eq!(done["amount"], 10_000, "the authorization is not rewritten");
    assert_eq!(done["amountRefunded"], 0);
    assert_eq!(balance(&app, &m.key, &m.account_id).await, 6_000);
    let lines = entries(&app, &m.key, &m.account_id).await;
    assert_eq!(lines.len(), 1, "one charge posting: {lines:?}");
    assert_keys(&lines[0], ENTRY_FIELDS);
    assert_eq!(lines[0]["paymentId"], id.as_str());
    assert_eq!(lines[0]["refundId"], Value::Null);
    assert_eq!(lines[0]["direction"], "CREDIT");
    assert_eq!(lines[0]["amount"], 6_000);
    let world = &app.system_accounts["USD"];
    let reply = app
        .get(
            &format!("/accounts/{world}/entries?limit=100"),
            &app.platform_key,
        )
        .await;
    assert_success(&reply, 200);
    let debits: Vec<Value> = reply
        .items()
        .into_iter()
        .filter(|e| e["paymentId"] == id.as_str())
        .collect();
    assert_eq!(debits.len(), 1, "{debits:?}");
    assert_eq!(debits[0]["direction"], "DEBIT");
    assert_eq!(debits[0]["amount"], 6_000);
    assert_eq!(debits[0]["transactionId"], lines[0]["transactionId"]);

    // Captured once: a second capture, of anything, is 409.
    for body in [json!({}), json!({"amount": 1})] {
        assert_error(
            &capture(&app, &m.key, &id, &body).await,
            409,
            "invalid_state",
        );
    }
    assert_eq!(balance(&app, &m.key, &m.account_id).await, 6_000);
}

#[tokio::test]
async fn capture_without_an_amount_takes_all_that_was_authorized() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let id = authorized(&app, &m.key, &m.account_id, 4_321).await;
    // An empty body (no Content-Type) is read as {}.
    let reply = app
        .post_raw(&format!("/payments/{id}/capture"), &m.key, None, Vec::new())
        .await;
    assert_success(&reply, 202);
    let done = wait_terminal(&app, &m.key, &id).await;
    assert_eq!(
        (done["status"].as_str(), done["amountCaptured"].as_i64()),
        (Some("SUCCESS"), Some(4_321))
    );
    assert_eq!(balance(&app, &m.key, &m.account_id).await, 4_321);
    let id = authorized(&app, &m.key, &m.account_id, 99_999_999).await;
    let reply = capture(&app, &m.key, &id, &json!({"amount": 99_999_999})).await;
    assert_success(&reply, 202);
    let done = wait_terminal(&app, &m.key, &id).await;
    assert_eq!(done["amountCaptured"], 99_999_999);
}

#[tokio::test]
async fn capture_more_than_authorized_is_422_and_changes_nothing() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let id = authorized(&app, &m.key, &m.account_id, 1_000).await;
    for amount in [1_001, 99_999_999] {
        let reply = capture(&app, &m.key, &id, &json!({"amount": amount})).await;
        assert_error(&reply, 422, "amount_exceeds_capturable");
    }
    let still = payment(&app, &m.key, &id).await;
    assert_eq!(still["status"], "AUTHORIZED");
    // Exactly the authorized amount is capturable.
    assert_success(
        &capture(&app, &m.key, &id, &json!({"amount": 1_000})).await,
        202,
    );
    assert_eq!(
        wait_terminal(&app, &m.key, &id).await["amountCaptured"],
        1_000
    );
}

#[tokio::test]
async fn capture_body_is_an_amount_from_1_to_99999999_and_nothing_else() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let id = authorized(&app, &m.key, &m.account_id, 1_000).await;
    for bad in [
        json!(0),
        json!(-1),
        json!(100_000_000),
        json!("10"),
        json!(10.5),
        json!(1e3),
        json!(true),
        json!([10]),
        json!({"value": 10}),
    ] {
        let reply = capture(&app, &m.key, &id, &json!({"amount": bad})).await;
        assert_invalid_field(&reply, "amount");
    }
    let reply = capture(&app, &m.key, &id, &json!({"amount": 10, "currency": "USD"})).await;
    assert_invalid_field(&reply, "currency");
    let reply = app
        .post_text(&format!("/payments/{id}/capture"), &m.key, "{\"amount\": ")
        .await;
    assert_error(&reply, 400, "invalid_json");
    let reply = app
        .post_raw(
            &format!("/payments/{id}/capture"),
            &m.key,
            Some("text/plain"),
            "{}",
        )
        .await;
    assert_error(&reply, 415, "unsupported_media_type");
    assert_eq!(payment(&app, &m.key, &id).await["status"], "AUTHORIZED");
}

#[tokio::test]
async fn capture_and_cancel_check_body_then_payment_then_state_then_amount() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let other = onboard(&app, "Tea House", "USD").await;
    let success = succeeded(&app, &m.key, &m.account_id, 1_000).await;
    let theirs = authorized(&app, &other.key, &other.account_id, 1_000).await;
    let unknown = random_id();
    // Body before the payment: a bad body on an unknown payment is 400.
    for id in [&unknown, &theirs] {
        let reply = capture(&app, &m.key, id, &json!({"amount": 0})).await;
        assert_invalid_field(&reply, "amount");
        let reply = app
            .post(
                &format!("/payments/{id}/cancel"),
                &m.key,
                &json!({"reason": "x"}),
                None,
            )
            .await;
        assert_invalid_field(&reply, "reason");
    }
    // The payment before its state: unknown and another merchant's are both 404.
    for id in [&unknown, &theirs] {
        assert_error(
            &capture(&app, &m.key, id, &json!({})).await,
            404,
            "not_found",
        );
        assert_error(&cancel(&app, &m.key, id).await, 404, "not_found");
    }
    // The state before the amount: too much on a SUCCESS payment is 409, not 422.
    let reply = capture(&app, &m.key, &success, &json!({"amount": 5_000})).await;
    assert_error(&reply, 409, "invalid_state");
    // A malformed id is 400.
    let reply = capture(&app, &m.key, "not-a-uuid", &json!({})).await;
    assert_invalid_field(&reply, "id");
    assert_invalid_field(&cancel(&app, &m.key, "not-a-uuid").await, "id");
    // The other merchant's authorization was not touched.
    assert_eq!(
        payment(&app, &other.key, &theirs).await["status"],
        "AUTHORIZED"
    );
}

#[tokio::test]
async fn capture_and_cancel_need_an_authorized_payment() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let success = succeeded(&app, &m.key, &m.account_id, 1_000).await;
    let declined = pay_body(
        &app,
        &m.key,
        &manual(&m.account_id, 1_000, "tok_chargeDeclined"),
    )
    .await;
    let declined = declined["id"].as_str().unwrap().to_owned();
    let failed = wait_payment(&app, &m.key, &declined, &["FAILED"]).await;
    assert_eq!(failed["failureReason"], "card_declined");
    let canceled = authorized(&app, &m.key, &m.account_id, 1_000).await;
    assert_success(&cancel(&app, &m.key, &canceled).await, 200);
    for id in [&success, &declined, &canceled] {
        let reply = capture(&app, &m.key, id, &json!({})).await;
        assert_error(&reply, 409, "invalid_state");
        assert_error(&cancel(&app, &m.key, id).await, 409, "invalid_state");
    }
    // A capture already accepted (PROCESSING or SUCCESS by now) cannot be canceled.
    let captured = authorized(&app, &m.key, &m.account_id, 1_000).await;
    assert_success(&capture(&app, &m.key, &captured, &json!({})).await, 202);
    assert_error(&cancel(&app, &m.key, &captured).await, 409, "invalid_state");
    assert_eq!(
        wait_terminal(&app, &m.key, &captured).await["status"],
        "SUCCESS"
    );
    assert_eq!(balance(&app, &m.key, &m.account_id).await, 2_000);
}

#[tokio::test]
async fn cancel_is_200_canceled_requested_and_posts_nothing() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let id = authorized(&app, &m.key, &m.account_id, 2_500).await;
    let reply = cancel(&app, &m.key, &id).await;
    assert_success(&reply, 200);
    let p = reply.data();
    assert_keys(p, PAYMENT_FIELDS);
    assert_eq!(p["id"], id.as_str());
    assert_eq!(p["status"], "CANCELED");
    assert_eq!(p["cancellationReason"], "requested");
    assert_eq!(p["amountCaptured"], 0);
    let stored = payment(&app, &m.key, &id).await;
    assert_eq!(stored["status"], "CANCELED");
    assert_eq!(stored["cancellationReason"], "requested");
    assert_eq!(balance(&app, &m.key, &m.account_id).await, 0);
    assert!(entries(&app, &m.key, &m.account_id).await.is_empty());
    let listed = app.get("/payments?status=CANCELED", &m.key).await;
    assert_success(&listed, 200);
    assert_eq!(listed.item_ids(), vec![id.clone()]);
    // An empty body (no Content-Type) is `{}` too; the payment is already canceled.
    let again = app
        .post_raw(&format!("/payments/{id}/cancel"), &m.key, None, Vec::new())
        .await;
    assert_error(&again, 409, "invalid_state");
}

#[tokio::test]
async fn the_platform_key_captures_and_cancels_any_merchants_payment() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let first = authorized(&app, &m.key, &m.account_id, 300).await;
    let second = authorized(&app, &m.key, &m.account_id, 400).await;
    assert_success(
        &capture(&app, &app.platform_key, &first, &json!({"amount": 100})).await,
        202,
    );
    assert_success(&cancel(&app, &app.platform_key, &second).await, 200);
    assert_eq!(
        wait_terminal(&app, &m.key, &first).await["amountCaptured"],
        100
    );
    assert_eq!(payment(&app, &m.key, &second).await["status"], "CANCELED");
}

#[tokio::test]
async fn the_new_routes_answer_405_to_other_methods_and_need_a_key() {
    let app = spawn_app().await;
    let id = random_id();
    for path in [
        format!("/payments/{id}/capture"),
        format!("/payments/{id}/cancel"),
        format!("/payments/{id}/refunds"),
    ] {
        let reply = app.get(&path, &app.platform_key).await;
        assert_eq!(reply.status, 405, "GET {path}: {}", reply.text);
        let reply = app
            .send(app.client.post(app.url(&path)).json(&json!({})))
            .await;
        assert_error(&reply, 401, "unauthorized");
    }
    for path in ["/refunds".to_owned(), format!("/refunds/{id}")] {
        let reply = app
            .send(
                app.client
                    .post(app.url(&path))
                    .bearer_auth(&app.platform_key),
            )
            .await;
        assert_eq!(reply.status, 405, "POST {path}: {}", reply.text);
        assert_error(&app.get_anon(&path).await, 401, "unauthorized");
    }
}

#[tokio::test]
async fn the_payments_limiter_counts_only_post_payments() {
    let app = spawn_app_with(&[("RATE_LIMIT_PAYMENTS", "1000/1m")]).await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let body = manual(&m.account_id, 1_000, "tok_visa");
    let reply = app.post("/payments", &m.key, &body, None).await;
    assert_success(&reply, 202);
    let policy = reply.header("ratelimit-policy").unwrap_or_default();
    assert!(
        policy.contains("\"payments\""),
        "POST /payments is counted: {policy:?}"
    );
    let id = reply.data()["id"].as_str().unwrap().to_owned();
    wait_payment(&app, &m.key, &id, &["AUTHORIZED"]).await;
    let paid = succeeded(&app, &m.key, &m.account_id, 1_000).await;
    let counted = |reply: &super::helpers::Reply| {
        reply
            .header("ratelimit-policy")
            .is_some_and(|p| p.contains("payments"))
    };
    let replies = [
        capture(&app, &m.key, &id, &json!({"amount": 10})).await,
        app.post(
            &format!("/payments/{paid}/refunds"),
            &m.key,
            &json!({"amount": 10}),
            None,
        )
        .await,
        cancel(&app, &m.key, &id).await,
        app.get("/refunds", &m.key).await,
        app.get(&format!("/payments/{id}"), &m.key).await,
    ];
    for reply in &replies {
        assert!(reply.status < 500, "{}", reply.text);
        assert!(
            !counted(reply),
            "not counted by `payments`: {:?}",
            reply.headers
        );
    }
}

#[tokio::test]
async fn an_expired_authorization_is_409_to_capture_before_the_sweep_runs() {
    // The sweep runs at most hourly here, so only the TTL itself refuses the capture.
    let app = spawn_app_with(&[("AUTHORIZATION_TTL", "1s"), ("SWEEP_INTERVAL", "1h")]).await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let id = authorized(&app, &m.key, &m.account_id, 1_000).await;
    // Let the TTL pass (time passing, not a race: nothing else is awaited).
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let reply = capture(&app, &m.key, &id, &json!({})).await;
    assert_error(&reply, 409, "invalid_state");
    assert_eq!(payment(&app, &m.key, &id).await["status"], "AUTHORIZED");
    assert_eq!(balance(&app, &m.key, &m.account_id).await, 0);
}

#[tokio::test]
async fn the_sweep_cancels_an_expired_authorization_as_expired() {
    let app = spawn_app_with(&[("AUTHORIZATION_TTL", "1s"), ("SWEEP_INTERVAL", "100ms")]).await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let created = pay_body(&app, &m.key, &manual(&m.account_id, 1_000, "tok_visa")).await;
    let id = created["id"].as_str().unwrap().to_owned();
    wait_payment(&app, &m.key, &id, &["AUTHORIZED", "CANCELED"]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let canceled = loop {
        let p = payment(&app, &m.key, &id).await;
        if p["status"] == "CANCELED" {
            break p;
        }
        assert_eq!(p["status"], "AUTHORIZED", "{p}");
        assert!(
            std::time::Instant::now() < deadline,
            "not expired within 10 s: {p}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(canceled["cancellationReason"], "expired");
    assert_eq!(canceled["amountCaptured"], 0);
    assert_error(
        &capture(&app, &m.key, &id, &json!({})).await,
        409,
        "invalid_state",
    );
    assert_error(&cancel(&app, &m.key, &id).await, 409, "invalid_state");
    assert!(entries(&app, &m.key, &m.account_id).await.is_empty());
}
