//! Request bodies, paths and query strings: 400 `invalid_json`, 400 `validation_error` with
//! `details`, 413, 415, content types, and the synchronous 404/422 checks of POST /payments.

use serde_json::json;

use super::helpers::{
    TestApp, assert_error, assert_invalid_field, assert_success, onboard, payment_body, random_id,
    spawn_app, spawn_app_with,
};

async fn payment_count(app: &TestApp, key: &str) -> usize {
    let reply = app.get("/payments?limit=100", key).await;
    assert_success(&reply, 200);
    reply.items().len()
}

#[tokio::test]
async fn malformed_json_is_invalid_json() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let good = format!(
        r#"{{"merchantId":"{}","amount":100,"currency":"USD","source":"tok_visa"}}"#,
        m.account_id
    );
    for bad in [
        "{amount: 100}".to_owned(),
        "{'amount':100}".to_owned(),
        good[..good.len() - 10].to_owned(),
        format!("{good} x"),
        format!("{good}{good}"),
        format!(
            r#"{{"amount":100,"amount":200,"merchantId":"{}","currency":"USD","source":"tok_visa"}}"#,
            m.account_id
        ),
        r#"{"a":{"b":1,"b":2}}"#.to_owned(),
        "nul".to_owned(),
        "{".to_owned(),
    ] {
        let reply = app.post_text("/payments", &m.key, &bad).await;
        assert_error(&reply, 400, "invalid_json");
        assert!(
            !reply.text.contains("tok_visa"),
            "the body is not echoed: {}",
            reply.text
        );
    }
    // Valid JSON that is not an object is refused, too.
    for not_an_object in ["[]", "\"text\"", "42", "null"] {
        let reply = app.post_text("/payments", &m.key, not_an_object).await;
        assert_eq!(reply.status, 400, "{not_an_object}: {}", reply.text);
        assert!(
            ["invalid_json", "validation_error"].contains(&reply.code()),
            "{}",
            reply.text
        );
    }
    // Invalid UTF-8.
    let reply = app
        .post_raw(
            "/payments",
            &m.key,
            Some("application/json"),
            b"{\"a\":\"\xff\"}".to_vec(),
        )
        .await;
    assert_error(&reply, 400, "invalid_json");
    assert_eq!(payment_count(&app, &m.key).await, 0, "nothing stored");
    // The same body, well formed, passes (the refusals above were about the syntax).
    assert_success(&app.post_text("/payments", &m.key, &good).await, 202);
}

#[tokio::test]
async fn bad_amounts_are_validation_errors() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    for amount in [
        "-1",
        "0",
        "10.5",
        "\"10\"",
        "1e3",
        "100.0",
        "100000000",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "null",
        "true",
        "[100]",
    ] {
        let body = format!(
            r#"{{"merchantId":"{}","amount":{amount},"currency":"USD","source":"tok_visa"}}"#,
            m.account_id
        );
        let reply = app.post_text("/payments", &m.key, &body).await;
        assert_invalid_field(&reply, "amount");
        assert_eq!(
            reply.detail_fields(),
            vec!["amount"],
            "only the amount is wrong ({amount}): {}",
            reply.text
        );
    }
    assert_eq!(payment_count(&app, &m.key).await, 0, "nothing stored");
    // The bounds themselves are accepted.
    for amount in [1, 99_999_999] {
        assert_success(
            &app.post(
                "/payments",
                &m.key,
                &payment_body(&m.account_id, amount, "tok_visa"),
                None,
            )
            .await,
            202,
        );
    }
}

#[tokio::test]
async fn missing_and_unknown_fields_are_each_named() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let reply = app.post("/payments", &m.key, &json!({}), None).await;
    assert_invalid_field(&reply, "amount");
    let mut fields = reply.detail_fields();
    fields.sort();
    assert_eq!(
        fields,
        vec!["amount", "currency", "source"],
        "every missing field at once: {}",
        reply.text
    );

    let mut typo = payment_body(&m.account_id, 100, "tok_visa");
    typo["amout"] = json!(100);
    let reply = app.post("/payments", &m.key, &typo, None).await;
    assert_invalid_field(&reply, "amout");

    let mut extra = payment_body(&m.account_id, 100, "tok_visa");
    extra["status"] = json!("SUCCESS");
    assert_invalid_field(&app.post("/payments", &m.key, &extra, None).await, "status");

    let reply = app
        .post(
            "/payments",
            &m.key,
            &json!({"amount": "10", "currency": "usd", "source": "visa"}),
            None,
        )
        .await;
    let mut fields = reply.detail_fields();
    fields.sort();
    assert_eq!(
        fields,
        vec!["amount", "currency", "source"],
        "{}",
        reply.text
    );
    assert_eq!(payment_count(&app, &m.key).await, 0);
}

#[tokio::test]
async fn bad_currency_source_description_and_merchant_id() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let with = |field: &str, value: serde_json::Value| {
        let mut body = payment_body(&m.account_id, 100, "tok_visa");
        body[field] = value;
        body
    };
    for currency in [
        json!("usd"),
        json!("GBP"),
        json!("US"),
        json!("USDD"),
        json!(""),
        json!(840),
        json!(null),
    ] {
        assert_invalid_field(
            &app.post("/payments", &m.key, &with("currency", currency), None)
                .await,
            "currency",
        );
    }
    for source in [
        json!("visa"),
        json!("tok_"),
        json!("tok_a-b"),
        json!("tok_a b"),
        json!(""),
        json!(5),
        json!(null),
    ] {
        assert_invalid_field(
            &app.post("/payments", &m.key, &with("source", source), None)
                .await,
            "source",
        );
    }
    let long = "d".repeat(1001);
    assert_invalid_field(
        &app.post("/payments", &m.key, &with("description", json!(long)), None)
            .await,
        "description",
    );
    assert_invalid_field(
        &app.post("/payments", &m.key, &with("description", json!(7)), None)
            .await,
        "description",
    );
    for id in [json!("not-a-uuid"), json!(42), json!("")] {
        assert_invalid_field(
            &app.post("/payments", &m.key, &with("merchantId", id), None)
                .await,
            "merchantId",
        );
    }
    assert_eq!(payment_count(&app, &m.key).await, 0);
    // 1000 characters (multi-byte ones count once) is the limit, and it is accepted.
    let reply = app
        .post(
            "/payments",
            &m.key,
            &with("description", json!("é".repeat(1000))),
            None,
        )
        .await;
    assert_success(&reply, 202);
}

#[tokio::test]
async fn nul_in_a_string_is_a_validation_error() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let reply = app
        .post_text(
            "/accounts",
            &m.key,
            r#"{"name":"a\u0000b","currency":"USD"}"#,
        )
        .await;
    assert_invalid_field(&reply, "name");
    let body = format!(
        r#"{{"merchantId":"{}","amount":100,"currency":"USD","source":"tok_visa","description":"x\u0000y"}}"#,
        m.account_id
    );
    assert_invalid_field(
        &app.post_text("/payments", &m.key, &body).await,
        "description",
    );
    let reply = app
        .post_text(
            "/merchants",
            &app.platform_key,
            r#"{"name":"\u0000","currency":"USD"}"#,
        )
        .await;
    assert_invalid_field(&reply, "name");
    assert_eq!(payment_count(&app, &m.key).await, 0);
}

#[tokio::test]
async fn account_and_merchant_names_are_1_to_255_characters() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    for (path, key) in [
        ("/accounts", m.key.as_str()),
        ("/merchants", app.platform_key.as_str()),
    ] {
        for name in [json!(""), json!("n".repeat(256)), json!(null), json!(12)] {
            let reply = app
                .post(path, key, &json!({"name": name, "currency": "USD"}), None)
                .await;
            assert_invalid_field(&reply, "name");
        }
        for currency in [json!("usd"), json!("GBP"), json!(null)] {
            let reply = app
                .post(
                    path,
                    key,
                    &json!({"name": "ok", "currency": currency}),
                    None,
                )
                .await;
            assert_invalid_field(&reply, "currency");
        }
        let reply = app
            .post(
                path,
                key,
                &json!({"name": "ok", "currency": "USD", "extra": 1}),
                None,
            )
            .await;
        assert_invalid_field(&reply, "extra");
        let reply = app
            .post(
                path,
                key,
                &json!({"name": "n".repeat(255), "currency": "USD"}),
                None,
            )
            .await;
        assert_success(&reply, 201);
    }
    // Minting a key takes no fields.
    assert_invalid_field(
        &app.post("/api-keys", &m.key, &json!({"name": "x"}), None)
            .await,
        "name",
    );
}

#[tokio::test]
async fn supported_currencies_are_configurable() {
    let app = spawn_app_with(&[("SUPPORTED_CURRENCIES", "USD,GBP")]).await;
    let m = onboard(&app, "London Shop", "GBP").await;
    let reply = app
        .post(
            "/accounts",
            &m.key,
            &json!({"name": "Euro", "currency": "EUR"}),
            None,
        )
        .await;
    assert_invalid_field(&reply, "currency");
    let body = json!({"amount": 100, "currency": "GBP", "source": "tok_visa"});
    assert_success(&app.post("/payments", &m.key, &body, None).await, 202);
}

#[tokio::test]
async fn merchant_not_found_for_an_unknown_or_system_account() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let unknown = app
        .post(
            "/payments",
            &app.platform_key,
            &payment_body(&random_id(), 100, "tok_visa"),
            None,
        )
        .await;
    assert_error(&unknown, 404, "merchant_not_found");
    let world = app.system_accounts["USD"].clone();
    let system = app
        .post(
            "/payments",
            &app.platform_key,
            &payment_body(&world, 100, "tok_visa"),
            None,
        )
        .await;
    assert_error(&system, 404, "merchant_not_found");
    assert_eq!(
        payment_count(&app, &app.platform_key).await,
        0,
        "nothing stored"
    );
    // The platform key must name the account.
    let reply = app
        .post(
            "/payments",
            &app.platform_key,
            &json!({"amount": 100, "currency": "USD", "source": "tok_visa"}),
            None,
        )
        .await;
    assert_invalid_field(&reply, "merchantId");
    assert_success(
        &app.post(
            "/payments",
            &app.platform_key,
            &payment_body(&m.account_id, 100, "tok_visa"),
            None,
        )
        .await,
        202,
    );
}

#[tokio::test]
async fn currency_mismatch_is_422_and_stores_nothing() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let body =
        json!({"merchantId": m.account_id, "amount": 100, "currency": "EUR", "source": "tok_visa"});
    let reply = app.post("/payments", &m.key, &body, None).await;
    assert_error(&reply, 422, "currency_mismatch");
    let reply = app.post("/payments", &app.platform_key, &body, None).await;
    assert_error(&reply, 422, "currency_mismatch");
    assert_eq!(payment_count(&app, &m.key).await, 0);
}

#[tokio::test]
async fn json_content_types_with_parameters_and_suffixes_are_accepted() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let body = serde_json::to_vec(&payment_body(&m.account_id, 100, "tok_visa")).unwrap();
    for ct in [
        "application/json; charset=utf-8",
        "application/vnd.x+json",
        "Application/JSON",
    ] {
        let reply = app
            .post_raw("/payments", &m.key, Some(ct), body.clone())
            .await;
        assert_success(&reply, 202);
    }
    assert_eq!(payment_count(&app, &m.key).await, 3);
}

#[tokio::test]
async fn an_empty_body_is_read_as_an_empty_object() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    for ct in [None, Some("application/json")] {
        let reply = app.post_raw("/payments", &m.key, ct, Vec::new()).await;
        assert_invalid_field(&reply, "amount");
        let mut fields = reply.detail_fields();
        fields.sort();
        assert_eq!(
            fields,
            vec!["amount", "currency", "source"],
            "{}",
            reply.text
        );
        let reply = app.post_raw("/accounts", &m.key, ct, Vec::new()).await;
        assert_invalid_field(&reply, "name");
    }
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let body = serde_json::to_vec(&payment_body(&m.account_id, 100, "tok_visa")).unwrap();
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonx"),
        None,
    ] {
        let reply = app.post_raw("/payments", &m.key, ct, body.clone()).await;
        assert_error(&reply, 415, "unsupported_media_type");
    }
    let reply = app
        .post_raw("/api-keys", &m.key, Some("text/plain"), "{}")
        .await;
    assert_error(&reply, 415, "unsupported_media_type");
    assert_eq!(payment_count(&app, &m.key).await, 0);
}

/// Issue 13 item 11a: JSON is read as UTF-8 only; a body declared in any other charset is
/// refused, not misread (the charset is case-insensitive, quoted or not).
#[tokio::test]
async fn json_in_a_charset_other_than_utf8_is_415() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let body = serde_json::to_vec(&payment_body(&m.account_id, 100, "tok_visa")).unwrap();
    for ct in [
        "application/json; charset=UTF-16",
        "application/json; charset=\"utf-16\"",
        "application/json;charset=ISO-8859-1",
        "application/merge-patch+json; charset=us-ascii",
    ] {
        let reply = app
            .post_raw("/payments", &m.key, Some(ct), body.clone())
            .await;
        assert_error(&reply, 415, "unsupported_media_type");
    }
    assert_eq!(payment_count(&app, &m.key).await, 0);
    for ct in [
        "application/json; charset=UTF-8",
        "application/json; charset=\"utf-8\"",
    ] {
        let reply = app
            .post_raw("/payments", &m.key, Some(ct), body.clone())
            .await;
        assert_success(&reply, 202);
    }
}

/// `{"name":"ok","currency":"USD"}` padded with spaces to exactly `len` bytes.
fn padded_account(len: usize) -> Vec<u8> {
    let json = br#"{"name":"ok","currency":"USD"}"#;
    let mut body = json[..json.len() - 1].to_vec();
    body.resize(len - 1, b' ');
    body.push(b'}');
    assert_eq!(body.len(), len);
    body
}

#[tokio::test]
async fn a_body_over_64_kib_with_content_length_is_413() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let at_limit = app
        .post_raw(
            "/accounts",
            &m.key,
            Some("application/json"),
            padded_account(65_536),
        )
        .await;
    assert_success(&at_limit, 201);
    // Over the limit, announced by Content-Length: refused before the body is read.
    let head = format!(
        "POST /api/v1/accounts HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 65537\r\nConnection: close\r\n\r\n",
        app.address, m.key
    );
    let raw = app.raw(head.into_bytes()).await;
    assert_eq!(raw.status, 413, "{}", raw.body);
    assert_eq!(
        raw.json["error"]["code"], "payload_too_large",
        "{}",
        raw.body
    );
    assert_eq!(raw.json["success"], false);
    assert_eq!(
        raw.header("x-request-id"),
        raw.json["meta"]["requestId"].as_str(),
        "{}",
        raw.head
    );
    // And sent in full through an ordinary client.
    let reply = app
        .post_raw(
            "/accounts",
            &m.key,
            Some("application/json"),
            padded_account(70_000),
        )
        .await;
    assert_error(&reply, 413, "payload_too_large");
}

fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in body.chunks(chunk) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test]
async fn a_chunked_body_over_64_kib_is_413() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let request = |body: Vec<u8>| {
        let mut r = format!(
            "POST /api/v1/accounts HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            app.address, m.key
        )
        .into_bytes();
        r.extend_from_slice(&chunked(&body, 4096));
        r
    };
    // The raw path works: a small chunked body is read.
    let ok = app.raw(request(padded_account(100))).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let big = app.raw(request(padded_account(65_537))).await;
    assert_eq!(big.status, 413, "{}", big.body);
    assert_eq!(
        big.json["error"]["code"], "payload_too_large",
        "{}",
        big.body
    );
    assert!(big.header("x-request-id").is_some(), "{}", big.head);
    let huge = app.raw(request(padded_account(300_000))).await;
    assert_eq!(huge.status, 413, "{}", huge.body);
}

#[tokio::test]
async fn malformed_path_ids_are_400_validation_error() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    for path in [
        "/payments/not-a-uuid",
        "/accounts/123",
        "/accounts/xyz/entries",
        "/payments/%20",
    ] {
        let reply = app.get(path, &m.key).await;
        assert_error(&reply, 400, "validation_error");
    }
    assert_error(
        &app.delete("/api-keys/nope", &m.key).await,
        400,
        "validation_error",
    );
}

#[tokio::test]
async fn list_query_strings_are_strict() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let b = onboard(&app, "Other", "USD").await;
    let theirs = crate::helpers::pay(&app, &b.key, &b.account_id, 100, "tok_visa").await;
    let theirs = theirs["id"].as_str().unwrap();
    let mine = crate::helpers::pay(&app, &m.key, &m.account_id, 100, "tok_visa").await;
    let entries = format!("/accounts/{}/entries", m.account_id);
    for base in ["/payments", "/api-keys", entries.as_str()] {
        for query in [
            "limit=0",
            "limit=101",
            "limit=-1",
            "limit=abc",
            "limit=",
            "foo=1",
            "limit=1&limit=2",
        ] {
            let reply = app.get(&format!("{base}?{query}"), &m.key).await;
            assert_error(&reply, 400, "validation_error");
        }
        assert_success(&app.get(&format!("{base}?limit=100"), &m.key).await, 200);
        assert_success(&app.get(&format!("{base}?limit=1"), &m.key).await, 200);
        // An unknown cursor and one the caller cannot see get the same answer.
        let unknown = app
            .get(&format!("{base}?startingAfter={}", random_id()), &m.key)
            .await;
        assert_error(&unknown, 400, "validation_error");
        let foreign = app
            .get(&format!("{base}?startingAfter={theirs}"), &m.key)
            .await;
        assert_error(&foreign, 400, "validation_error");
        assert_eq!(unknown.json["error"], foreign.json["error"], "{base}");
        assert_error(
            &app.get(&format!("{base}?startingAfter=xyz"), &m.key).await,
            400,
            "validation_error",
        );
    }
    for status in ["success", "DONE", ""] {
        assert_error(
            &app.get(&format!("/payments?status={status}"), &m.key).await,
            400,
            "validation_error",
        );
    }
    // The own cursor works.
    let reply = app
        .get(
            &format!("/payments?startingAfter={}", mine["id"].as_str().unwrap()),
            &m.key,
        )
        .await;
    assert_success(&reply, 200);
    assert_eq!(reply.data(), &json!({"items": [], "hasMore": false}));
}

#[tokio::test]
async fn body_checks_run_in_order_413_415_invalid_json_validation() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    // Too large and not JSON: 413.
    let reply = app
        .post_raw("/payments", &m.key, Some("text/plain"), vec![b'x'; 70_000])
        .await;
    assert_error(&reply, 413, "payload_too_large");
    // Not JSON by its type and malformed: 415.
    let reply = app
        .post_raw("/payments", &m.key, Some("text/plain"), "{")
        .await;
    assert_error(&reply, 415, "unsupported_media_type");
    // Malformed and with unknown fields: invalid_json.
    let reply = app.post_text("/payments", &m.key, r#"{"typo": 1,"#).await;
    assert_error(&reply, 400, "invalid_json");
}

/// Row counts of the tables a create writes (PostgreSQL backends), or `None` in memory.
async fn row_counts(app: &TestApp) -> Option<Vec<i64>> {
    let pool = app.pool()?;
    let (merchants, accounts, payments, keys, idempotency): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM merchants), (SELECT count(*) FROM accounts), \
                    (SELECT count(*) FROM payments), (SELECT count(*) FROM api_keys), \
                    (SELECT count(*) FROM idempotency_keys)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
    Some(vec![merchants, accounts, payments, keys, idempotency])
}

// Row 23: mass assignment. Every extra field (the row's `status`, `merchant_id`, `fee`,
// `allow_negative`, `balance`, and the rest hostile.rs sends) is exactly 400
// `validation_error` naming it, on each create route; nothing is written, and what is created
// afterwards carries the server's defaults.
#[tokio::test]
async fn extra_fields_are_400_naming_the_field_and_create_nothing() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let extras = [
        ("status", json!("SUCCESS")),
        ("id", json!("01a21298-d8e0-742d-83de-a2e9495c48fe")),
        ("merchant_id", json!(m.account_id)),
        ("fee", json!(0)),
        ("allow_negative", json!(true)),
        ("allowNegative", json!(true)),
        ("balance", json!(1_000_000)),
        ("failureReason", json!(null)),
        ("createdAt", json!("2020-01-01T00:00:00Z")),
        ("idempotencyKey", json!("k")),
        ("kind", json!("system")),
        ("__proto__", json!({"admin": true})),
    ];
    let keys_before = app.get("/api-keys?limit=100", &app.platform_key).await;
    assert_success(&keys_before, 200);
    let rows_before = row_counts(&app).await;
    let mut refused = 0;
    for (path, key, good) in [
        (
            "/payments",
            m.key.as_str(),
            payment_body(&m.account_id, 100, "tok_visa"),
        ),
        (
            "/accounts",
            m.key.as_str(),
            json!({"name": "Savings", "currency": "USD"}),
        ),
        (
            "/merchants",
            app.platform_key.as_str(),
            json!({"name": "Shop", "currency": "USD"}),
        ),
    ] {
        for (field, value) in &extras {
            let mut body = good.clone();
            body[*field] = value.clone();
            let reply = app.post(path, key, &body, None).await;
            assert_invalid_field(&reply, field);
            refused += 1;
        }
    }
    assert_eq!(refused, 3 * extras.len());
    // Nothing was created: no payment, no merchant (each has a key), no row anywhere.
    assert_eq!(payment_count(&app, &m.key).await, 0);
    assert_eq!(payment_count(&app, &app.platform_key).await, 0);
    let keys_after = app.get("/api-keys?limit=100", &app.platform_key).await;
    assert_eq!(
        keys_after.item_ids(),
        keys_before.item_ids(),
        "no merchant onboarded"
    );
    assert_eq!(row_counts(&app).await, rows_before, "no row written");

    // What is created afterwards has the server's defaults.
    let opened = app
        .post(
            "/accounts",
            &m.key,
            &json!({"name": "Savings", "currency": "USD"}),
            None,
        )
        .await;
    assert_success(&opened, 201);
    assert_eq!(opened.data()["balance"], 0);
    assert_eq!(opened.data()["allowNegative"], false);
    let paid = app
        .post(
            "/payments",
            &m.key,
            &payment_body(&m.account_id, 100, "tok_visa"),
            None,
        )
        .await;
    assert_success(&paid, 202);
    assert_eq!(paid.data()["status"], "PENDING", "born PENDING");
    assert_eq!(paid.data()["failureReason"], json!(null));
    let other = onboard(&app, "Shop", "USD").await;
    let other_account = app
        .get(&format!("/accounts/{}", other.account_id), &other.key)
        .await;
    assert_success(&other_account, 200);
    assert_eq!(other_account.data()["balance"], 0);
    assert_eq!(other_account.data()["allowNegative"], false);
    if let Some(pool) = app.pool() {
        let (non_zero, system): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE kind = 'merchant' AND id <> $1::uuid AND balance <> 0), \
                    count(*) FILTER (WHERE kind = 'system') FROM accounts",
        )
        .bind(&m.account_id)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(non_zero, 0, "every new merchant account starts at 0");
        assert_eq!(
            system as usize,
            app.system_accounts.len(),
            "no new system account"
        );
    }
}
