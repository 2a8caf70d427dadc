//! Merchant isolation (BOLA): a merchant key sees only what its merchant owns; everything else
//! is a 404 indistinguishable from an id that does not exist. The platform key sees all.

use serde_json::json;

use super::helpers::{
    Merchant, TestApp, assert_error, assert_success, onboard, pay, random_id, spawn_app,
    wait_terminal,
};

struct World {
    app: TestApp,
    a: Merchant,
    b: Merchant,
    a_payment: String,
    b_payment: String,
    b_account: String,
    b_key_id: String,
    b_key: String,
}

async fn two_merchants() -> World {
    let app = spawn_app().await;
    let a = onboard(&app, "A", "USD").await;
    let b = onboard(&app, "B", "USD").await;
    let a_payment = pay(&app, &a.key, &a.account_id, 100, "tok_visa").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b_payment = pay(&app, &b.key, &b.account_id, 200, "tok_visa").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_terminal(&app, &a.key, &a_payment).await;
    wait_terminal(&app, &b.key, &b_payment).await;
    let opened = app
        .post(
            "/accounts",
            &b.key,
            &json!({"name": "B savings", "currency": "USD"}),
            None,
        )
        .await;
    assert_success(&opened, 201);
    let minted = app.post("/api-keys", &b.key, &json!({}), None).await;
    assert_success(&minted, 201);
    World {
        b_account: opened.data()["id"].as_str().unwrap().to_owned(),
        b_key_id: minted.data()["id"].as_str().unwrap().to_owned(),
        b_key: minted.data()["key"].as_str().unwrap().to_owned(),
        app,
        a,
        b,
        a_payment,
        b_payment,
    }
}

#[tokio::test]
async fn another_merchants_objects_are_404_like_random_ids() {
    let w = two_merchants().await;
    let (app, a) = (&w.app, &w.a);
    assert_ne!(w.a.id, w.b.id, "two merchants");
    let random = random_id();
    let probes = [
        (
            format!("/payments/{}", w.b_payment),
            format!("/payments/{random}"),
        ),
        (
            format!("/accounts/{}", w.b.account_id),
            format!("/accounts/{random}"),
        ),
        (
            format!("/accounts/{}", w.b_account),
            format!("/accounts/{random}"),
        ),
        (
            format!("/accounts/{}/entries", w.b.account_id),
            format!("/accounts/{random}/entries"),
        ),
        (
            format!("/accounts/{}/entries", w.b_account),
            format!("/accounts/{random}/entries"),
        ),
    ];
    for (theirs, nobodys) in probes {
        let hidden = app.get(&theirs, &a.key).await;
        let missing = app.get(&nobodys, &a.key).await;
        assert_error(&hidden, 404, "not_found");
        assert_error(&missing, 404, "not_found");
        assert_eq!(
            hidden.json["error"], missing.json["error"],
            "{theirs}: indistinguishable"
        );
        assert!(
            !hidden.text.contains(&w.b.account_id) && !hidden.text.contains(&w.b_payment),
            "{}",
            hidden.text
        );
    }
    // A system account is not a merchant's either.
    let world = app.system_accounts["USD"].clone();
    assert_error(
        &app.get(&format!("/accounts/{world}"), &a.key).await,
        404,
        "not_found",
    );
    assert_error(
        &app.get(&format!("/accounts/{world}/entries"), &a.key).await,
        404,
        "not_found",
    );
    // Their own is fine.
    assert_success(
        &app.get(&format!("/payments/{}", w.a_payment), &a.key).await,
        200,
    );
}

#[tokio::test]
async fn another_merchants_key_cannot_be_revoked() {
    let w = two_merchants().await;
    let app = &w.app;
    let hidden = app
        .delete(&format!("/api-keys/{}", w.b_key_id), &w.a.key)
        .await;
    let missing = app
        .delete(&format!("/api-keys/{}", random_id()), &w.a.key)
        .await;
    assert_error(&hidden, 404, "not_found");
    assert_error(&missing, 404, "not_found");
    assert_eq!(hidden.json["error"], missing.json["error"]);
    let first = app
        .delete(&format!("/api-keys/{}", w.b.key_id), &w.a.key)
        .await;
    assert_error(&first, 404, "not_found");
    // Both of B's keys still work.
    assert_success(&app.get("/payments", &w.b_key).await, 200);
    assert_success(&app.get("/payments", &w.b.key).await, 200);
}

#[tokio::test]
async fn lists_never_show_another_merchants_items() {
    let w = two_merchants().await;
    let app = &w.app;
    let payments = app.get("/payments?limit=100", &w.a.key).await;
    assert_success(&payments, 200);
    assert_eq!(payments.item_ids(), vec![w.a_payment.clone()]);
    let keys = app.get("/api-keys?limit=100", &w.a.key).await;
    assert_success(&keys, 200);
    assert_eq!(keys.item_ids(), vec![w.a.key_id.clone()]);
    let entries = app
        .get(&format!("/accounts/{}/entries", w.a.account_id), &w.a.key)
        .await;
    assert_success(&entries, 200);
    assert!(
        entries
            .items()
            .iter()
            .all(|e| e["paymentId"] == w.a_payment.as_str())
    );
    for status in ["SUCCESS", "PENDING", "FAILED"] {
        let filtered = app
            .get(&format!("/payments?status={status}"), &w.a.key)
            .await;
        assert!(
            !filtered.text.contains(&w.b_payment),
            "{status}: {}",
            filtered.text
        );
    }
    let b_keys = app.get("/api-keys", &w.b.key).await;
    let mut ids = b_keys.item_ids();
    ids.sort();
    let mut expected = vec![w.b.key_id.clone(), w.b_key_id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn the_platform_key_sees_everything() {
    let w = two_merchants().await;
    let app = &w.app;
    let pk = &app.platform_key;
    for id in [&w.a_payment, &w.b_payment] {
        assert_success(&app.get(&format!("/payments/{id}"), pk).await, 200);
    }
    for account in [&w.a.account_id, &w.b.account_id, &w.b_account] {
        assert_success(&app.get(&format!("/accounts/{account}"), pk).await, 200);
        assert_success(
            &app.get(&format!("/accounts/{account}/entries"), pk).await,
            200,
        );
    }
    let payments = app.get("/payments?limit=100", pk).await;
    let ids = payments.item_ids();
    assert!(
        ids.contains(&w.a_payment) && ids.contains(&w.b_payment),
        "{}",
        payments.text
    );
    let keys = app.get("/api-keys?limit=100", pk).await;
    let ids = keys.item_ids();
    for id in [&w.a.key_id, &w.b.key_id, &w.b_key_id] {
        assert!(ids.contains(id), "{}", keys.text);
    }
    // The platform may pay into any merchant's account.
    let paid = app
        .post(
            "/payments",
            pk,
            &crate::helpers::payment_body(&w.b_account, 5, "tok_visa"),
            None,
        )
        .await;
    assert_success(&paid, 202);
    let seen = app
        .get(
            &format!("/payments/{}", paid.data()["id"].as_str().unwrap()),
            &w.b.key,
        )
        .await;
    assert_success(&seen, 200);
}

#[tokio::test]
async fn accounts_the_platform_opens_are_not_a_merchants() {
    let app = spawn_app().await;
    let m = onboard(&app, "A", "USD").await;
    let opened = app
        .post(
            "/accounts",
            &app.platform_key,
            &json!({"name": "Platform float", "currency": "USD"}),
            None,
        )
        .await;
    assert_success(&opened, 201);
    let id = opened.data()["id"].as_str().unwrap();
    assert_success(
        &app.get(&format!("/accounts/{id}"), &app.platform_key).await,
        200,
    );
    let hidden = app.get(&format!("/accounts/{id}"), &m.key).await;
    let missing = app.get(&format!("/accounts/{}", random_id()), &m.key).await;
    assert_error(&hidden, 404, "not_found");
    assert_eq!(hidden.json["error"], missing.json["error"]);
}
