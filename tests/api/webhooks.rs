//! Webhook endpoints (API.md v1.1 *Webhooks*, *Precise rules*: Endpoints, Refused addresses):
//! creation with a secret shown once (and left out of a replay), reading, listing, deleting
//! (404 everywhere afterwards), the limit of 16, what `events`, `description` and `url` accept,
//! deliveries and their retry, 404-not-403 for others' endpoints, and key management's fresh
//! key look-up.
//!
//! Safety: every endpoint these tests create points at a receiver of their own on 127.0.0.1
//! (allowed only on a server started with `WEBHOOK_ALLOW_PRIVATE=true`); the refusal tests run
//! on the default policy and create nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::helpers::{
    ALLOW_PRIVATE_WEBHOOKS, DELIVERY_FIELDS, ENDPOINT_FIELDS, Reply, TestApp, assert_error,
    assert_invalid_field, assert_keys, assert_success, assert_timestamp, assert_uuid, onboard,
    random_id, spawn_app, spawn_app_with, succeeded,
};

/// A server on which endpoints may point at loopback (the tests' own receivers).
async fn spawn_private() -> TestApp {
    spawn_app_with(&[ALLOW_PRIVATE_WEBHOOKS]).await
}

/// A webhook receiver on 127.0.0.1 that answers every request 204 and keeps what it got.
struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let kept = received.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // The head, then as much body as it announces (bounded).
                    loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if complete(&buf) || buf.len() > 1 << 20 {
                            break;
                        }
                    }
                    kept.lock().unwrap().push(buf);
                    let _ = stream
                        .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        Self { port, received }
    }

    /// The requests received so far, as (head, body) text.
    fn requests(&self) -> Vec<(String, String)> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|raw| {
                let end = raw
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .unwrap_or(raw.len());
                let body = raw.get(end + 4..).unwrap_or_default();
                (
                    String::from_utf8_lossy(&raw[..end]).into_owned(),
                    String::from_utf8_lossy(body).into_owned(),
                )
            })
            .collect()
    }

    /// A URL of this receiver.
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

/// Whether `buf` holds a whole request (head and `Content-Length` bytes of body).
fn complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    buf.len() >= end + 4 + length
}

async fn create(app: &TestApp, key: &str, body: &Value) -> Reply {
    app.post("/webhook-endpoints", key, body, None).await
}

/// Creates an endpoint (asserting 201) and returns its `data`.
async fn created(app: &TestApp, key: &str, body: &Value) -> Value {
    let reply = create(app, key, body).await;
    assert_success(&reply, 201);
    reply.data().clone()
}

/// The ids of `GET /webhook-endpoints` (first page of 100).
async fn listed(app: &TestApp, key: &str) -> Vec<String> {
    let reply = app.get("/webhook-endpoints?limit=100", key).await;
    assert_success(&reply, 200);
    reply.item_ids()
}

#[tokio::test]
async fn an_endpoint_is_201_with_its_secret_once_then_readable_without_it() {
    let app = spawn_private().await;
    let receiver = Receiver::start().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let url = receiver.url("hooks/atomic");
    let reply = create(
        &app,
        &m.key,
        &json!({"url": url, "events": ["refund.failed", "payment.succeeded"], "description": "Orders"}),
    )
    .await;
    assert_success(&reply, 201);
    let e = reply.data().clone();
    let mut with_secret = ENDPOINT_FIELDS.to_vec();
    with_secret.push("secret");
    assert_keys(&e, &with_secret);
    let id = assert_uuid(&e["id"]);
    assert_eq!(e["url"], url.as_str());
    assert_eq!(
        e["events"],
        json!(["payment.succeeded", "refund.failed"]),
        "the contract's order"
    );
    assert_eq!(e["description"], "Orders");
    assert_timestamp(&e["createdAt"]);
    let secret = e["secret"].as_str().unwrap();
    let encoded = secret.strip_prefix("whsec_").expect("whsec_ prefix");
    assert_eq!(encoded.len(), 44, "base64 of 32 bytes: {secret}");

    let shown = app.get(&format!("/webhook-endpoints/{id}"), &m.key).await;
    assert_success(&shown, 200);
    assert_keys(shown.data(), ENDPOINT_FIELDS);
    let mut without = e.clone();
    without.as_object_mut().unwrap().remove("secret");
    assert_eq!(shown.data(), &without);
    assert!(!shown.text.contains(encoded), "no secret on a read");

    let list = app.get("/webhook-endpoints", &m.key).await;
    assert_success(&list, 200);
    assert_keys(list.data(), &["items", "hasMore"]);
    assert_eq!(list.items(), vec![without.clone()]);
    assert_eq!(list.data()["hasMore"], false);
    assert!(!list.text.contains(encoded), "no secret in a list");

    // The platform key sees every endpoint; a star subscription and no description.
    let star = created(
        &app,
        &app.platform_key,
        &json!({"url": receiver.url("all"), "events": ["*"]}),
    )
    .await;
    assert_eq!(star["events"], json!(["*"]));
    assert_eq!(star["description"], Value::Null);
    let all = listed(&app, &app.platform_key).await;
    assert_eq!(
        all,
        vec![star["id"].as_str().unwrap().to_owned(), id.clone()]
    );
    assert_eq!(
        listed(&app, &m.key).await,
        vec![id],
        "a merchant sees its own"
    );
}

#[tokio::test]
async fn a_deleted_endpoint_is_200_once_then_404_on_every_route() {
    let app = spawn_private().await;
    let receiver = Receiver::start().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let e = created(
        &app,
        &m.key,
        &json!({"url": receiver.url("h"), "events": ["*"]}),
    )
    .await;
    let id = e["id"].as_str().unwrap();
    let deleted = app
        .delete(&format!("/webhook-endpoints/{id}"), &m.key)
        .await;
    assert_success(&deleted, 200);
    assert_keys(deleted.data(), ENDPOINT_FIELDS);
    assert_eq!(deleted.data()["id"], id);
    assert_eq!(deleted.data()["url"], e["url"]);
    assert!(deleted.data().get("secret").is_none(), "{}", deleted.text);

    let delivery = random_id();
    for reply in [
        app.get(&format!("/webhook-endpoints/{id}"), &m.key).await,
        app.delete(&format!("/webhook-endpoints/{id}"), &m.key)
            .await,
        app.get(&format!("/webhook-endpoints/{id}/deliveries"), &m.key)
            .await,
        app.post(
            &format!("/webhook-endpoints/{id}/deliveries/{delivery}/retry"),
            &m.key,
            &json!({}),
            None,
        )
        .await,
        app.get(&format!("/webhook-endpoints/{id}"), &app.platform_key)
            .await,
    ] {
        assert_error(&reply, 404, "not_found");
    }
    assert!(listed(&app, &m.key).await.is_empty());
    assert!(listed(&app, &app.platform_key).await.is_empty());
}

#[tokio::test]
async fn a_replay_is_byte_identical_except_that_the_secret_is_left_out() {
    let app = spawn_private().await;
    let receiver = Receiver::start().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let body = json!({"url": receiver.url("h"), "events": ["payment.failed"]});
    let first = app
        .post("/webhook-endpoints", &m.key, &body, Some("wh-1"))
        .await;
    assert_success(&first, 201);
    let secret = first.data()["secret"].as_str().unwrap().to_owned();
    let again = app
        .post("/webhook-endpoints", &m.key, &body, Some("wh-1"))
        .await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert!(first.header("idempotent-replayed").is_none());
    assert!(!again.text.contains(&secret), "no secret in a replay");
    assert!(again.data().get("secret").is_none(), "{}", again.text);
    let without = first.text.replace(&format!(",\"secret\":\"{secret}\""), "");
    assert_ne!(without, first.text, "the secret sat where expected");
    assert_eq!(
        again.text, without,
        "otherwise byte-identical, meta included"
    );
    assert_eq!(listed(&app, &m.key).await.len(), 1, "one endpoint made");

    // A different request under the same key.
    let other = json!({"url": receiver.url("other"), "events": ["payment.failed"]});
    assert_error(
        &app.post("/webhook-endpoints", &m.key, &other, Some("wh-1"))
            .await,
        422,
        "idempotency_key_reused",
    );
    // A refused request releases its key: corrected, it runs anew.
    let bad = json!({"url": receiver.url("h2"), "events": []});
    assert_invalid_field(
        &app.post("/webhook-endpoints", &m.key, &bad, Some("wh-2"))
            .await,
        "events",
    );
    let corrected = json!({"url": receiver.url("h2"), "events": ["*"]});
    let ran = app
        .post("/webhook-endpoints", &m.key, &corrected, Some("wh-2"))
        .await;
    assert_success(&ran, 201);
    assert!(ran.header("idempotent-replayed").is_none());
    assert!(
        ran.data()["secret"].is_string(),
        "a new endpoint, with its secret"
    );
    assert_eq!(listed(&app, &m.key).await.len(), 2);
}

#[tokio::test]
async fn addresses_that_are_not_globally_routable_are_400_and_nothing_is_stored() {
    // The default policy: private addresses refused.
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    for url in [
        "http://127.0.0.1/",
        "http://localhost/",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest",
        "http://[::1]/",
        "http://[fd00::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://100.64.0.1/",
        "http://192.0.2.1/",
        "http://192.168.1.1:8080/hook",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
    ] {
        for key in [&m.key, &app.platform_key] {
            let reply = create(&app, key, &json!({"url": url, "events": ["*"]})).await;
            assert_invalid_field(&reply, "url");
            assert_eq!(reply.detail_fields(), vec!["url"], "{url}: {}", reply.text);
        }
    }
    assert!(listed(&app, &m.key).await.is_empty());
    assert!(listed(&app, &app.platform_key).await.is_empty());
}

#[tokio::test]
async fn events_description_url_and_unknown_fields_are_checked() {
    let app = spawn_private().await;
    let receiver = Receiver::start().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let url = receiver.url("h");
    let too_long = "d".repeat(1_001);
    let long_url = format!("http://127.0.0.1/{}", "a".repeat(2_048));
    for (body, field) in [
        (json!({"url": url, "events": []}), "events"),
        (
            json!({"url": url, "events": ["*", "payment.succeeded"]}),
            "events",
        ),
        (json!({"url": url, "events": ["*", "*"]}), "events"),
        (
            json!({"url": url, "events": ["payment.succeeded", "payment.succeeded"]}),
            "events",
        ),
        (json!({"url": url, "events": ["payment.done"]}), "events"),
        (
            json!({"url": url, "events": ["Payment.Succeeded"]}),
            "events",
        ),
        (json!({"url": url, "events": "*"}), "events"),
        (json!({"url": url, "events": [1]}), "events"),
        (json!({"url": url, "events": null}), "events"),
        (json!({"url": url}), "events"),
        (
            json!({"url": url, "events": ["*"], "description": too_long}),
            "description",
        ),
        (
            json!({"url": url, "events": ["*"], "description": 5}),
            "description",
        ),
        (json!({"events": ["*"]}), "url"),
        (json!({"url": null, "events": ["*"]}), "url"),
        (json!({"url": "ftp://127.0.0.1/", "events": ["*"]}), "url"),
        (json!({"url": "127.0.0.1/hook", "events": ["*"]}), "url"),
        (
            json!({"url": "http://user:pw@127.0.0.1/", "events": ["*"]}),
            "url",
        ),
        (json!({"url": long_url, "events": ["*"]}), "url"),
        (
            json!({"url": url, "events": ["*"], "secret": "whsec_mine"}),
            "secret",
        ),
        (
            json!({"url": url, "events": ["*"], "enabled": true}),
            "enabled",
        ),
    ] {
        let reply = create(&app, &m.key, &body).await;
        assert_invalid_field(&reply, field);
    }
    // Every problem at once.
    let reply = create(&app, &m.key, &json!({"events": [], "typo": 1})).await;
    assert_invalid_field(&reply, "url");
    let mut fields = reply.detail_fields();
    fields.sort();
    assert_eq!(fields, vec!["events", "typo", "url"]);
    // Not JSON, not an object.
    assert_error(
        &app.post_text("/webhook-endpoints", &m.key, "{\"url\":")
            .await,
        400,
        "invalid_json",
    );
    assert_invalid_field(
        &app.post_text("/webhook-endpoints", &m.key, "[]").await,
        "body",
    );
    assert!(listed(&app, &m.key).await.is_empty(), "nothing stored");

    // The edges that pass: 1,000 characters, an explicit null, every type named once.
    let longest = "d".repeat(1_000);
    let e = created(
        &app,
        &m.key,
        &json!({"url": url, "events": ["*"], "description": longest}),
    )
    .await;
    assert_eq!(e["description"].as_str().map(str::len), Some(1_000));
    let e = created(
        &app,
        &m.key,
        &json!({"url": url, "events": ["refund.succeeded"], "description": null}),
    )
    .await;
    assert_eq!(e["description"], Value::Null);
    let every = [
        "refund.failed",
        "refund.succeeded",
        "payment.canceled",
        "payment.failed",
        "payment.succeeded",
        "payment.authorized",
    ];
    let e = created(&app, &m.key, &json!({"url": url, "events": every})).await;
    assert_eq!(
        e["events"],
        json!([
            "payment.authorized",
            "payment.succeeded",
            "payment.failed",
            "payment.canceled",
            "refund.succeeded",
            "refund.failed"
        ])
    );
}

#[tokio::test]
async fn the_seventeenth_endpoint_is_limit_reached_until_one_is_deleted() {
    let app = spawn_private().await;
    let receiver = Receiver::start().await;
    let a = onboard(&app, "A", "USD").await;
    let b = onboard(&app, "B", "USD").await;
    let body = |n: usize| json!({"url": receiver.url(&format!("a/{n}")), "events": ["*"]});
    let mut ids = Vec::new();
    for n in 0..16 {
        ids.push(
            created(&app, &a.key, &body(n)).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let over = create(&app, &a.key, &body(16)).await;
    assert_error(&over, 422, "limit_reached");
    assert_eq!(listed(&app, &a.key).await.len(), 16, "nothing stored");
    // Each owner has its own 16: another merchant and the platform are not affected.
    created(&app, &b.key, &body(100)).await;
    created(&app, &app.platform_key, &body(200)).await;
    // A deleted endpoint no longer counts.
    assert_success(
        &app.delete(&format!("/webhook-endpoints/{}", ids[3]), &a.key)
            .await,
        200,
    );
    created(&app, &a.key, &body(17)).await;
    assert_error(&create(&app, &a.key, &body(18)).await, 422, "limit_reached");
    assert_eq!(listed(&app, &a.key).await.len(), 16);
}

#[tokio::test]
async fn others_endpoints_are_404_and_malformed_ids_are_400() {
    let app = spawn_private().await;
    let receiver = Receiver::start().await;
    let a = onboard(&app, "A", "USD").await;
    let b = onboard(&app, "B", "USD").await;
    let e = created(
        &app,
        &a.key,
        &json!({"url": receiver.url("a"), "events": ["*"]}),
    )
    .await;
    let id = e["id"].as_str().unwrap();
    let platform = created(
        &app,
        &app.platform_key,
        &json!({"url": receiver.url("p"), "events": ["*"]}),
    )
    .await;
    let platform_id = platform["id"].as_str().unwrap();
    let delivery = random_id();
    for target in [id, platform_id, random_id().as_str()] {
        for reply in [
            app.get(&format!("/webhook-endpoints/{target}"), &b.key)
                .await,
            app.delete(&format!("/webhook-endpoints/{target}"), &b.key)
                .await,
            app.get(&format!("/webhook-endpoints/{target}/deliveries"), &b.key)
                .await,
            app.post(
                &format!("/webhook-endpoints/{target}/deliveries/{delivery}/retry"),
                &b.key,
                &json!({}),
                None,
            )
            .await,
        ] {
            assert_error(&reply, 404, "not_found");
        }
    }
    assert!(listed(&app, &b.key).await.is_empty());
    // A's endpoint is intact; the platform reads it and may delete it.
    assert_success(
        &app.get(&format!("/webhook-endpoints/{id}"), &a.key).await,
        200,
    );
    assert_success(
        &app.get(
            &format!("/webhook-endpoints/{id}/deliveries"),
            &app.platform_key,
        )
        .await,
        200,
    );
    assert_success(
        &app.delete(&format!("/webhook-endpoints/{id}"), &app.platform_key)
            .await,
        200,
    );
    assert_error(
        &app.get(&format!("/webhook-endpoints/{id}"), &a.key).await,
        404,
        "not_found",
    );

    // Malformed ids: 400 on every route, as elsewhere.
    for reply in [
        app.get("/webhook-endpoints/not-a-uuid", &a.key).await,
        app.delete("/webhook-endpoints/not-a-uuid", &a.key).await,
        app.get("/webhook-endpoints/not-a-uuid/deliveries", &a.key)
            .await,
        app.post(
            &format!("/webhook-endpoints/not-a-uuid/deliveries/{delivery}/retry"),
            &a.key,
            &json!({}),
            None,
        )
        .await,
    ] {
        assert_invalid_field(&reply, "id");
    }
    let retry = app
        .post(
            &format!("/webhook-endpoints/{platform_id}/deliveries/nope/retry"),
            &app.platform_key,
            &json!({}),
            None,
        )
        .await;
    assert_invalid_field(&retry, "deliveryId");
}

#[tokio::test]
async fn list_parameters_are_checked_and_pages_walk_newest_first() {
    let app = spawn_private().await;
    let receiver = Receiver::start().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let e = created(
            &app,
            &m.key,
            &json!({"url": receiver.url(&format!("{n}")), "events": ["*"]}),
        )
        .await;
        ids.push(e["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let pages = super::helpers::walk_pages(&app, &m.key, "/webhook-endpoints", 2).await;
    assert_eq!(pages.concat(), ids);
    assert_eq!(pages.len(), 3);
    let e = ids[0].clone();
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("startingAfter=x", "startingAfter"),
        ("createdGte=yesterday", "createdGte"),
        ("status=PENDING", "status"),
        ("foo=1", "foo"),
    ] {
        assert_invalid_field(
            &app.get(&format!("/webhook-endpoints?{query}"), &m.key)
                .await,
            field,
        );
    }
    // A cursor the caller cannot see is the same 400 as an unknown one.
    let other = onboard(&app, "Other", "USD").await;
    for cursor in [e.as_str(), random_id().as_str()] {
        assert_invalid_field(
            &app.get(
                &format!("/webhook-endpoints?startingAfter={cursor}"),
                &other.key,
            )
            .await,
            "startingAfter",
        );
    }
    // Created range: everything is before a far future bound and nothing after it.
    let all = app
        .get("/webhook-endpoints?createdLt=2999-01-01T00:00:00Z", &m.key)
        .await;
    assert_eq!(all.item_ids(), ids);
    let none = app
        .get("/webhook-endpoints?createdGte=2999-01-01T00:00:00Z", &m.key)
        .await;
    assert!(none.items().is_empty());
    // Deliveries: statuses and list parameters.
    for (query, field) in [
        ("status=SUCCESS", "status"),
        ("status=pending", "status"),
        ("type=payment.succeeded", "type"),
        ("limit=abc", "limit"),
        ("createdLt=2026-12-01", "createdLt"),
    ] {
        assert_invalid_field(
            &app.get(
                &format!("/webhook-endpoints/{e}/deliveries?{query}"),
                &m.key,
            )
            .await,
            field,
        );
    }
    for status in ["PENDING", "DELIVERED", "FAILED"] {
        let reply = app
            .get(
                &format!("/webhook-endpoints/{e}/deliveries?status={status}"),
                &m.key,
            )
            .await;
        assert_success(&reply, 200);
        assert_eq!(reply.data(), &json!({"items": [], "hasMore": false}));
    }
}

/// The deliveries of endpoint `e` (first page).
async fn deliveries(app: &TestApp, e: &Value, key: &str) -> Vec<Value> {
    let id = e["id"].as_str().unwrap();
    let reply = app
        .get(&format!("/webhook-endpoints/{id}/deliveries"), key)
        .await;
    assert_success(&reply, 200);
    reply.items()
}

#[tokio::test]
async fn a_payment_makes_one_delivery_per_receiving_endpoint_and_retry_is_202() {
    let app = spawn_private().await;
    let receiver = Receiver::start().await;
    let a = onboard(&app, "A", "USD").await;
    let b = onboard(&app, "B", "USD").await;
    let body = |path: &str, events: Value| json!({"url": receiver.url(path), "events": events});
    let mine = created(&app, &a.key, &body("a", json!(["payment.succeeded"]))).await;
    let refunds_only = created(&app, &a.key, &body("r", json!(["refund.failed"]))).await;
    let others = created(&app, &b.key, &body("b", json!(["*"]))).await;
    let platform = created(&app, &app.platform_key, &body("p", json!(["*"]))).await;

    let paid = succeeded(&app, &a.key, &a.account_id, 1_000).await;
    let events = app.get("/events?type=payment.succeeded", &a.key).await;
    assert_success(&events, 200);
    let event_id = events.item_ids()[0].clone();
    assert_eq!(events.items()[0]["data"]["object"]["id"], paid.as_str());

    assert!(
        deliveries(&app, &refunds_only, &a.key).await.is_empty(),
        "not subscribed"
    );
    assert!(
        deliveries(&app, &others, &b.key).await.is_empty(),
        "another merchant's event"
    );
    assert_eq!(
        deliveries(&app, &platform, &app.platform_key).await.len(),
        1,
        "the platform's endpoint receives every merchant's events"
    );
    let listed = deliveries(&app, &mine, &a.key).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let d = &listed[0];
    assert_keys(d, DELIVERY_FIELDS);
    let delivery_id = assert_uuid(&d["id"]);
    assert_eq!(d["eventId"], event_id.as_str());
    assert_eq!(d["endpointId"], mine["id"]);
    assert!(
        ["PENDING", "DELIVERED", "FAILED"].contains(&d["status"].as_str().unwrap()),
        "{d}"
    );
    assert!(d["attempts"].is_u64(), "{d}");
    assert_timestamp(&d["createdAt"]);
    for nullable in ["lastAttemptAt", "nextAttemptAt"] {
        if !d[nullable].is_null() {
            assert_timestamp(&d[nullable]);
        }
    }
    assert!(
        d["lastStatusCode"].is_null() || d["lastStatusCode"].is_u64(),
        "{d}"
    );
    assert!(
        d["lastError"].is_null() || d["lastError"].is_string(),
        "{d}"
    );
    // The receiver answers 204, so the delivery ends DELIVERED; filter once it has stopped
    // moving, so the status asked for is the one it has.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while deliveries(&app, &mine, &a.key).await[0]["status"] != "DELIVERED" {
        assert!(tokio::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for (status, expected) in [
        ("DELIVERED", vec![delivery_id.clone()]),
        ("PENDING", Vec::new()),
        ("FAILED", Vec::new()),
    ] {
        let filtered = app
            .get(
                &format!(
                    "/webhook-endpoints/{}/deliveries?status={status}",
                    mine["id"].as_str().unwrap()
                ),
                &a.key,
            )
            .await;
        assert_eq!(filtered.item_ids(), expected, "status={status}");
    }

    // Retry: 202 with the delivery, PENDING, due now; with an empty body too.
    let path = format!(
        "/webhook-endpoints/{}/deliveries/{delivery_id}/retry",
        mine["id"].as_str().unwrap()
    );
    let retried = app.post(&path, &a.key, &json!({}), None).await;
    assert_success(&retried, 202);
    let r = retried.data();
    assert_keys(r, DELIVERY_FIELDS);
    assert_eq!(r["id"], delivery_id.as_str());
    assert_eq!(r["status"], "PENDING", "{r}");
    assert_timestamp(&r["nextAttemptAt"]);
    let empty = app
        .send(app.client.post(app.url(&path)).bearer_auth(&a.key))
        .await;
    assert_success(&empty, 202);
    assert_invalid_field(
        &app.post(&path, &a.key, &json!({"now": true}), None).await,
        "now",
    );
    // Another merchant's key, or a delivery of another endpoint: 404.
    assert_error(
        &app.post(&path, &b.key, &json!({}), None).await,
        404,
        "not_found",
    );
    let elsewhere = format!(
        "/webhook-endpoints/{}/deliveries/{delivery_id}/retry",
        refunds_only["id"].as_str().unwrap()
    );
    assert_error(
        &app.post(&elsewhere, &a.key, &json!({}), None).await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn every_webhook_route_needs_a_key() {
    let app = spawn_app().await;
    let id = random_id();
    for (method, path) in [
        ("POST", "/webhook-endpoints".to_owned()),
        ("GET", "/webhook-endpoints".to_owned()),
        ("GET", format!("/webhook-endpoints/{id}")),
        ("DELETE", format!("/webhook-endpoints/{id}")),
        ("GET", format!("/webhook-endpoints/{id}/deliveries")),
        (
            "POST",
            format!("/webhook-endpoints/{id}/deliveries/{id}/retry"),
        ),
        ("GET", "/events".to_owned()),
        ("GET", format!("/events/{id}")),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = app.client.request(method.clone(), app.url(&path));
        if method == reqwest::Method::POST {
            request = request.json(&json!({}));
        }
        assert_error(&app.send(request).await, 401, "unauthorized");
        // A wrong method on a known route is 405 before any key is looked at.
        let reply = app
            .send(app.client.request(reqwest::Method::PUT, app.url(&path)))
            .await;
        assert_error(&reply, 405, "method_not_allowed");
    }
}

#[tokio::test]
async fn a_revoked_key_fails_at_once_on_webhook_routes_whatever_the_cache_holds() {
    let app = spawn_app_with(&[ALLOW_PRIVATE_WEBHOOKS, ("API_KEY_CACHE_TTL", "30s")]).await;
    let receiver = Receiver::start().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let second = app.post("/api-keys", &m.key, &json!({}), None).await;
    assert_success(&second, 201);
    let key = second.data()["key"].as_str().unwrap().to_owned();
    let key_id = second.data()["id"].as_str().unwrap().to_owned();
    let e = created(
        &app,
        &key,
        &json!({"url": receiver.url("h"), "events": ["*"]}),
    )
    .await;
    let e = e["id"].as_str().unwrap().to_owned();
    // Warm the cache on a route that may trust it.
    assert_success(&app.get("/payments", &key).await, 200);
    // Revoked behind the server's back (another process would do it through its own API),
    // where the store is reachable from here; else through this server.
    match app.pool() {
        Some(pool) => {
            sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1::uuid")
                .bind(&key_id)
                .execute(&pool)
                .await
                .unwrap();
            // This server trusts its cache on other routes (which is what makes the check
            // below mean something).
            assert_success(&app.get("/payments", &key).await, 200);
        }
        None => {
            let revoked = app.delete(&format!("/api-keys/{key_id}"), &m.key).await;
            assert_success(&revoked, 200);
        }
    }
    for reply in [
        app.get("/webhook-endpoints", &key).await,
        app.get(&format!("/webhook-endpoints/{e}"), &key).await,
        app.get(&format!("/webhook-endpoints/{e}/deliveries"), &key)
            .await,
        create(
            &app,
            &key,
            &json!({"url": receiver.url("x"), "events": ["*"]}),
        )
        .await,
        app.delete(&format!("/webhook-endpoints/{e}"), &key).await,
    ] {
        assert_error(&reply, 401, "unauthorized");
    }
    // The endpoint is still there for the merchant's other key.
    assert_success(
        &app.get(&format!("/webhook-endpoints/{e}"), &m.key).await,
        200,
    );
}

/// A header of a request head (case-insensitive name).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Polls the endpoint's deliveries until the first one is `status` (at most 10 s).
async fn wait_delivery(app: &TestApp, e: &Value, key: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = deliveries(app, e, key).await;
        if let Some(d) = listed.first()
            && d["status"] == status
        {
            return d.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {status} delivery: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_event_reaches_its_receiver_signed_with_the_bytes_get_answers() {
    let app = spawn_private().await;
    let receiver = Receiver::start().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let e = created(
        &app,
        &m.key,
        &json!({"url": receiver.url("in"), "events": ["*"]}),
    )
    .await;
    succeeded(&app, &m.key, &m.account_id, 4_200).await;
    let d = wait_delivery(&app, &e, &m.key, "DELIVERED").await;
    assert_eq!(d["attempts"], 1, "{d}");
    assert_eq!(d["lastStatusCode"], 204, "{d}");
    assert_eq!(d["lastError"], Value::Null, "{d}");
    assert_eq!(d["nextAttemptAt"], Value::Null, "{d}");
    assert_timestamp(&d["lastAttemptAt"]);

    let event_id = d["eventId"].as_str().unwrap();
    let event = app.get(&format!("/events/{event_id}"), &m.key).await;
    assert_success(&event, 200);
    let rest = event
        .text
        .strip_prefix("{\"success\":true,\"data\":")
        .unwrap();
    let event_bytes = &rest[..rest.rfind(",\"meta\":").unwrap()];
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let (head, body) = &requests[0];
    assert!(head.starts_with("POST /in "), "{head}");
    assert_eq!(header(head, "webhook-id"), Some(event_id), "{head}");
    assert!(
        header(head, "webhook-timestamp").is_some_and(|t| t.parse::<u64>().is_ok()),
        "{head}"
    );
    assert!(
        header(head, "webhook-signature").is_some_and(|s| s.starts_with("v1,")),
        "{head}"
    );
    assert_eq!(
        body, event_bytes,
        "the delivery carries the event as GET answers it"
    );

    // A retry of a delivered delivery: one more attempt now, DELIVERED again.
    let path = format!(
        "/webhook-endpoints/{}/deliveries/{}/retry",
        e["id"].as_str().unwrap(),
        d["id"].as_str().unwrap()
    );
    let retried = app.post(&path, &m.key, &json!({}), None).await;
    assert_success(&retried, 202);
    assert_eq!(retried.data()["status"], "PENDING");
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.requests().len() < 2 {
        assert!(Instant::now() < deadline, "the retry was not attempted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = wait_delivery(&app, &e, &m.key, "DELIVERED").await;
    assert_eq!(again["attempts"], 2, "{again}");
    assert_eq!(receiver.requests()[1].1, *body, "the same event again");
}
