//! Cursor pagination of every list: `limit`, `startingAfter`, `hasMore`, newest first, and the
//! payments list's `status` filter.

use serde_json::json;

use super::helpers::{assert_success, onboard, pay, spawn_app, wait_terminal, walk_pages};

#[tokio::test]
async fn payments_page_through_with_limit_and_starting_after() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let mut created = Vec::new();
    for amount in 1..=5 {
        created.push(
            pay(&app, &m.key, &m.account_id, amount, "tok_visa").await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    created.reverse();
    let pages = walk_pages(&app, &m.key, "/payments", 2).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 1],
        "{pages:?}"
    );
    assert_eq!(pages.concat(), created, "newest first, no gaps, no repeats");

    // A page that ends exactly at the last item says there is no more.
    let pages = walk_pages(&app, &m.key, "/payments", 5).await;
    assert_eq!(pages, vec![created.clone()]);
    let reply = app
        .get(
            &format!("/payments?limit=4&startingAfter={}", created[0]),
            &m.key,
        )
        .await;
    assert_success(&reply, 200);
    assert_eq!(reply.item_ids(), created[1..].to_vec());
    assert_eq!(reply.data()["hasMore"], false);
}

#[tokio::test]
async fn the_default_page_is_20() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    for amount in 1..=21 {
        pay(&app, &m.key, &m.account_id, amount, "tok_visa").await;
    }
    let reply = app.get("/payments", &m.key).await;
    assert_success(&reply, 200);
    assert_eq!(reply.items().len(), 20);
    assert_eq!(reply.data()["hasMore"], true);
    let amounts: Vec<i64> = reply
        .items()
        .iter()
        .map(|p| p["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, (2..=21).rev().collect::<Vec<_>>(), "the newest 20");
    let all = app.get("/payments?limit=100", &m.key).await;
    assert_eq!(
        (all.items().len(), all.data()["hasMore"].as_bool()),
        (21, Some(false))
    );
}

#[tokio::test]
async fn payments_filter_by_status() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let mut succeeded = Vec::new();
    let mut failed = Vec::new();
    for (i, source) in [
        "tok_visa",
        "tok_chargeDeclined",
        "tok_visa",
        "tok_chargeDeclinedProcessingError",
        "tok_amex",
    ]
    .iter()
    .enumerate()
    {
        let id = pay(
            &app,
            &m.key,
            &m.account_id,
            10 + i64::try_from(i).unwrap(),
            source,
        )
        .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let done = wait_terminal(&app, &m.key, &id).await;
        if done["status"] == "SUCCESS" {
            succeeded.push(id)
        } else {
            failed.push(id)
        }
    }
    succeeded.reverse();
    failed.reverse();
    assert_eq!((succeeded.len(), failed.len()), (3, 2));
    let pages = walk_pages(&app, &m.key, "/payments?status=SUCCESS", 2).await;
    assert_eq!(pages.concat(), succeeded);
    let pages = walk_pages(&app, &m.key, "/payments?status=FAILED", 1).await;
    assert_eq!(pages.concat(), failed);
    for status in ["PENDING", "PROCESSING"] {
        let reply = app.get(&format!("/payments?status={status}"), &m.key).await;
        assert_success(&reply, 200);
        assert_eq!(
            reply.data(),
            &json!({"items": [], "hasMore": false}),
            "{status}"
        );
    }
    let reply = app.get("/payments?status=FAILED", &m.key).await;
    assert!(
        reply
            .items()
            .iter()
            .all(|p| p["status"] == "FAILED" && p["failureReason"].is_string())
    );
}

#[tokio::test]
async fn entries_page_through() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let mut payments = Vec::new();
    for amount in [100, 200, 300] {
        let id = pay(&app, &m.key, &m.account_id, amount, "tok_visa").await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        wait_terminal(&app, &m.key, &id).await;
        payments.push(id);
    }
    payments.reverse();
    let path = format!("/accounts/{}/entries", m.account_id);
    let pages = walk_pages(&app, &m.key, &path, 2).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1]);
    let all = app.get(&format!("{path}?limit=100"), &m.key).await;
    assert_eq!(pages.concat(), all.item_ids());
    let by_payment: Vec<String> = all
        .items()
        .iter()
        .map(|e| e["paymentId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(by_payment, payments, "newest first");
}

#[tokio::test]
async fn api_keys_page_through() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let mut ids = vec![m.key_id.clone()];
    for _ in 0..2 {
        let minted = app.post("/api-keys", &m.key, &json!({}), None).await;
        assert_success(&minted, 201);
        ids.push(minted.data()["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let pages = walk_pages(&app, &m.key, "/api-keys", 2).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(pages.concat(), ids, "newest first");
}
