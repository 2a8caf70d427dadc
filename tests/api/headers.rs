//! Headers: `X-Request-Id` (echoed when sane, replaced when not), the security headers on
//! every answer, duplicated credentials or idempotency keys, and CORS when configured.

use super::helpers::{
    Reply, TestApp, assert_error, assert_invalid_field, assert_success, onboard, payment_body,
    spawn_app, spawn_app_with,
};

async fn with_request_id(app: &TestApp, path: &str, key: Option<&str>, id: &str) -> Reply {
    let mut request = app.client.get(app.url(path)).header("X-Request-Id", id);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    app.send(request).await
}

fn is_sane(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b))
}

#[tokio::test]
async fn a_sane_request_id_is_echoed_on_every_answer() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let sane = "abc-123_x.y:Z";
    let longest = "r".repeat(128);
    for (path, key) in [
        ("/health", None),
        ("/payments", Some(m.key.as_str())),
        ("/payments", None),
        ("/nope", Some(m.key.as_str())),
        ("/payments/not-a-uuid", Some(m.key.as_str())),
    ] {
        for id in [sane, longest.as_str()] {
            let reply = with_request_id(&app, path, key, id).await;
            assert_eq!(reply.header("x-request-id"), Some(id), "{path}");
            assert_eq!(
                reply.json["meta"]["requestId"], id,
                "{path}: {}",
                reply.text
            );
        }
    }
    // One on a 201 too.
    let reply = app
        .send(
            app.client
                .post(app.url("/api-keys"))
                .bearer_auth(&m.key)
                .header("X-Request-Id", sane),
        )
        .await;
    assert_success(&reply, 201);
    assert_eq!(reply.header("x-request-id"), Some(sane));
}

#[tokio::test]
async fn an_insane_request_id_is_replaced() {
    let app = spawn_app().await;
    let too_long = "a".repeat(129);
    let very_long = "b".repeat(200);
    for insane in [
        too_long.as_str(),
        very_long.as_str(),
        "has space",
        "semi;colon",
        "slash/",
        "quote\"",
        "é",
    ] {
        let request = app.client.get(app.url("/health"));
        let request = if insane.is_ascii() {
            request.header("X-Request-Id", insane)
        } else {
            request.header(
                "X-Request-Id",
                reqwest::header::HeaderValue::from_bytes(insane.as_bytes()).unwrap(),
            )
        };
        let reply = app.send(request).await;
        assert_success(&reply, 200);
        let id = reply.header("x-request-id").expect("a new id");
        assert_ne!(id, insane);
        assert!(is_sane(id), "the replacement is sane: {id:?}");
        assert_eq!(reply.json["meta"]["requestId"], id);
    }
    // Without one, each answer gets its own.
    let a = app.get_anon("/health").await;
    let b = app.get_anon("/health").await;
    let (a, b) = (
        a.header("x-request-id").unwrap(),
        b.header("x-request-id").unwrap(),
    );
    assert!(is_sane(a) && is_sane(b));
    assert_ne!(a, b);
}

#[tokio::test]
async fn security_headers_are_on_every_answer() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let answers = vec![
        app.get_anon("/health").await,
        app.get("/payments", &m.key).await,
        app.post(
            "/payments",
            &m.key,
            &payment_body(&m.account_id, 100, "tok_visa"),
            None,
        )
        .await,
        app.get_anon("/payments").await,
        app.get_anon("/nope").await,
        app.post_raw("/payments", &m.key, Some("application/json"), "{")
            .await,
        app.send(app.client.delete(app.url("/payments"))).await,
    ];
    for reply in &answers {
        let h = |name: &str| reply.header(name).map(str::to_ascii_lowercase);
        assert_eq!(
            h("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{}",
            reply.status
        );
        assert!(
            matches!(h("x-frame-options").as_deref(), Some("deny" | "sameorigin")),
            "{}",
            reply.status
        );
        assert!(
            h("content-security-policy").is_some_and(|v| !v.is_empty()),
            "{}",
            reply.status
        );
        assert!(
            h("strict-transport-security").is_some_and(|v| v.contains("max-age=")),
            "{}",
            reply.status
        );
        assert!(
            h("cache-control").is_some_and(|v| v.contains("no-store")),
            "{}",
            reply.status
        );
        assert!(
            h("content-type").is_some_and(|v| v.starts_with("application/json")),
            "{}",
            reply.status
        );
        assert!(reply.header("x-powered-by").is_none());
    }
}

#[tokio::test]
async fn a_duplicated_authorization_header_is_400() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let other = onboard(&app, "Other", "USD").await;
    for (first, second) in [(&m.key, &other.key), (&m.key, &m.key)] {
        let reply = app
            .send(
                app.client
                    .get(app.url("/payments"))
                    .header("Authorization", format!("Bearer {first}"))
                    .header("Authorization", format!("Bearer {second}")),
            )
            .await;
        assert_invalid_field(&reply, "Authorization");
        assert!(!reply.text.contains(first.as_str()), "no key in the body");
    }
}

#[tokio::test]
async fn a_duplicated_idempotency_key_header_is_400() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    for (first, second) in [("k1", "k2"), ("k1", "k1")] {
        let reply = app
            .send(
                app.client
                    .post(app.url("/payments"))
                    .bearer_auth(&m.key)
                    .json(&payment_body(&m.account_id, 100, "tok_visa"))
                    .header("Idempotency-Key", first)
                    .header("Idempotency-Key", second),
            )
            .await;
        assert_invalid_field(&reply, "Idempotency-Key");
    }
    let listed = app.get("/payments", &m.key).await;
    assert_eq!(listed.items().len(), 0, "nothing stored");
}

#[tokio::test]
async fn cors_answers_only_configured_origins() {
    let app = spawn_app_with(&[("CORS_ORIGIN", "https://shop.example")]).await;
    let allowed = app
        .send(
            app.client
                .get(app.url("/health"))
                .header("Origin", "https://shop.example"),
        )
        .await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    let exposed = allowed
        .header("access-control-expose-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    // A browser's preflight for a keyed JSON POST is answered.
    let preflight = app
        .send(
            app.client
                .request(reqwest::Method::OPTIONS, app.url("/payments"))
                .header("Origin", "https://shop.example")
                .header("Access-Control-Request-Method", "POST")
                .header(
                    "Access-Control-Request-Headers",
                    "authorization, content-type, idempotency-key",
                ),
        )
        .await;
    assert!(
        preflight.status < 300,
        "preflight: {} {}",
        preflight.status,
        preflight.text
    );
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    let methods = preflight
        .header("access-control-allow-methods")
        .unwrap_or("")
        .to_ascii_uppercase();
    assert!(methods.contains("POST"), "{methods}");
    let headers = preflight
        .header("access-control-allow-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("idempotency-key"),
        "{headers}"
    );
    let denied = app
        .send(
            app.client
                .get(app.url("/health"))
                .header("Origin", "https://evil.example"),
        )
        .await;
    assert!(denied.header("access-control-allow-origin").is_none());

    let closed = spawn_app().await;
    let reply = closed
        .send(
            closed
                .client
                .get(closed.url("/health"))
                .header("Origin", "https://shop.example"),
        )
        .await;
    assert_success(&reply, 200);
    assert!(
        reply.header("access-control-allow-origin").is_none(),
        "no CORS unless configured"
    );
    assert_error(&closed.get_anon("/nope").await, 404, "not_found");
}

/// TEST-MATRIX row 21: request heads that are malformed (folded or split lines, CR or NUL in a
/// value, a bad name) are 400, heads over 16 KiB or with too many fields are 431, the
/// connection is closed, nothing of the offending value is echoed back, and the server keeps
/// serving.
#[tokio::test]
async fn malformed_and_oversized_request_heads_are_refused_without_echo() {
    let app = spawn_app().await;
    let m = onboard(&app, "Header Shop", "USD").await;
    let many: String = (0..200).map(|i| format!("X-Field-{i}: v\r\n")).collect();
    // (name, extra head lines, the answers allowed)
    let cases: Vec<(&str, String, &[u16])> = vec![
        ("folded line", "X-Note: a\r\n folded-marker\r\n".to_owned(), &[400]),
        ("bare CR in a value", "X-Note: a\rSet-Cookie: injected=1\r\n".to_owned(), &[400]),
        ("NUL in a value", "X-Note: a\0nul-marker\r\n".to_owned(), &[400]),
        ("space in a name", "X Note: name-marker\r\n".to_owned(), &[400]),
        ("no colon", "X-Note-without-colon\r\n".to_owned(), &[400]),
        // RFC 9112 lets a recipient read a bare LF as a line end: this is then two request
        // fields, served normally, and neither is echoed.
        ("bare LF in a value", "X-Note: a\nSet-Cookie: injected=1\r\n".to_owned(), &[200, 400]),
        ("a 20 KiB field", format!("X-Big: {}\r\n", "b".repeat(20 * 1024)), &[431]),
        ("200 fields", many, &[431]),
    ];
    for (name, extra, allowed) in cases {
        let head = format!(
            "GET /api/v1/payments HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n{extra}Connection: close\r\n\r\n",
            app.address, m.key
        );
        let reply = app.raw(head.into_bytes()).await;
        let answer = format!("{}\n{}", reply.head, reply.body);
        assert!(allowed.contains(&reply.status), "{name}: {} {answer}", reply.status);
        for marker in ["injected", "folded-marker", "nul-marker", "name-marker", "bbbbbbbb"] {
            assert!(!answer.contains(marker), "{name}: echoed {marker}: {answer}");
        }
    }
    // The server is unharmed.
    assert_eq!(app.get("/payments", &m.key).await.status, 200);
}
