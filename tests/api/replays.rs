//! Idempotency of the v1.1 decisions (API.md): capture, cancel and refund under an
//! `Idempotency-Key` run once; the same request again is replayed byte for byte with
//! `Idempotent-Replayed: true`; a different request under the key is 422; an error releases it.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::helpers::{
    Reply, TestApp, assert_error, assert_success, authorized, entries, onboard, payment, spawn_app,
    succeeded, wait_refund, wait_terminal,
};

fn replayed(reply: &Reply) -> bool {
    reply.header("idempotent-replayed") == Some("true")
}

/// Asserts `again` is `first` replayed: same status and body bytes, the replay header, and
/// its own request id.
#[track_caller]
fn assert_replay(first: &Reply, again: &Reply) {
    assert!(!replayed(first), "the first answer is not a replay");
    assert!(
        replayed(again),
        "Idempotent-Replayed: true; {:?}",
        again.headers
    );
    assert_eq!(again.status, first.status);
    assert_eq!(again.text, first.text, "byte-identical body");
    assert_ne!(again.header("x-request-id"), first.header("x-request-id"));
}

async fn post_keyed(app: &TestApp, key: &str, path: &str, body: &Value, ikey: &str) -> Reply {
    app.post(path, key, body, Some(ikey)).await
}

#[tokio::test]
async fn a_capture_replayed_under_its_key_captures_once() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let id = authorized(&app, &m.key, &m.account_id, 1_000).await;
    let path = format!("/payments/{id}/capture");
    let body = json!({"amount": 400});
    let first = post_keyed(&app, &m.key, &path, &body, "cap-1").await;
    assert_success(&first, 202);
    let again = post_keyed(&app, &m.key, &path, &body, "cap-1").await;
    assert_replay(&first, &again);
    // Key order does not change the fingerprint.
    let spaced = app
        .send(
            app.client
                .post(app.url(&path))
                .bearer_auth(&m.key)
                .header("Idempotency-Key", "cap-1")
                .header("Content-Type", "application/json")
                .body("{ \"amount\" : 400 }"),
        )
        .await;
    assert_replay(&first, &spaced);
    let done = wait_terminal(&app, &m.key, &id).await;
    assert_eq!(done["amountCaptured"], 400);
    // After settling, the replay is still the stored 202, not a 409.
    let later = post_keyed(&app, &m.key, &path, &body, "cap-1").await;
    assert_replay(&first, &later);
    let charges: Vec<Value> = entries(&app, &m.key, &m.account_id).await;
    assert_eq!(charges.len(), 1, "one capture posting");
    // Another body under the key is 422; the same body under a new key is a new request (409).
    let other = post_keyed(&app, &m.key, &path, &json!({"amount": 500}), "cap-1").await;
    assert_error(&other, 422, "idempotency_key_reused");
    let fresh = post_keyed(&app, &m.key, &path, &body, "cap-2").await;
    assert_error(&fresh, 409, "invalid_state");
    // Another route under the key is another request.
    let elsewhere = post_keyed(
        &app,
        &m.key,
        &format!("/payments/{id}/cancel"),
        &json!({}),
        "cap-1",
    )
    .await;
    assert_error(&elsewhere, 422, "idempotency_key_reused");
}

#[tokio::test]
async fn a_cancel_replayed_under_its_key_answers_the_stored_200() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let id = authorized(&app, &m.key, &m.account_id, 1_000).await;
    let path = format!("/payments/{id}/cancel");
    let first = post_keyed(&app, &m.key, &path, &json!({}), "cancel-1").await;
    assert_success(&first, 200);
    assert_eq!(first.data()["status"], "CANCELED");
    let again = post_keyed(&app, &m.key, &path, &json!({}), "cancel-1").await;
    assert_replay(&first, &again);
    // An empty body is `{}`: the same fingerprint.
    let empty = app
        .send(
            app.client
                .post(app.url(&path))
                .bearer_auth(&m.key)
                .header("Idempotency-Key", "cancel-1"),
        )
        .await;
    assert_replay(&first, &empty);
    // Without the key it is a new request, refused by the state.
    assert_error(
        &app.post(&path, &m.key, &json!({}), None).await,
        409,
        "invalid_state",
    );
    assert_eq!(
        payment(&app, &m.key, &id).await["cancellationReason"],
        "requested"
    );
}

#[tokio::test]
async fn a_refund_replayed_under_its_key_refunds_once() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let paid = succeeded(&app, &m.key, &m.account_id, 1_000).await;
    let path = format!("/payments/{paid}/refunds");
    let body = json!({"amount": 250, "reason": "duplicate", "metadata": {"ticket": "T-1"}});
    let first = post_keyed(&app, &m.key, &path, &body, "refund-1").await;
    assert_success(&first, 202);
    assert_eq!(first.data()["idempotencyKey"], "refund-1");
    let again = post_keyed(&app, &m.key, &path, &body, "refund-1").await;
    assert_replay(&first, &again);
    let refund_id = first.data()["id"].as_str().unwrap().to_owned();
    let done = wait_refund(&app, &m.key, &refund_id).await;
    assert_eq!(done["status"], "SUCCESS");
    assert_eq!(done["idempotencyKey"], "refund-1");
    let later = post_keyed(&app, &m.key, &path, &body, "refund-1").await;
    assert_replay(&first, &later);
    let listed = app.get(&format!("/refunds?paymentId={paid}"), &m.key).await;
    assert_eq!(listed.item_ids(), vec![refund_id]);
    assert_eq!(payment(&app, &m.key, &paid).await["amountRefunded"], 250);
    // Metadata is part of the fingerprint.
    let mut changed = body.clone();
    changed["metadata"]["ticket"] = json!("T-2");
    let reused = post_keyed(&app, &m.key, &path, &changed, "refund-1").await;
    assert_error(&reused, 422, "idempotency_key_reused");
}

#[tokio::test]
async fn ten_identical_refunds_under_one_key_at_once_make_one_refund() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let paid = succeeded(&app, &m.key, &m.account_id, 1_000).await;
    let path = format!("/payments/{paid}/refunds");
    let barrier = Arc::new(Barrier::new(10));
    let mut tasks = JoinSet::new();
    for _ in 0..10 {
        let (app, barrier, key, path) = (app.clone(), barrier.clone(), m.key.clone(), path.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            app.post(&path, &key, &json!({"amount": 100}), Some("same"))
                .await
        });
    }
    let replies = tasks.join_all().await;
    let fresh: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == 202 && !replayed(r))
        .collect();
    assert_eq!(fresh.len(), 1, "one request ran");
    for reply in &replies {
        match reply.status {
            202 => assert_eq!(reply.text, fresh[0].text),
            _ => assert_error(reply, 409, "idempotency_conflict"),
        }
    }
    let listed = app.get(&format!("/refunds?paymentId={paid}"), &m.key).await;
    assert_eq!(listed.items().len(), 1, "one refund");
}

#[tokio::test]
async fn an_error_releases_the_key_for_the_corrected_request() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let id = authorized(&app, &m.key, &m.account_id, 1_000).await;
    let path = format!("/payments/{id}/capture");
    // Too much (422), then a bad body (400): neither keeps the key.
    let over = post_keyed(&app, &m.key, &path, &json!({"amount": 5_000}), "k").await;
    assert_error(&over, 422, "amount_exceeds_capturable");
    let bad = post_keyed(&app, &m.key, &path, &json!({"amount": 0}), "k").await;
    assert_error(&bad, 400, "validation_error");
    let ok = post_keyed(&app, &m.key, &path, &json!({"amount": 1_000}), "k").await;
    assert_success(&ok, 202);
    assert!(!replayed(&ok));
    assert_eq!(
        wait_terminal(&app, &m.key, &id).await["amountCaptured"],
        1_000
    );
    // A refund refused for its amount does not keep the key either.
    let refunds = format!("/payments/{id}/refunds");
    let over = post_keyed(&app, &m.key, &refunds, &json!({"amount": 1_001}), "r").await;
    assert_error(&over, 422, "amount_exceeds_refundable");
    let ok = post_keyed(&app, &m.key, &refunds, &json!({"amount": 1_000}), "r").await;
    assert_success(&ok, 202);
    assert!(!replayed(&ok));
}
