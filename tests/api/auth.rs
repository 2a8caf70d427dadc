//! Authentication (401, one answer for every bad key), authorisation (403), and the route
//! table's own answers (404 unknown route, 405 wrong method) that come before any key check.

use serde_json::json;

use super::helpers::{
    Reply, TestApp, assert_error, assert_success, onboard, payment_body, spawn_app,
};

async fn get_with_auth(app: &TestApp, path: &str, authorization: Option<&str>) -> Reply {
    let mut request = app.client.get(app.url(path));
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    app.send(request).await
}

#[tokio::test]
async fn every_bad_credential_is_the_same_401() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let second = app.post("/api-keys", &m.key, &json!({}), None).await;
    assert_success(&second, 201);
    let revoked_key = second.data()["key"].as_str().unwrap().to_owned();
    let revoked = app
        .delete(
            &format!("/api-keys/{}", second.data()["id"].as_str().unwrap()),
            &m.key,
        )
        .await;
    assert_success(&revoked, 200);

    let wrong_scheme = format!("Basic {}", m.key);
    let no_scheme = m.key.clone();
    let unknown = "Bearer sk_test_0000000000000000000000000000".to_owned();
    let tampered = format!("Bearer {}x", m.key);
    let revoked_bearer = format!("Bearer {revoked_key}");
    let cases: Vec<(&str, Option<&str>)> = vec![
        ("missing header", None),
        ("wrong scheme", Some(&wrong_scheme)),
        ("no scheme", Some(&no_scheme)),
        ("empty bearer", Some("Bearer ")),
        ("unknown key", Some(&unknown)),
        ("tampered key", Some(&tampered)),
        ("revoked key", Some(&revoked_bearer)),
    ];
    let mut first_error = None;
    for (what, authorization) in cases {
        let reply = get_with_auth(&app, "/payments", authorization).await;
        assert_error(&reply, 401, "unauthorized");
        let error = reply.json["error"].clone();
        match &first_error {
            None => first_error = Some(error),
            Some(first) => assert_eq!(&error, first, "{what}: the same error object for every 401"),
        }
        assert!(!reply.text.contains(&m.key), "{what}: no key in the body");
    }
    // The genuine key still works on the same route.
    assert_success(
        &get_with_auth(&app, "/payments", Some(&format!("Bearer {}", m.key))).await,
        200,
    );
}

#[tokio::test]
async fn every_protected_route_needs_a_key() {
    let app = spawn_app().await;
    let id = crate::helpers::random_id();
    let routes = [
        ("POST", "/payments".to_owned()),
        ("GET", "/payments".to_owned()),
        ("GET", format!("/payments/{id}")),
        ("POST", "/accounts".to_owned()),
        ("GET", format!("/accounts/{id}")),
        ("GET", format!("/accounts/{id}/entries")),
        ("POST", "/merchants".to_owned()),
        ("POST", "/api-keys".to_owned()),
        ("GET", "/api-keys".to_owned()),
        ("DELETE", format!("/api-keys/{id}")),
    ];
    for (method, path) in routes {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = app.client.request(method.clone(), app.url(&path));
        if method == reqwest::Method::POST {
            request = request.json(&json!({}));
        }
        let reply = app.send(request).await;
        assert_error(&reply, 401, "unauthorized");
        assert!(reply.header("x-request-id").is_some());
    }
}

#[tokio::test]
async fn a_merchant_key_may_not_pay_into_another_merchants_account() {
    let app = spawn_app().await;
    let a = onboard(&app, "A", "USD").await;
    let b = onboard(&app, "B", "USD").await;
    let reply = app
        .post(
            "/payments",
            &a.key,
            &payment_body(&b.account_id, 100, "tok_visa"),
            None,
        )
        .await;
    assert_error(&reply, 403, "forbidden");
    // An account B opened is just as off limits.
    let opened = app
        .post(
            "/accounts",
            &b.key,
            &json!({"name": "B2", "currency": "USD"}),
            None,
        )
        .await;
    assert_success(&opened, 201);
    let other = opened.data()["id"].as_str().unwrap();
    assert_error(
        &app.post(
            "/payments",
            &a.key,
            &payment_body(other, 100, "tok_visa"),
            None,
        )
        .await,
        403,
        "forbidden",
    );
    let listed = app.get("/payments", &app.platform_key).await;
    assert_eq!(listed.items().len(), 0, "nothing stored");
    assert_eq!(
        crate::helpers::balance(&app, &b.key, &b.account_id).await,
        0
    );
}

#[tokio::test]
async fn only_the_platform_key_onboards_merchants() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let reply = app
        .post(
            "/merchants",
            &m.key,
            &json!({"name": "Sneaky", "currency": "USD"}),
            None,
        )
        .await;
    assert_error(&reply, 403, "forbidden");
    let keys = app.get("/api-keys", &app.platform_key).await;
    assert_eq!(
        keys.items().len(),
        1,
        "no merchant (and key) was created: {}",
        keys.text
    );
}

#[tokio::test]
async fn the_platform_key_mints_no_api_keys() {
    let app = spawn_app().await;
    onboard(&app, "Coffee Shop", "USD").await;
    let reply = app
        .send(
            app.client
                .post(app.url("/api-keys"))
                .bearer_auth(&app.platform_key),
        )
        .await;
    assert_error(&reply, 403, "forbidden");
    assert!(reply.json["error"].get("key").is_none() && !reply.text.contains("sk_test_"));
    let keys = app.get("/api-keys", &app.platform_key).await;
    assert_eq!(keys.items().len(), 1, "{}", keys.text);
}

#[tokio::test]
async fn unknown_routes_are_404_before_any_key_check() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/nope",
        "/api/v2/payments",
        "/",
        "/api/v1/payments/x/y",
        "/api/v1/merchants/list",
    ] {
        let anonymous = app
            .send(app.client.get(format!("{}{path}", app.origin)))
            .await;
        assert_error(&anonymous, 404, "not_found");
        let keyed = app
            .send(
                app.client
                    .get(format!("{}{path}", app.origin))
                    .bearer_auth(&app.platform_key),
            )
            .await;
        assert_error(&keyed, 404, "not_found");
    }
}

#[tokio::test]
async fn a_wrong_method_on_a_known_route_is_405_before_any_key_check() {
    let app = spawn_app().await;
    let id = crate::helpers::random_id();
    for (method, path) in [
        ("DELETE", "/payments".to_owned()),
        ("PUT", format!("/payments/{id}")),
        ("POST", format!("/payments/{id}")),
        ("GET", "/merchants".to_owned()),
        ("PATCH", format!("/accounts/{id}")),
        ("GET", format!("/api-keys/{id}")),
        ("POST", "/health".to_owned()),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        for key in [None, Some(app.platform_key.as_str())] {
            let mut request = app.client.request(method.clone(), app.url(&path));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let reply = app.send(request).await;
            assert_eq!(reply.status, 405, "{method} {path}: {}", reply.text);
            assert_eq!(reply.json["success"], false, "{}", reply.text);
            assert!(reply.code().len() > 1, "an error code: {}", reply.text);
            assert!(
                reply.header("allow").is_some_and(|a| !a.is_empty()),
                "405 names the allowed methods"
            );
        }
    }
}

#[tokio::test]
async fn the_key_is_checked_before_the_body_and_the_path_id() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let big = vec![b' '; 70_000];
    let bodies: Vec<(Option<&str>, Vec<u8>)> = vec![
        (Some("application/json"), b"{not json".to_vec()),
        (Some("application/json"), b"{}".to_vec()),
        (Some("text/plain"), b"hello".to_vec()),
        (Some("application/json"), big),
    ];
    for (ct, body) in bodies {
        let mut request = app
            .client
            .post(app.url("/payments"))
            .body(body)
            .header("Authorization", "Bearer sk_test_nope");
        if let Some(ct) = ct {
            request = request.header("Content-Type", ct);
        }
        assert_error(&app.send(request).await, 401, "unauthorized");
    }
    assert_error(
        &app.get_anon("/payments/not-a-uuid").await,
        401,
        "unauthorized",
    );
    // With the key, the same requests reach the body checks.
    assert_error(
        &app.post_text("/payments", &m.key, "{not json").await,
        400,
        "invalid_json",
    );
    assert_error(
        &app.get("/payments/not-a-uuid", &m.key).await,
        400,
        "validation_error",
    );
}

#[tokio::test]
async fn the_body_is_checked_before_the_idempotency_key() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let first = app
        .post(
            "/payments",
            &m.key,
            &payment_body(&m.account_id, 100, "tok_visa"),
            Some("order"),
        )
        .await;
    assert_success(&first, 202);
    // An invalid body under a used key is a validation error, not a key reuse.
    let invalid = app
        .post(
            "/payments",
            &m.key,
            &payment_body(&m.account_id, -5, "tok_visa"),
            Some("order"),
        )
        .await;
    assert_error(&invalid, 400, "validation_error");
    let malformed = app
        .send(
            app.client
                .post(app.url("/payments"))
                .bearer_auth(&m.key)
                .header("Content-Type", "application/json")
                .header("Idempotency-Key", "order")
                .body("{"),
        )
        .await;
    assert_error(&malformed, 400, "invalid_json");
    // And the key was not spent by them: the original still replays.
    let replay = app
        .post(
            "/payments",
            &m.key,
            &payment_body(&m.account_id, 100, "tok_visa"),
            Some("order"),
        )
        .await;
    assert_eq!(
        (replay.status, replay.text.as_str()),
        (202, first.text.as_str())
    );
}
