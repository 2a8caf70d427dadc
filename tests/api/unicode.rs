//! Text is stored byte for byte as given: emoji, zero-width and right-to-left characters in
//! names, line breaks in descriptions.

use serde_json::json;

use super::helpers::{assert_success, onboard, pay, spawn_app};

const TRICKY: &str = "Café 🚀 a\u{200B}b\u{200D}c \u{202E}שלום\u{202C} 👩‍👩‍👧 ﷽";

#[tokio::test]
async fn an_account_name_round_trips_byte_equal() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let created = app
        .post(
            "/accounts",
            &m.key,
            &json!({"name": TRICKY, "currency": "USD"}),
            None,
        )
        .await;
    assert_success(&created, 201);
    assert_eq!(
        created.data()["name"].as_str().unwrap().as_bytes(),
        TRICKY.as_bytes()
    );
    let read = app
        .get(
            &format!("/accounts/{}", created.data()["id"].as_str().unwrap()),
            &m.key,
        )
        .await;
    assert_success(&read, 200);
    assert_eq!(
        read.data()["name"].as_str().unwrap().as_bytes(),
        TRICKY.as_bytes()
    );

    // Characters, not bytes, are counted: 255 four-byte emoji are a valid name.
    let emoji = "🚀".repeat(255);
    let reply = app
        .post(
            "/accounts",
            &m.key,
            &json!({"name": emoji, "currency": "USD"}),
            None,
        )
        .await;
    assert_success(&reply, 201);
    assert_eq!(reply.data()["name"], emoji.as_str());
}

#[tokio::test]
async fn a_merchant_name_round_trips_byte_equal() {
    let app = spawn_app().await;
    let reply = app
        .post(
            "/merchants",
            &app.platform_key,
            &json!({"name": TRICKY, "currency": "EUR"}),
            None,
        )
        .await;
    assert_success(&reply, 201);
    assert_eq!(
        reply.data()["merchant"]["name"]
            .as_str()
            .unwrap()
            .as_bytes(),
        TRICKY.as_bytes()
    );
}

#[tokio::test]
async fn a_description_with_line_breaks_round_trips() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let description = format!("Line one\nLine two\r\n\tindented {TRICKY}");
    let body =
        json!({"amount": 100, "currency": "USD", "source": "tok_visa", "description": description});
    let created = app.post("/payments", &m.key, &body, None).await;
    assert_success(&created, 202);
    assert_eq!(created.data()["description"], description.as_str());
    let id = created.data()["id"].as_str().unwrap();
    let read = app.get(&format!("/payments/{id}"), &m.key).await;
    assert_eq!(
        read.data()["payment"]["description"]
            .as_str()
            .unwrap()
            .as_bytes(),
        description.as_bytes()
    );
    // An untouched payment keeps the default.
    let plain = pay(&app, &m.key, &m.account_id, 1, "tok_visa").await;
    assert_eq!(plain["description"], "API Payment");
}
