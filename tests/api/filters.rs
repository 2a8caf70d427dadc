//! Metadata and list filters (API.md v1.1): `createdGte`/`createdLt` on every list,
//! `metadata[<key>]=<value>` on payments and refunds, and TEST-MATRIX row 43: a corpus of
//! metadata and filter abuse, where every out-of-bounds case is 400, filters match literally,
//! nothing is a 5xx and no merchant sees another's rows.

use serde_json::{Value, json};

use super::helpers::{
    Merchant, Reply, TestApp, assert_error, assert_invalid_field, assert_success, onboard,
    pay_body, payment_body, spawn_app, succeeded, wait_refund,
};

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `metadata[<key>]=<value>`, both encoded.
fn meta_filter(key: &str, value: &str) -> String {
    format!("{}={}", encode(&format!("metadata[{key}]")), encode(value))
}

/// A payment of `m` with this metadata, answered 202; returns its `data`.
async fn pay_with(app: &TestApp, m: &Merchant, metadata: Value) -> Value {
    let mut body = payment_body(&m.account_id, 1_000, "tok_visa");
    body["metadata"] = metadata;
    pay_body(app, &m.key, &body).await
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

/// Every reply the corpus sent, so the test can assert none was a 5xx.
#[derive(Default)]
struct Seen(Vec<(String, u16, String)>);

impl Seen {
    fn note(&mut self, what: &str, reply: &Reply) {
        self.0
            .push((what.to_owned(), reply.status, reply.text.clone()));
    }

    fn assert_no_5xx(&self) {
        let failed: Vec<_> = self.0.iter().filter(|(_, s, _)| *s >= 500).collect();
        assert!(failed.is_empty(), "5xx answers: {failed:?}");
    }
}

#[tokio::test]
async fn created_range_filters_payments_refunds_entries_and_keys() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let mut payments = Vec::new();
    for amount in [1_000, 2_000, 3_000] {
        payments.push(succeeded(&app, &m.key, &m.account_id, amount).await);
    }
    let created = |reply: &Reply| -> Vec<String> {
        reply
            .items()
            .iter()
            .map(|i| i["createdAt"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = app.get("/payments", &m.key).await;
    let times = created(&all);
    let ids = all.item_ids();
    assert_eq!(ids.len(), 3);
    // Newest first: ids[0] is the third payment. createdGte is inclusive, createdLt is not.
    let cases = [
        (format!("createdGte={}", times[1]), ids[..2].to_vec()),
        (format!("createdLt={}", times[1]), ids[2..].to_vec()),
        (
            format!("createdGte={}&createdLt={}", times[2], times[0]),
            ids[1..].to_vec(),
        ),
        (
            format!("createdGte={}&createdLt={}", times[0], times[0]),
            vec![],
        ),
        ("createdLt=2000-01-01T00:00:00Z".to_owned(), vec![]),
        ("createdGte=2000-01-01T00:00:00Z".to_owned(), ids.clone()),
        // An offset is the same instant: +01:00 (with '+' written %2B) an hour ahead.
        (
            "createdGte=2000-01-01T01:00:00%2B01:00".to_owned(),
            ids.clone(),
        ),
        (
            format!("createdGte={}&limit=1", times[2]),
            ids[..1].to_vec(),
        ),
        (
            format!(
                "createdGte={}&status=SUCCESS&startingAfter={}",
                times[2], ids[0]
            ),
            ids[1..].to_vec(),
        ),
    ];
    for (query, expected) in &cases {
        let reply = app.get(&format!("/payments?{query}"), &m.key).await;
        assert_success(&reply, 200);
        assert_eq!(&reply.item_ids(), expected, "{query}");
    }

    // Refunds, one per payment.
    for id in &payments {
        let reply = app
            .post(
                &format!("/payments/{id}/refunds"),
                &m.key,
                &json!({"amount": 100}),
                None,
            )
            .await;
        assert_success(&reply, 202);
        wait_refund(&app, &m.key, reply.data()["id"].as_str().unwrap()).await;
    }
    let all = app.get("/refunds", &m.key).await;
    let (times, ids) = (created(&all), all.item_ids());
    let reply = app
        .get(
            &format!("/refunds?createdGte={}&createdLt={}", times[1], times[0]),
            &m.key,
        )
        .await;
    assert_eq!(reply.item_ids(), vec![ids[1].clone()]);
    let reply = app
        .get(
            &format!("/refunds?createdLt={}&paymentId={}", times[0], payments[2]),
            &m.key,
        )
        .await;
    assert_eq!(
        reply.item_ids(),
        Vec::<String>::new(),
        "the newest refund is of payments[2]"
    );

    // Entries: 3 charges and 3 refunds on the merchant account.
    let path = format!("/accounts/{}/entries", m.account_id);
    let all = app.get(&format!("{path}?limit=100"), &m.key).await;
    let (times, ids) = (created(&all), all.item_ids());
    assert_eq!(ids.len(), 6);
    let reply = app
        .get(&format!("{path}?createdGte={}", times[2]), &m.key)
        .await;
    assert_success(&reply, 200);
    let kept = reply.item_ids();
    assert!(kept.starts_with(&ids[..2]) && kept.len() >= 3, "{kept:?}");
    assert!(
        reply
            .items()
            .iter()
            .all(|e| e["createdAt"].as_str().unwrap() >= times[2].as_str())
    );
    let reply = app
        .get(&format!("{path}?createdLt={}", times[5]), &m.key)
        .await;
    assert!(
        reply
            .items()
            .iter()
            .all(|e| e["createdAt"].as_str().unwrap() < times[5].as_str())
    );
    assert!(!reply.item_ids().contains(&ids[5]));

    // Keys: the onboarding key and two minted after it.
    for _ in 0..2 {
        assert_success(&app.post("/api-keys", &m.key, &json!({}), None).await, 201);
    }
    let all = app.get("/api-keys?limit=100", &m.key).await;
    let (times, ids) = (created(&all), all.item_ids());
    assert_eq!(ids.len(), 3);
    let reply = app
        .get(
            &format!("/api-keys?createdGte={}&createdLt={}", times[1], times[0]),
            &m.key,
        )
        .await;
    assert_success(&reply, 200);
    assert_eq!(reply.item_ids(), ids[1..2].to_vec());

    // A bad bound is 400 on every list.
    for list in ["/payments", "/refunds", path.as_str(), "/api-keys"] {
        for bad in [
            "createdGte=yesterday",
            "createdGte=2026-12-01",
            "createdLt=2026-12-01T00:00:00",
            "createdLt=1764547200",
            "createdGte=",
            // '+' unencoded is a space in a query string.
            "createdGte=2026-12-01T00:00:00+01:00",
            "createdGte=2026-13-01T00:00:00Z",
            "createdGte=2026-12-01T00:00:00Z&createdGte=2026-12-02T00:00:00Z",
        ] {
            let reply = app.get(&format!("{list}?{bad}"), &m.key).await;
            assert_error(&reply, 400, "validation_error");
        }
    }
    // Metadata filters are for payments and refunds only.
    let reply = app.get(&format!("{path}?metadata[a]=b"), &m.key).await;
    assert_error(&reply, 400, "validation_error");
}

#[tokio::test]
async fn metadata_filters_match_exactly_and_together() {
    let app = spawn_app().await;
    let m = onboard(&app, "Coffee Shop", "USD").await;
    let a = pay_with(&app, &m, json!({"orderId": "A-1", "shop": "north"})).await;
    let b = pay_with(&app, &m, json!({"orderId": "A-2", "shop": "north"})).await;
    let c = pay_with(&app, &m, json!({"orderId": "a-1", "shop": ""})).await;
    let _none = pay_with(&app, &m, json!({})).await;
    let cases: Vec<(String, Vec<String>)> = vec![
        (meta_filter("orderId", "A-1"), vec![id_of(&a)]),
        (meta_filter("orderId", "a-1"), vec![id_of(&c)]),
        (meta_filter("shop", "north"), vec![id_of(&b), id_of(&a)]),
        (
            format!(
                "{}&{}",
                meta_filter("shop", "north"),
                meta_filter("orderId", "A-2")
            ),
            vec![id_of(&b)],
        ),
        (
            format!(
                "{}&{}",
                meta_filter("shop", "north"),
                meta_filter("orderId", "a-1")
            ),
            vec![],
        ),
        (meta_filter("shop", ""), vec![id_of(&c)]),
        (meta_filter("orderId", "A-"), vec![]),
        (meta_filter("orderId", "A-1 "), vec![]),
        (meta_filter("missing", ""), vec![]),
        // Brackets unencoded work as well.
        ("metadata[orderId]=A-2".to_owned(), vec![id_of(&b)]),
        (
            format!(
                "{}&status=PENDING&status=PENDING",
                meta_filter("orderId", "A-1")
            ),
            vec![],
        ),
        (
            format!("{}&limit=1", meta_filter("shop", "north")),
            vec![id_of(&b)],
        ),
        (
            format!(
                "{}&startingAfter={}",
                meta_filter("shop", "north"),
                id_of(&b)
            ),
            vec![id_of(&a)],
        ),
    ];
    for (query, expected) in cases {
        let reply = app.get(&format!("/payments?{query}"), &m.key).await;
        if query.contains("status=PENDING&status") {
            assert_invalid_field(&reply, "status");
            continue;
        }
        assert_success(&reply, 200);
        assert_eq!(reply.item_ids(), expected, "{query}");
    }
    // Refunds carry metadata of their own, filtered the same way.
    let paid = succeeded(&app, &m.key, &m.account_id, 1_000).await;
    let mut refunds = Vec::new();
    for ticket in ["T-1", "T-2"] {
        let reply = app
            .post(
                &format!("/payments/{paid}/refunds"),
                &m.key,
                &json!({"amount": 10, "metadata": {"ticket": ticket}}),
                None,
            )
            .await;
        assert_success(&reply, 202);
        assert_eq!(reply.data()["metadata"], json!({"ticket": ticket}));
        refunds.push(id_of(reply.data()));
    }
    let reply = app
        .get(
            &format!("/refunds?{}", meta_filter("ticket", "T-2")),
            &m.key,
        )
        .await;
    assert_eq!(reply.item_ids(), vec![refunds[1].clone()]);
    let reply = app
        .get(
            &format!("/refunds?{}&paymentId={paid}", meta_filter("ticket", "T-1")),
            &m.key,
        )
        .await;
    assert_eq!(reply.item_ids(), vec![refunds[0].clone()]);
    // The payment's metadata is not the refund's.
    let reply = app
        .get(
            &format!("/refunds?{}", meta_filter("orderId", "A-1")),
            &m.key,
        )
        .await;
    assert_eq!(reply.item_ids(), Vec::<String>::new());
}

/// Bodies whose metadata is out of bounds: each is 400 naming `metadata`.
fn bad_metadata() -> Vec<(&'static str, Value)> {
    let many: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("k{i}"), json!("v"))).collect();
    vec![
        ("21 keys", Value::Object(many)),
        ("41-char key", json!({"k".repeat(41): "v"})),
        ("501-char value", json!({"k": "v".repeat(501)})),
        ("501 two-byte chars", json!({"k": "é".repeat(501)})),
        ("nested object", json!({"k": {"inner": "v"}})),
        ("array value", json!({"k": ["v"]})),
        ("number value", json!({"k": 1})),
        ("bool value", json!({"k": false})),
        ("null value", json!({"k": null})),
        ("metadata null", Value::Null),
        ("metadata array", json!([["k", "v"]])),
        ("metadata string", json!("k=v")),
        ("metadata number", json!(7)),
        ("NUL in value", json!({"k": "a\u{0}b"})),
        ("NUL in key", json!({"a\u{0}b": "v"})),
        ("empty key", json!({"": "v"})),
        ("space in key", json!({"order id": "v"})),
        ("slash in key", json!({"a/b": "v"})),
        ("bracket in key", json!({"a[b]": "v"})),
        ("quote in key", json!({"a'b": "v"})),
        ("non-ASCII key", json!({"ключ": "v"})),
        ("injection key", json!({"' OR 1=1 --": "v"})),
    ]
}

/// Values stored and matched literally: SQL, JSON-path, LIKE and regex metacharacters.
const LITERAL_VALUES: &[&str] = &[
    "' OR '1'='1",
    "\"; DROP TABLE payments; --",
    "%",
    "_",
    "*",
    ".*",
    "\\",
    "{\"$ne\": null}",
    "$.orderId",
    "<script>alert(1)</script>",
    "a&b=c",
    "x%00y",
    "😀",
];

#[tokio::test]
async fn row_43_metadata_and_filter_abuse_is_bounded_and_literal() {
    let app = spawn_app().await;
    let a = onboard(&app, "Coffee Shop", "USD").await;
    let b = onboard(&app, "Tea House", "USD").await;
    let mut seen = Seen::default();
    let paid = succeeded(&app, &a.key, &a.account_id, 1_000_000).await;

    // Out-of-bounds metadata on both create routes: 400 naming metadata, nothing stored.
    for (what, metadata) in bad_metadata() {
        let mut body = payment_body(&a.account_id, 1_000, "tok_visa");
        body["metadata"] = metadata.clone();
        let reply = app.post("/payments", &a.key, &body, None).await;
        seen.note(what, &reply);
        assert_invalid_field(&reply, "metadata");
        let reply = app
            .post(
                &format!("/payments/{paid}/refunds"),
                &a.key,
                &json!({"amount": 1, "metadata": metadata}),
                None,
            )
            .await;
        seen.note(what, &reply);
        assert_invalid_field(&reply, "metadata");
    }
    assert_eq!(
        app.get("/payments", &a.key).await.items().len(),
        1,
        "only the setup payment"
    );
    assert_eq!(app.get("/refunds", &a.key).await.items().len(), 0);

    // At the bounds: 20 keys, a 40-char key, 500 characters (of two bytes each), "" allowed.
    let twenty: serde_json::Map<String, Value> =
        (0..20).map(|i| (format!("k{i}"), json!(""))).collect();
    for metadata in [
        Value::Object(twenty),
        json!({"k".repeat(40): "v", "a.b-c_D9": "é".repeat(500)}),
    ] {
        let created = pay_with(&app, &a, metadata.clone()).await;
        assert_eq!(created["metadata"], metadata);
    }

    // Literal values: stored as sent, and found only by an exact filter.
    let mut by_value = Vec::new();
    for (i, value) in LITERAL_VALUES.iter().enumerate() {
        let created = pay_with(&app, &a, json!({"probe": value, "n": i.to_string()})).await;
        assert_eq!(created["metadata"]["probe"], *value);
        // Merchant B stores the very same metadata: A must never see it.
        pay_with(&app, &b, json!({"probe": value, "n": i.to_string()})).await;
        by_value.push(id_of(&created));
    }
    for (value, id) in LITERAL_VALUES.iter().zip(&by_value) {
        let query = format!("/payments?{}", meta_filter("probe", value));
        let reply = app.get(&query, &a.key).await;
        seen.note(&query, &reply);
        assert_success(&reply, 200);
        assert_eq!(
            reply.item_ids(),
            vec![id.clone()],
            "{value:?} matches itself only"
        );
    }
    for pattern in [
        "%%",
        "' OR 'x'='x",
        "%' OR '1'='1",
        "1' OR 1=1 --",
        "*'",
        "\\\\",
    ] {
        let query = format!("/payments?{}", meta_filter("probe", pattern));
        let reply = app.get(&query, &a.key).await;
        seen.note(&query, &reply);
        assert_success(&reply, 200);
        assert_eq!(
            reply.item_ids(),
            Vec::<String>::new(),
            "{pattern:?} is no pattern"
        );
    }

    // Out-of-bounds and malformed filters: 400 on both lists.
    let many: Vec<String> = (0..21)
        .map(|i| meta_filter(&format!("k{i}"), "v"))
        .collect();
    let bad_filters = vec![
        many.join("&"),
        meta_filter(&"k".repeat(41), "v"),
        meta_filter("k", &"v".repeat(501)),
        meta_filter("k", "a\u{0}b"),
        meta_filter("' OR 1=1 --", "v"),
        meta_filter("", "v"),
        meta_filter("a b", "v"),
        meta_filter("ключ", "v"),
        meta_filter("a][b", "v"),
        "metadata[k]=1&metadata[k]=1".to_owned(),
        "metadata[k]=1&metadata%5Bk%5D=2".to_owned(),
        "metadata=v".to_owned(),
        "metadata[]=v".to_owned(),
        "metadata[k=v".to_owned(),
        "metadatak]=v".to_owned(),
        "metadata[k][j]=v".to_owned(),
        "metadata[k]x=v".to_owned(),
        "metadata.k=v".to_owned(),
    ];
    for list in ["/payments", "/refunds"] {
        for query in &bad_filters {
            let path = format!("{list}?{query}");
            let reply = app.get(&path, &a.key).await;
            seen.note(&path, &reply);
            assert_error(&reply, 400, "validation_error");
        }
    }

    // No cross-merchant rows: every filter A runs returns A's rows only, with the platform
    // key seeing both merchants'.
    let theirs = app.get("/payments?limit=100", &b.key).await.item_ids();
    let everything = app.get("/payments?limit=100", &a.key).await.item_ids();
    assert!(everything.iter().all(|id| !theirs.contains(id)));
    let filter = meta_filter("n", "0");
    let mine = app
        .get(&format!("/payments?{filter}"), &a.key)
        .await
        .item_ids();
    let both = app
        .get(&format!("/payments?{filter}"), &app.platform_key)
        .await
        .item_ids();
    assert_eq!(mine, vec![by_value[0].clone()]);
    assert_eq!(both.len(), 2, "A's and B's, for the platform key: {both:?}");
    seen.assert_no_5xx();
}
