//! Every route of API.md's table answers its success status with the documented shape.

use serde_json::{Value, json};

use super::helpers::{
    ACCOUNT_FIELDS, API_KEY_FIELDS, ENTRY_FIELDS, PAYMENT_FIELDS, assert_error, assert_keys,
    assert_success, assert_timestamp, assert_uuid, onboard, pay, payment_body, spawn_app,
    wait_terminal,
};

#[tokio::test]
async fn health_ready_reports_every_dependency_up() {
    let app = spawn_app().await;
    let reply = app.get_anon("/health/ready").await;
    assert_success(&reply, 200);
    assert!(reply.data()["status"].is_string(), "{}", reply.text);
    // Each dependency (store, queue, limiter) is reported `up`, wherever the object holds them.
    fn find_checks(v: &Value) -> Option<&Value> {
        let obj = v.as_object()?;
        if ["store", "queue", "limiter"]
            .iter()
            .all(|k| obj.contains_key(*k))
        {
            return Some(v);
        }
        obj.values().find_map(find_checks)
    }
    let checks = find_checks(reply.data())
        .unwrap_or_else(|| panic!("store/queue/limiter in {}", reply.text));
    for dependency in ["store", "queue", "limiter"] {
        assert_eq!(checks[dependency], "up", "{dependency}: {}", reply.text);
    }
}

#[tokio::test]
async fn health_answers_without_a_key_even_with_a_bad_one() {
    let app = spawn_app().await;
    let reply = app.get("/health", "sk_test_not_a_key").await;
    assert_success(&reply, 200);
    assert_eq!(reply.data()["status"], "healthy");
    assert_eq!(reply.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn create_payment_is_202_pending_with_every_field() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let body = json!({"merchantId": m.account_id, "amount": 5000, "currency": "USD", "source": "tok_visa", "description": "Order 1001"});
    let reply = app.post("/payments", &m.key, &body, None).await;
    assert_success(&reply, 202);
    let p = reply.data();
    assert_keys(p, PAYMENT_FIELDS);
    assert_uuid(&p["id"]);
    assert_eq!(p["merchantId"], m.account_id.as_str());
    assert!(
        p["amount"].is_i64(),
        "money is an integer JSON number: {}",
        reply.text
    );
    assert_eq!(p["amount"], 5000);
    assert_eq!(p["currency"], "USD");
    assert_eq!(p["source"], "tok_visa");
    assert_eq!(p["description"], "Order 1001");
    assert_eq!(p["status"], "PENDING");
    assert_eq!(p["failureReason"], Value::Null);
    assert_eq!(p["idempotencyKey"], Value::Null);
    assert_timestamp(&p["createdAt"]);
    assert_timestamp(&p["updatedAt"]);
    assert!(
        reply.text.contains("\"amount\":5000"),
        "amount is not a string or float: {}",
        reply.text
    );
}

#[tokio::test]
async fn payment_defaults_merchant_to_own_account_and_description() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let reply = app
        .post(
            "/payments",
            &m.key,
            &json!({"amount": 100, "currency": "USD", "source": "tok_visa"}),
            None,
        )
        .await;
    assert_success(&reply, 202);
    assert_eq!(reply.data()["merchantId"], m.account_id.as_str());
    assert_eq!(reply.data()["description"], "API Payment");
}

#[tokio::test]
async fn get_payment_wraps_it_in_payment_and_settles() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let created = pay(&app, &m.key, &m.account_id, 1234, "tok_visa").await;
    let id = created["id"].as_str().unwrap();
    let reply = app.get(&format!("/payments/{id}"), &m.key).await;
    assert_success(&reply, 200);
    assert_keys(reply.data(), &["payment"]);
    let p = &reply.data()["payment"];
    assert_keys(p, PAYMENT_FIELDS);
    assert_eq!(p["id"], id);
    assert_eq!(p["amount"], 1234);
    assert!(["PENDING", "PROCESSING", "SUCCESS"].contains(&p["status"].as_str().unwrap()));
    let done = wait_terminal(&app, &m.key, id).await;
    assert_eq!(done["status"], "SUCCESS");
    assert_eq!(done["failureReason"], Value::Null);
    assert_eq!(
        done["createdAt"], created["createdAt"],
        "createdAt never changes"
    );
    assert!(done["updatedAt"].as_str().unwrap() >= created["updatedAt"].as_str().unwrap());
}

#[tokio::test]
async fn list_payments_is_items_and_has_more_newest_first() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let empty = app.get("/payments", &m.key).await;
    assert_success(&empty, 200);
    assert_eq!(empty.data(), &json!({"items": [], "hasMore": false}));
    let mut ids = Vec::new();
    for amount in [100, 200, 300] {
        ids.push(
            pay(&app, &m.key, &m.account_id, amount, "tok_visa").await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let reply = app.get("/payments", &m.key).await;
    assert_success(&reply, 200);
    assert_keys(reply.data(), &["items", "hasMore"]);
    assert_eq!(reply.data()["hasMore"], false);
    for item in reply.items() {
        assert_keys(&item, PAYMENT_FIELDS);
    }
    ids.reverse();
    assert_eq!(reply.item_ids(), ids, "newest first");
}

#[tokio::test]
async fn create_account_is_201_and_readable() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let reply = app
        .post(
            "/accounts",
            &m.key,
            &json!({"name": "Savings", "currency": "EUR"}),
            None,
        )
        .await;
    assert_success(&reply, 201);
    let a = reply.data().clone();
    assert_keys(&a, ACCOUNT_FIELDS);
    assert_uuid(&a["id"]);
    assert_eq!(a["name"], "Savings");
    assert_eq!(a["balance"], 0);
    assert!(a["balance"].is_i64());
    assert_eq!(a["currency"], "EUR");
    assert_eq!(a["allowNegative"], false);
    assert_timestamp(&a["createdAt"]);

    let read = app
        .get(&format!("/accounts/{}", a["id"].as_str().unwrap()), &m.key)
        .await;
    assert_success(&read, 200);
    assert_eq!(read.data(), &a, "GET answers the account as created");

    // The merchant owns the account it opened: it may take payments into it.
    let body =
        json!({"merchantId": a["id"], "amount": 700, "currency": "EUR", "source": "tok_visa"});
    let paid = app.post("/payments", &m.key, &body, None).await;
    assert_success(&paid, 202);
    assert_eq!(
        wait_terminal(&app, &m.key, paid.data()["id"].as_str().unwrap()).await["status"],
        "SUCCESS"
    );
    assert_eq!(
        crate::helpers::balance(&app, &m.key, a["id"].as_str().unwrap()).await,
        700
    );
}

#[tokio::test]
async fn account_entries_list_the_credit_of_a_payment() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let empty = app
        .get(&format!("/accounts/{}/entries", m.account_id), &m.key)
        .await;
    assert_success(&empty, 200);
    assert_eq!(empty.data(), &json!({"items": [], "hasMore": false}));

    let p = pay(&app, &m.key, &m.account_id, 2500, "tok_visa").await;
    let id = p["id"].as_str().unwrap();
    wait_terminal(&app, &m.key, id).await;
    let reply = app
        .get(&format!("/accounts/{}/entries", m.account_id), &m.key)
        .await;
    assert_success(&reply, 200);
    assert_eq!(reply.data()["hasMore"], false);
    let items = reply.items();
    assert_eq!(items.len(), 1, "{}", reply.text);
    let e = &items[0];
    assert_keys(e, ENTRY_FIELDS);
    assert_uuid(&e["id"]);
    assert_uuid(&e["transactionId"]);
    assert_eq!(e["paymentId"], id);
    assert_eq!(e["accountId"], m.account_id.as_str());
    assert_eq!(e["direction"], "CREDIT");
    assert_eq!(e["amount"], 2500);
    assert_timestamp(&e["createdAt"]);
}

#[tokio::test]
async fn create_merchant_returns_merchant_account_and_a_working_key_once() {
    let app = spawn_app().await;
    let reply = app
        .post(
            "/merchants",
            &app.platform_key,
            &json!({"name": "Book Store", "currency": "INR"}),
            None,
        )
        .await;
    assert_success(&reply, 201);
    let d = reply.data();
    assert_keys(d, &["merchant", "account", "apiKey"]);
    assert_keys(&d["merchant"], &["id", "name", "createdAt"]);
    assert_uuid(&d["merchant"]["id"]);
    assert_eq!(d["merchant"]["name"], "Book Store");
    assert_timestamp(&d["merchant"]["createdAt"]);
    assert_keys(&d["account"], ACCOUNT_FIELDS);
    assert_eq!(d["account"]["currency"], "INR");
    assert_eq!(d["account"]["balance"], 0);
    assert_eq!(d["account"]["allowNegative"], false);
    let mut minted = API_KEY_FIELDS.to_vec();
    minted.push("key");
    assert_keys(&d["apiKey"], &minted);
    assert_eq!(d["apiKey"]["revokedAt"], Value::Null);
    let key = d["apiKey"]["key"].as_str().unwrap();
    let prefix = d["apiKey"]["prefix"].as_str().unwrap();
    assert!(key.starts_with("sk_test_"), "{key}");
    assert!(
        key.starts_with(prefix) && prefix.len() < key.len(),
        "prefix {prefix} of {key}"
    );

    // The raw key authenticates as the merchant, and is never shown again.
    let account_id = d["account"]["id"].as_str().unwrap();
    let own = app.get(&format!("/accounts/{account_id}"), key).await;
    assert_success(&own, 200);
    assert_eq!(own.data(), &d["account"]);
    let listed = app.get("/api-keys", key).await;
    assert_success(&listed, 200);
    assert!(
        !listed.text.contains(key),
        "the raw key is shown once: {}",
        listed.text
    );
}

#[tokio::test]
async fn mint_key_with_an_empty_body_and_no_content_type() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let reply = app
        .send(app.client.post(app.url("/api-keys")).bearer_auth(&m.key))
        .await;
    assert_success(&reply, 201);
    let k = reply.data();
    let mut minted = API_KEY_FIELDS.to_vec();
    minted.push("key");
    assert_keys(k, &minted);
    assert_uuid(&k["id"]);
    assert_timestamp(&k["createdAt"]);
    assert_eq!(k["revokedAt"], Value::Null);
    let new_key = k["key"].as_str().unwrap();
    assert_ne!(new_key, m.key);
    assert!(new_key.starts_with(k["prefix"].as_str().unwrap()));

    // The new key acts for the same merchant.
    let paid = app
        .post(
            "/payments",
            new_key,
            &payment_body(&m.account_id, 100, "tok_visa"),
            None,
        )
        .await;
    assert_success(&paid, 202);
    let seen = app
        .get(
            &format!("/payments/{}", paid.data()["id"].as_str().unwrap()),
            &m.key,
        )
        .await;
    assert_success(&seen, 200);

    // `{}` is the same as an empty body.
    let braces = app.post("/api-keys", &m.key, &json!({}), None).await;
    assert_success(&braces, 201);
}

#[tokio::test]
async fn list_keys_shows_no_secret_and_no_hash() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let second = app.post("/api-keys", &m.key, &json!({}), None).await;
    assert_success(&second, 201);
    let second_key = second.data()["key"].as_str().unwrap().to_owned();
    let reply = app.get("/api-keys", &m.key).await;
    assert_success(&reply, 200);
    assert_keys(reply.data(), &["items", "hasMore"]);
    let items = reply.items();
    assert_eq!(items.len(), 2, "{}", reply.text);
    let mut ids: Vec<String> = reply.item_ids();
    ids.sort();
    let mut expected = vec![
        m.key_id.clone(),
        second.data()["id"].as_str().unwrap().to_owned(),
    ];
    expected.sort();
    assert_eq!(ids, expected);
    for item in &items {
        assert_keys(item, API_KEY_FIELDS);
        assert_eq!(item["revokedAt"], Value::Null);
    }
    assert!(
        !reply.text.contains(&m.key) && !reply.text.contains(&second_key),
        "no raw key: {}",
        reply.text
    );
    assert!(
        !reply.text.to_ascii_lowercase().contains("hash"),
        "no hash field: {}",
        reply.text
    );
    // Nothing that looks like a SHA-256 hex digest.
    fn has_digest(v: &Value) -> bool {
        match v {
            Value::String(s) => {
                s.len() >= 64 && s.bytes().filter(u8::is_ascii_hexdigit).count() >= 64
            }
            Value::Array(a) => a.iter().any(has_digest),
            Value::Object(o) => o.values().any(has_digest),
            _ => false,
        }
    }
    assert!(!has_digest(reply.data()), "{}", reply.text);
}

#[tokio::test]
async fn revoke_key_is_200_and_the_key_fails_from_the_next_request() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let second = app.post("/api-keys", &m.key, &json!({}), None).await;
    assert_success(&second, 201);
    let (second_id, second_key) = (
        second.data()["id"].as_str().unwrap().to_owned(),
        second.data()["key"].as_str().unwrap().to_owned(),
    );
    assert_success(&app.get("/payments", &second_key).await, 200);

    let revoked = app.delete(&format!("/api-keys/{second_id}"), &m.key).await;
    assert_success(&revoked, 200);
    let gone = app.get("/payments", &second_key).await;
    assert_error(&gone, 401, "unauthorized");
    let unknown = app.get("/payments", "sk_test_unknownunknownunknown").await;
    assert_eq!(
        gone.json["error"], unknown.json["error"],
        "a revoked key is like an unknown one"
    );

    // The listing shows the revocation; the other key still works.
    let listed = app.get("/api-keys", &m.key).await;
    assert_success(&listed, 200);
    let item = listed
        .items()
        .into_iter()
        .find(|i| i["id"] == second_id.as_str())
        .expect("still listed");
    assert_timestamp(&item["revokedAt"]);
    let other = listed
        .items()
        .into_iter()
        .find(|i| i["id"] == m.key_id.as_str())
        .unwrap();
    assert_eq!(other["revokedAt"], Value::Null);

    // A key may revoke itself; the next request with it is refused.
    let own = app.delete(&format!("/api-keys/{}", m.key_id), &m.key).await;
    assert_success(&own, 200);
    assert_error(&app.get("/api-keys", &m.key).await, 401, "unauthorized");
}

#[tokio::test]
async fn platform_key_may_list_and_revoke_any_key() {
    let app = spawn_app().await;
    let a = onboard(&app, "A", "USD").await;
    let b = onboard(&app, "B", "USD").await;
    let listed = app.get("/api-keys", &app.platform_key).await;
    assert_success(&listed, 200);
    let ids = listed.item_ids();
    assert!(
        ids.contains(&a.key_id) && ids.contains(&b.key_id),
        "{}",
        listed.text
    );
    for item in listed.items() {
        assert!(item.get("key").is_none(), "{item}");
    }
    let revoked = app
        .delete(&format!("/api-keys/{}", b.key_id), &app.platform_key)
        .await;
    assert_success(&revoked, 200);
    assert_error(&app.get("/payments", &b.key).await, 401, "unauthorized");
    assert_success(&app.get("/payments", &a.key).await, 200);
}
