//! Refunds (API.md v1.1): `POST /payments/:id/refunds`, `GET /refunds/:id`, `GET /refunds`;
//! the refund's shape, its posting (DEBIT merchant, CREDIT World, `refundId` on the entries),
//! the payment's `amountRefunded`, and the errors in API.md's order.

use serde_json::{Value, json};

use super::helpers::{
    ENTRY_FIELDS, PAYMENT_FIELDS, REFUND_FIELDS, Reply, TestApp, assert_error,
    assert_invalid_field, assert_keys, assert_success, assert_timestamp, assert_uuid, authorized,
    balance, entries, onboard, pay_body, payment, payment_body, random_id, spawn_app, succeeded,
    wait_payment, wait_refund, wait_terminal,
};

async fn refund(app: &TestApp, key: &str, payment_id: &str, body: &Value) -> Reply {
    app.post(&format!("/payments/{payment_id}/refunds"), key, body, None)
        .await
}

/// Refunds `body` of `payment_id` (asserting 202) and waits until it settles.
async fn refunded(app: &TestApp, key: &str, payment_id: &str, body: &Value) -> Value {
    let reply = refund(app, key, payment_id, body).await;
    assert_success(&reply, 202);
    wait_refund(app, key, reply.data()["id"].as_str().unwrap()).await
}

#[tokio::test]
async fn a_partial_refund_is_202_pending_then_posts_and_counts_on_the_payment() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let paid = succeeded(&app, &m.key, &m.account_id, 10_000).await;
    let body =
        json!({"amount": 2_500, "reason": "requested_by_customer", "metadata": {"ticket": "T-9"}});
    let reply = refund(&app, &m.key, &paid, &body).await;
    assert_success(&reply, 202);
    let r = reply.data();
    assert_keys(r, REFUND_FIELDS);
    let refund_id = assert_uuid(&r["id"]);
    assert_eq!(r["paymentId"], paid.as_str());
    assert_eq!(r["merchantId"], m.account_id.as_str());
    assert_eq!(r["amount"], 2_500);
    assert_eq!(r["currency"], "USD");
    assert_eq!(r["reason"], "requested_by_customer");
    assert_eq!(r["status"], "PENDING");
    assert_eq!(r["failureReason"], Value::Null);
    assert_eq!(r["metadata"], json!({"ticket": "T-9"}));
    assert_eq!(r["idempotencyKey"], Value::Null);
    assert_timestamp(&r["createdAt"]);
    assert_timestamp(&r["updatedAt"]);

    let done = wait_refund(&app, &m.key, &refund_id).await;
    assert_eq!(done["status"], "SUCCESS", "{done}");
    assert_eq!(done["failureReason"], Value::Null);
    assert_eq!(done["createdAt"], r["createdAt"]);
    let p = payment(&app, &m.key, &paid).await;
    assert_keys(&p, PAYMENT_FIELDS);
    assert_eq!(p["status"], "SUCCESS", "a refund never changes the status");
    assert_eq!(p["amountCaptured"], 10_000);
    assert_eq!(p["amountRefunded"], 2_500);
    assert_eq!(balance(&app, &m.key, &m.account_id).await, 7_500);

    // The merchant's entries: the charge (refundId null) and the refund's DEBIT.
    let lines = entries(&app, &m.key, &m.account_id).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert_keys(line, ENTRY_FIELDS);
        assert_eq!(line["paymentId"], paid.as_str(), "paymentId is set on both");
    }
    let (refund_line, charge_line) = (&lines[0], &lines[1]);
    assert_eq!(refund_line["refundId"], refund_id.as_str());
    assert_eq!(refund_line["direction"], "DEBIT");
    assert_eq!(refund_line["amount"], 2_500);
    assert_eq!(charge_line["refundId"], Value::Null);
    assert_eq!(charge_line["direction"], "CREDIT");
    assert_eq!(charge_line["amount"], 10_000);
    // The World side of the refund: one CREDIT of its amount, in the same transaction.
    let world = &app.system_accounts["USD"];
    let reply = app
        .get(
            &format!("/accounts/{world}/entries?limit=100"),
            &app.platform_key,
        )
        .await;
    let world_lines: Vec<Value> = reply
        .items()
        .into_iter()
        .filter(|e| e["refundId"] == refund_id.as_str())
        .collect();
    assert_eq!(world_lines.len(), 1, "{world_lines:?}");
    assert_eq!(world_lines[0]["direction"], "CREDIT");
    assert_eq!(world_lines[0]["amount"], 2_500);
    assert_eq!(
        world_lines[0]["transactionId"],
        refund_line["transactionId"]
    );
}

#[tokio::test]
async fn get_refund_answers_the_refund_itself() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let paid = succeeded(&app, &m.key, &m.account_id, 1_000).await;
    let created = refund(&app, &m.key, &paid, &json!({"amount": 100})).await;
    let id = created.data()["id"].as_str().unwrap().to_owned();
    let reply = app.get(&format!("/refunds/{id}"), &m.key).await;
    assert_success(&reply, 200);
    assert_keys(reply.data(), REFUND_FIELDS);
    assert_eq!(reply.data()["id"], id.as_str());
    assert_eq!(reply.data()["reason"], Value::Null);
    assert_eq!(reply.data()["metadata"], json!({}));
    // The platform key sees it; another merchant does not, nor does anyone an unknown id.
    assert_success(
        &app.get(&format!("/refunds/{id}"), &app.platform_key).await,
        200,
    );
    let other = onboard(&app, "Tea House", "USD").await;
    let hidden = app.get(&format!("/refunds/{id}"), &other.key).await;
    let missing = app.get(&format!("/refunds/{}", random_id()), &m.key).await;
    assert_error(&hidden, 404, "not_found");
    assert_error(&missing, 404, "not_found");
    assert_eq!(hidden.json["error"], missing.json["error"]);
    assert_invalid_field(&app.get("/refunds/nope", &m.key).await, "id");
}

#[tokio::test]
async fn the_default_amount_is_what_is_left_and_nothing_left_is_422() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let paid = succeeded(&app, &m.key, &m.account_id, 1_000).await;
    let first = refunded(&app, &m.key, &paid, &json!({"amount": 300})).await;
    assert_eq!(first["status"], "SUCCESS");
    let rest = refund(&app, &m.key, &paid, &json!({})).await;
    assert_success(&rest, 202);
    assert_eq!(
        rest.data()["amount"],
        700,
        "the default is what is still refundable"
    );
    // Nothing is left, even before the second refund settles (it is reserved).
    let none = refund(&app, &m.key, &paid, &json!({})).await;
    assert_error(&none, 422, "amount_exceeds_refundable");
    let one = refund(&app, &m.key, &paid, &json!({"amount": 1})).await;
    assert_error(&one, 422, "amount_exceeds_refundable");
    let rest = wait_refund(&app, &m.key, rest.data()["id"].as_str().unwrap()).await;
    assert_eq!(rest["status"], "SUCCESS");
    let p = payment(&app, &m.key, &paid).await;
    assert_eq!(
        (p["amountRefunded"].as_i64(), p["status"].as_str()),
        (Some(1_000), Some("SUCCESS"))
    );
    assert_eq!(balance(&app, &m.key, &m.account_id).await, 0);
    assert_eq!(entries(&app, &m.key, &m.account_id).await.len(), 3);
}

#[tokio::test]
async fn more_than_refundable_is_422_and_a_partial_capture_bounds_it() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let paid = succeeded(&app, &m.key, &m.account_id, 1_000).await;
    assert_error(
        &refund(&app, &m.key, &paid, &json!({"amount": 1_001})).await,
        422,
        "amount_exceeds_refundable",
    );
    // A manual payment captured in part: refundable is what was captured, not the amount.
    let held = authorized(&app, &m.key, &m.account_id, 5_000).await;
    let reply = app
        .post(
            &format!("/payments/{held}/capture"),
            &m.key,
            &json!({"amount": 2_000}),
            None,
        )
        .await;
    assert_success(&reply, 202);
    assert_eq!(
        wait_terminal(&app, &m.key, &held).await["amountCaptured"],
        2_000
    );
    let over = refund(&app, &m.key, &held, &json!({"amount": 2_001})).await;
    assert_error(&over, 422, "amount_exceeds_refundable");
    let all = refunded(&app, &m.key, &held, &json!({})).await;
    assert_eq!(
        (all["amount"].as_i64(), all["status"].as_str()),
        (Some(2_000), Some("SUCCESS"))
    );
    assert_eq!(payment(&app, &m.key, &held).await["amountRefunded"], 2_000);
    assert_eq!(balance(&app, &m.key, &m.account_id).await, 1_000);
    let listed = app.get(&format!("/refunds?paymentId={paid}"), &m.key).await;
    assert_eq!(
        listed.items().len(),
        0,
        "no refund was stored for the refused requests"
    );
}

#[tokio::test]
async fn a_refund_needs_a_success_payment() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let held = authorized(&app, &m.key, &m.account_id, 1_000).await;
    let canceled = authorized(&app, &m.key, &m.account_id, 1_000).await;
    let reply = app
        .post(
            &format!("/payments/{canceled}/cancel"),
            &m.key,
            &json!({}),
            None,
        )
        .await;
    assert_success(&reply, 200);
    let declined = pay_body(
        &app,
        &m.key,
        &payment_body(&m.account_id, 1_000, "tok_chargeDeclined"),
    )
    .await;
    let declined = declined["id"].as_str().unwrap().to_owned();
    wait_payment(&app, &m.key, &declined, &["FAILED"]).await;
    for id in [&held, &canceled, &declined] {
        // The state is checked before the amount: an excessive amount is 409 too.
        for body in [json!({}), json!({"amount": 1}), json!({"amount": 5_000})] {
            assert_error(&refund(&app, &m.key, id, &body).await, 409, "invalid_state");
        }
    }
    let listed = app.get("/refunds", &m.key).await;
    assert_success(&listed, 200);
    assert_eq!(listed.items().len(), 0);
}

#[tokio::test]
async fn refund_checks_body_then_payment_then_state_then_amount() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let other = onboard(&app, "Tea House", "USD").await;
    let theirs = succeeded(&app, &other.key, &other.account_id, 1_000).await;
    let mine = succeeded(&app, &m.key, &m.account_id, 1_000).await;
    let unknown = random_id();
    for (field, body) in [
        ("amount", json!({"amount": 0})),
        ("amount", json!({"amount": -5})),
        ("amount", json!({"amount": 100_000_000})),
        ("amount", json!({"amount": "10"})),
        ("amount", json!({"amount": 1.5})),
        ("reason", json!({"reason": "because"})),
        ("reason", json!({"reason": "DUPLICATE"})),
        ("reason", json!({"reason": 1})),
        ("metadata", json!({"metadata": null})),
        ("metadata", json!({"metadata": "x"})),
        ("metadata", json!({"metadata": {"a": 1}})),
        ("currency", json!({"currency": "USD"})),
    ] {
        for id in [&unknown, &theirs, &mine] {
            assert_invalid_field(&refund(&app, &m.key, id, &body).await, field);
        }
    }
    for id in [&unknown, &theirs] {
        assert_error(
            &refund(&app, &m.key, id, &json!({})).await,
            404,
            "not_found",
        );
        let huge = refund(&app, &m.key, id, &json!({"amount": 99_999_999})).await;
        assert_error(&huge, 404, "not_found");
    }
    assert_invalid_field(&refund(&app, &m.key, "nope", &json!({})).await, "id");
    for reason in ["duplicate", "fraudulent", "requested_by_customer"] {
        let reply = refund(&app, &m.key, &mine, &json!({"amount": 1, "reason": reason})).await;
        assert_success(&reply, 202);
        assert_eq!(reply.data()["reason"], reason);
    }
    assert_eq!(
        payment(&app, &other.key, &theirs).await["amountRefunded"],
        0
    );
}

#[tokio::test]
async fn list_refunds_filters_by_payment_and_status_newest_first() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let other = onboard(&app, "Tea House", "USD").await;
    let first = succeeded(&app, &m.key, &m.account_id, 1_000).await;
    let second = succeeded(&app, &m.key, &m.account_id, 1_000).await;
    let theirs = succeeded(&app, &other.key, &other.account_id, 1_000).await;
    let mut mine = Vec::new();
    for (payment_id, amount) in [(&first, 100), (&second, 200), (&first, 300)] {
        let r = refunded(&app, &m.key, payment_id, &json!({"amount": amount})).await;
        mine.push(r["id"].as_str().unwrap().to_owned());
    }
    let their_refund = refunded(&app, &other.key, &theirs, &json!({"amount": 50})).await;
    mine.reverse();

    let all = app.get("/refunds", &m.key).await;
    assert_success(&all, 200);
    assert_keys(all.data(), &["items", "hasMore"]);
    assert_eq!(all.item_ids(), mine, "newest first, own refunds only");
    for item in all.items() {
        assert_keys(&item, REFUND_FIELDS);
    }
    let of_first = app
        .get(&format!("/refunds?paymentId={first}"), &m.key)
        .await;
    assert_eq!(of_first.item_ids(), vec![mine[0].clone(), mine[2].clone()]);
    let succeeded_only = app.get("/refunds?status=SUCCESS&limit=2", &m.key).await;
    assert_eq!(succeeded_only.item_ids(), mine[..2].to_vec());
    assert_eq!(succeeded_only.data()["hasMore"], true);
    for status in ["PENDING", "PROCESSING", "FAILED"] {
        let none = app.get(&format!("/refunds?status={status}"), &m.key).await;
        assert_success(&none, 200);
        assert_eq!(
            none.data(),
            &json!({"items": [], "hasMore": false}),
            "{status}"
        );
    }
    // Another merchant's payment, or an unknown one: an empty list, never an error.
    for id in [&theirs, &random_id()] {
        let reply = app.get(&format!("/refunds?paymentId={id}"), &m.key).await;
        assert_success(&reply, 200);
        assert_eq!(reply.data(), &json!({"items": [], "hasMore": false}));
    }
    // The platform key sees every merchant's refunds.
    let everything = app.get("/refunds?limit=100", &app.platform_key).await;
    let ids = everything.item_ids();
    assert_eq!(ids.len(), 4);
    assert!(ids.contains(&their_refund["id"].as_str().unwrap().to_owned()));
    // Pagination: an own cursor works, an unknown or foreign one is 400.
    let after = app
        .get(&format!("/refunds?startingAfter={}", mine[0]), &m.key)
        .await;
    assert_eq!(after.item_ids(), mine[1..].to_vec());
    let foreign = app
        .get(
            &format!(
                "/refunds?startingAfter={}",
                their_refund["id"].as_str().unwrap()
            ),
            &m.key,
        )
        .await;
    assert_invalid_field(&foreign, "startingAfter");
    for bad in [
        "status=AUTHORIZED",
        "status=success",
        "paymentId=x",
        "limit=0",
        "limit=101",
        "foo=bar",
        "paymentId=&status=SUCCESS",
    ] {
        let reply = app.get(&format!("/refunds?{bad}"), &m.key).await;
        assert_error(&reply, 400, "validation_error");
    }
}

#[tokio::test]
async fn refunds_of_many_payments_keep_every_balance_right() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let mut expected = 0;
    for amount in [1_000, 2_000, 3_000] {
        let paid = succeeded(&app, &m.key, &m.account_id, amount).await;
        let part = amount / 4;
        let r = refunded(&app, &m.key, &paid, &json!({"amount": part})).await;
        assert_eq!(r["status"], "SUCCESS");
        expected += amount - part;
        assert_eq!(payment(&app, &m.key, &paid).await["amountRefunded"], part);
    }
    assert_eq!(balance(&app, &m.key, &m.account_id).await, expected);
    let lines = entries(&app, &m.key, &m.account_id).await;
    let sum: i64 = lines
        .iter()
        .map(|e| {
            let amount = e["amount"].as_i64().unwrap();
            if e["direction"] == "CREDIT" {
                amount
            } else {
                -amount
            }
        })
        .sum();
    assert_eq!(sum, expected, "the balance is the sum of the entries");
    assert_eq!(
        lines.iter().filter(|e| e["refundId"].is_string()).count(),
        3
    );
    if let Some(audit) = app.audit().await {
        assert!(audit.is_clean(), "books audit:\n{audit}");
    }
}
