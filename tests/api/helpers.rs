//! `spawn_on`: builds the real server from settings (port 0) on one [`Backend`], runs it in
//! the background and returns a client for it. Each suite module of `main.rs` wraps it as
//! `spawn_app`/`spawn_app_with` for its backend. Typed helpers on top (onboarding, paying,
//! polling a payment until it is terminal, error assertions, raw HTTP over a socket).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomic_core::Account;
use atomic_postgres::testkit::TestDatabase;
use atomic_redis::testkit::{DeleteOnDrop, require_redis, unique_config};
use atomic_server::{Application, Settings};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The adapters a suite runs the server on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// No `DATABASE_URL`, no `REDIS_URL`: in-memory adapters.
    Memory,
    /// `DATABASE_URL` set to a fresh database of its own (in-memory queue and limiter).
    Postgres,
    /// The production shape: a fresh database, and Redis under a key prefix of its own.
    PostgresRedis,
}

/// A running server and a client for it.
#[derive(Clone)]
pub struct TestApp {
    /// The test's own database (if any): it lives as long as the last clone of the app.
    _database: Option<Arc<TestDatabase>>,
    /// Deletes the test's Redis keys (if any) when the last clone of the app goes.
    _redis_keys: Option<Arc<DeleteOnDrop>>,
    /// `http://127.0.0.1:<port>`.
    pub origin: String,
    /// `127.0.0.1:<port>`, for raw sockets.
    pub address: std::net::SocketAddr,
    /// The platform key (minted at start-up).
    pub platform_key: String,
    /// Each supported currency's system ("World") account id. The API has no route that names
    /// them, so the harness reads them from the running services once, at start-up.
    pub system_accounts: HashMap<String, String>,
    pub client: reqwest::Client,
}

/// A server on `backend` with these environment variables (over `PORT=0`, no metrics
/// listener, and rate limits off; the rate-limit tests turn them on).
pub async fn spawn_on(backend: Backend, vars: &[(&str, &str)]) -> TestApp {
    let mut env: HashMap<String, String> = HashMap::from([
        ("PORT".to_owned(), "0".to_owned()),
        ("METRICS_ADDR".to_owned(), "off".to_owned()),
        ("RATE_LIMIT_GLOBAL".to_owned(), "off".to_owned()),
        ("RATE_LIMIT_PAYMENTS".to_owned(), "off".to_owned()),
    ]);
    let database = match backend {
        Backend::Memory => None,
        Backend::Postgres | Backend::PostgresRedis => {
            let db = TestDatabase::create().await;
            env.insert("DATABASE_URL".to_owned(), db.url().to_owned());
            env.insert("DATABASE_POOL_SIZE".to_owned(), "6".to_owned());
            Some(Arc::new(db))
        }
    };
    let redis_keys = match backend {
        Backend::Memory | Backend::Postgres => None,
        Backend::PostgresRedis => {
            let url =
                std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
            require_redis(&url).await;
            let config = unique_config(&url);
            env.insert("REDIS_URL".to_owned(), url);
            env.insert("REDIS_KEY_PREFIX".to_owned(), config.prefix.clone());
            Some(Arc::new(DeleteOnDrop::new(&config)))
        }
    };
    for (k, v) in vars {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let settings = Settings::from_lookup(|name| env.get(name).cloned()).expect("test settings");
    let app = Application::build(settings).await.expect("server builds");
    let address = app.address();
    let origin = format!("http://{address}");
    let platform_key = app
        .minted_platform_key()
        .expect("no MERCHANT_API_KEY_HASH: a platform key is minted")
        .expose()
        .to_owned();
    let mut system_accounts = HashMap::new();
    {
        let services = app.services();
        let ports = services.ports();
        for currency in services.config().currencies.iter() {
            // Idempotent: returns the currency's existing system account.
            let candidate = Account::system(currency, ports.clock.now());
            let world = ports
                .store
                .accounts()
                .ensure_system_account(&candidate)
                .await
                .expect("system account");
            system_accounts.insert(currency.to_string(), world.id.to_string());
        }
    }
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    TestApp {
        _database: database,
        _redis_keys: redis_keys,
        origin,
        address,
        platform_key,
        system_accounts,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            // Well under the server's keep-alive idle limit (HEADER_READ_TIMEOUT, 10 s): a test
            // that waits out a rate-limit window (up to 10 s) must not reuse a connection the
            // server is closing at that moment (the request then fails as an incomplete message).
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    }
}

/// A response: status, headers and the JSON body (`Value::Null` when not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    /// `error.code`, or "" when there is none.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }

    /// `data`.
    pub fn data(&self) -> &Value {
        &self.json["data"]
    }

    /// A header as text (the first value), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }

    /// The `field`s named in `error.details`.
    pub fn detail_fields(&self) -> Vec<String> {
        self.json["error"]["details"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|d| d["field"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `data.items` of a list.
    pub fn items(&self) -> Vec<Value> {
        self.data()["items"]
            .as_array()
            .cloned()
            .expect("a list has items")
    }

    /// The ids of `data.items`.
    pub fn item_ids(&self) -> Vec<String> {
        self.items()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Asserts an error answer: status, `success: false`, `error.code`, a message, and `meta`.
#[track_caller]
pub fn assert_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "status; body: {}", reply.text);
    assert_eq!(reply.json["success"], false, "{}", reply.text);
    assert_eq!(reply.code(), code, "error.code; body: {}", reply.text);
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error.message; body: {}",
        reply.text
    );
    assert!(
        reply.json.get("data").is_none(),
        "an error has no data: {}",
        reply.text
    );
    assert_meta(reply);
}

/// Asserts a 400 `validation_error` whose `details` name `field` (each detail has a message).
#[track_caller]
pub fn assert_invalid_field(reply: &Reply, field: &str) {
    assert_error(reply, 400, "validation_error");
    let details = reply.json["error"]["details"]
        .as_array()
        .expect("details is a list");
    assert!(
        details
            .iter()
            .all(|d| d["field"].is_string() && d["message"].as_str().is_some_and(|m| !m.is_empty())),
        "every detail is {{field, message}}: {}",
        reply.text
    );
    assert!(
        reply.detail_fields().iter().any(|f| f == field),
        "details name {field:?}: {}",
        reply.text
    );
}

/// Asserts a success answer with this status.
#[track_caller]
pub fn assert_success(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "status; body: {}", reply.text);
    assert_eq!(reply.json["success"], true, "{}", reply.text);
    assert!(reply.json.get("error").is_none(), "{}", reply.text);
    assert_meta(reply);
}

/// `meta.timestamp` is RFC 3339 UTC and `meta.requestId` equals the `X-Request-Id` header.
#[track_caller]
pub fn assert_meta(reply: &Reply) {
    assert_timestamp(&reply.json["meta"]["timestamp"]);
    let id = reply
        .header("x-request-id")
        .expect("every response carries X-Request-Id");
    assert_eq!(reply.json["meta"]["requestId"], id, "{}", reply.text);
}

/// An RFC 3339 UTC timestamp string.
#[track_caller]
pub fn assert_timestamp(value: &Value) {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("timestamp string, got {value}"));
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        r.into_iter()
            .all(|i| b.get(i).is_some_and(u8::is_ascii_digit))
    };
    assert!(
        b.len() >= 20
            && digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[7] == b'-'
            && digits(8..10)
            && (b[10] == b'T' || b[10] == b't')
            && digits(11..13)
            && b[13] == b':'
            && digits(14..16)
            && b[16] == b':'
            && digits(17..19)
            && (s.ends_with('Z') || s.ends_with("+00:00")),
        "RFC 3339 UTC timestamp: {s:?}"
    );
}

/// A UUID string.
#[track_caller]
pub fn assert_uuid(value: &Value) -> String {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("id string, got {value}"));
    uuid::Uuid::parse_str(s).unwrap_or_else(|_| panic!("UUID: {s:?}"));
    s.to_owned()
}

/// The keys of a JSON object, sorted.
pub fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("object, got {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// Asserts the object has exactly these keys.
#[track_caller]
pub fn assert_keys(value: &Value, expected: &[&str]) {
    let mut expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(keys(value), expected, "fields of {value}");
}

/// The fields of a payment (API.md, v1.1).
pub const PAYMENT_FIELDS: &[&str] = &[
    "id",
    "merchantId",
    "amount",
    "currency",
    "source",
    "description",
    "status",
    "failureReason",
    "captureMethod",
    "amountCaptured",
    "amountRefunded",
    "cancellationReason",
    "metadata",
    "idempotencyKey",
    "createdAt",
    "updatedAt",
];

/// The fields of a refund (API.md v1.1).
pub const REFUND_FIELDS: &[&str] = &[
    "id",
    "paymentId",
    "merchantId",
    "amount",
    "currency",
    "reason",
    "status",
    "failureReason",
    "metadata",
    "idempotencyKey",
    "createdAt",
    "updatedAt",
];

/// The fields of an account (API.md).
pub const ACCOUNT_FIELDS: &[&str] = &[
    "id",
    "name",
    "balance",
    "currency",
    "allowNegative",
    "createdAt",
];

/// The fields of a ledger entry (API.md).
pub const ENTRY_FIELDS: &[&str] = &[
    "id",
    "transactionId",
    "paymentId",
    "refundId",
    "accountId",
    "direction",
    "amount",
    "createdAt",
];

/// The fields of a stored API key (API.md); a minted one adds `key`.
pub const API_KEY_FIELDS: &[&str] = &["id", "prefix", "createdAt", "revokedAt"];

/// The fields of an event (API.md v1.1); `data` is `{"object": payment or refund}`.
pub const EVENT_FIELDS: &[&str] = &["id", "type", "merchantId", "createdAt", "data"];

/// The fields of a stored webhook endpoint (API.md v1.1); a new one adds `secret`.
pub const ENDPOINT_FIELDS: &[&str] = &["id", "url", "events", "description", "createdAt"];

/// The fields of a webhook delivery (API.md v1.1).
pub const DELIVERY_FIELDS: &[&str] = &[
    "id",
    "eventId",
    "endpointId",
    "status",
    "attempts",
    "lastAttemptAt",
    "lastStatusCode",
    "lastError",
    "nextAttemptAt",
    "createdAt",
];

/// The setting under which webhook endpoints may be on loopback (API.md): the only kind of
/// endpoint the tests create, so nothing is ever sent off this machine.
pub const ALLOW_PRIVATE_WEBHOOKS: (&str, &str) = ("WEBHOOK_ALLOW_PRIVATE", "true");

/// A merchant onboarded through `POST /merchants`.
#[derive(Clone, Debug)]
pub struct Merchant {
    pub id: String,
    /// The merchant's own account (what `merchantId` in a payment names).
    pub account_id: String,
    /// The raw key minted with the merchant.
    pub key: String,
    /// That key's id.
    pub key_id: String,
}

/// Onboards a merchant with the platform key.
pub async fn onboard(app: &TestApp, name: &str, currency: &str) -> Merchant {
    let reply = app
        .post(
            "/merchants",
            &app.platform_key,
            &json!({"name": name, "currency": currency}),
            None,
        )
        .await;
    assert_success(&reply, 201);
    let data = reply.data();
    Merchant {
        id: data["merchant"]["id"].as_str().unwrap().to_owned(),
        account_id: data["account"]["id"].as_str().unwrap().to_owned(),
        key: data["apiKey"]["key"].as_str().unwrap().to_owned(),
        key_id: data["apiKey"]["id"].as_str().unwrap().to_owned(),
    }
}

/// A `POST /payments` body in USD to `account_id`.
pub fn payment_body(account_id: &str, amount: i64, source: &str) -> Value {
    json!({"merchantId": account_id, "amount": amount, "currency": "USD", "source": source})
}

/// Creates a payment (asserting 202) and returns its `data`.
pub async fn pay(app: &TestApp, key: &str, account_id: &str, amount: i64, source: &str) -> Value {
    let reply = app
        .post(
            "/payments",
            key,
            &payment_body(account_id, amount, source),
            None,
        )
        .await;
    assert_success(&reply, 202);
    reply.data().clone()
}

/// Creates a payment from `body` (asserting 202) and returns its `data`.
pub async fn pay_body(app: &TestApp, key: &str, body: &Value) -> Value {
    let reply = app.post("/payments", key, body, None).await;
    assert_success(&reply, 202);
    reply.data().clone()
}

/// A manual-capture payment of `amount` USD to `account_id`, waited until AUTHORIZED;
/// returns its id.
pub async fn authorized(app: &TestApp, key: &str, account_id: &str, amount: i64) -> String {
    let mut body = payment_body(account_id, amount, "tok_visa");
    body["captureMethod"] = json!("manual");
    let created = pay_body(app, key, &body).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let payment = wait_payment(app, key, &id, &["AUTHORIZED"]).await;
    assert_eq!(payment["amountCaptured"], 0, "{payment}");
    id
}

/// An automatic payment of `amount` USD to `account_id`, waited until SUCCESS; returns its id.
pub async fn succeeded(app: &TestApp, key: &str, account_id: &str, amount: i64) -> String {
    let created = pay(app, key, account_id, amount, "tok_visa").await;
    let id = created["id"].as_str().unwrap().to_owned();
    let payment = wait_terminal(app, key, &id).await;
    assert_eq!(payment["status"], "SUCCESS", "{payment}");
    id
}

/// `GET /payments/:id`'s payment (asserting 200).
pub async fn payment(app: &TestApp, key: &str, payment_id: &str) -> Value {
    let reply = app.get(&format!("/payments/{payment_id}"), key).await;
    assert_success(&reply, 200);
    reply.data()["payment"].clone()
}

/// Polls `GET /payments/:id` until the payment is SUCCESS or FAILED (at most 10 s).
pub async fn wait_terminal(app: &TestApp, key: &str, payment_id: &str) -> Value {
    wait_payment(app, key, payment_id, &["SUCCESS", "FAILED"]).await
}

/// How long a test waits for a worker to settle something.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(10);

/// Polls `GET /payments/:id` until its status is one of `until` (at most [`SETTLE_WITHIN`]);
/// meanwhile it may only be PENDING or PROCESSING (anything else fails at once).
pub async fn wait_payment(app: &TestApp, key: &str, payment_id: &str, until: &[&str]) -> Value {
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        let reply = app.get(&format!("/payments/{payment_id}"), key).await;
        assert_success(&reply, 200);
        let payment = reply.data()["payment"].clone();
        let status = payment["status"].as_str().unwrap_or("").to_owned();
        if until.contains(&status.as_str()) {
            return payment;
        }
        assert!(
            status == "PENDING" || status == "PROCESSING",
            "payment {payment_id}: unexpected status {status} waiting for {until:?}"
        );
        assert!(
            Instant::now() < deadline,
            "payment {payment_id} still {status} after {SETTLE_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `GET /refunds/:id` until the refund is SUCCESS or FAILED (at most [`SETTLE_WITHIN`]).
pub async fn wait_refund(app: &TestApp, key: &str, refund_id: &str) -> Value {
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        let reply = app.get(&format!("/refunds/{refund_id}"), key).await;
        assert_success(&reply, 200);
        let refund = reply.data().clone();
        let status = refund["status"].as_str().unwrap_or("").to_owned();
        if status == "SUCCESS" || status == "FAILED" {
            return refund;
        }
        assert!(
            status == "PENDING" || status == "PROCESSING",
            "refund {refund_id}: unexpected status {status}"
        );
        assert!(
            Instant::now() < deadline,
            "refund {refund_id} still {status} after {SETTLE_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The account (`GET /accounts/:id`, asserting 200).
pub async fn account(app: &TestApp, key: &str, account_id: &str) -> Value {
    let reply = app.get(&format!("/accounts/{account_id}"), key).await;
    assert_success(&reply, 200);
    reply.data().clone()
}

/// The balance of an account.
pub async fn balance(app: &TestApp, key: &str, account_id: &str) -> i64 {
    account(app, key, account_id).await["balance"]
        .as_i64()
        .expect("integer balance")
}

/// Every entry of an account (first page of 100, asserting there is no more).
pub async fn entries(app: &TestApp, key: &str, account_id: &str) -> Vec<Value> {
    let reply = app
        .get(&format!("/accounts/{account_id}/entries?limit=100"), key)
        .await;
    assert_success(&reply, 200);
    assert_eq!(reply.data()["hasMore"], false);
    reply.items()
}

/// Walks a list with `limit` per page and returns every page's ids (and asserts `hasMore`).
pub async fn walk_pages(app: &TestApp, key: &str, path: &str, limit: u32) -> Vec<Vec<String>> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            None => format!("{path}{sep}limit={limit}"),
            Some(c) => format!("{path}{sep}limit={limit}&startingAfter={c}"),
        };
        let reply = app.get(&url, key).await;
        assert_success(&reply, 200);
        let ids = reply.item_ids();
        let has_more = reply.data()["hasMore"]
            .as_bool()
            .expect("hasMore is a bool");
        assert!(ids.len() <= limit as usize);
        cursor = ids.last().cloned();
        pages.push(ids);
        if !has_more {
            return pages;
        }
        assert!(cursor.is_some(), "hasMore on an empty page");
        assert!(pages.len() < 1000, "endless pagination");
    }
}

/// A random UUID (v4-looking, built from v7 bits is enough: nobody owns it).
pub fn random_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// For rate-limit tests. Reads `RateLimit-Reset` of the first counted response; if fewer than
/// 10 s remain in its window, waits until the next window starts so the test never straddles
/// a window boundary. Returns how many requests of the current window are already used by
/// that first response's identity: 1, or 0 after waiting.
pub async fn settle_window(first: &Reply) -> u64 {
    let reset: u64 = first
        .header("ratelimit-reset")
        .expect("RateLimit-Reset on a limited route")
        .parse()
        .expect("RateLimit-Reset is whole seconds");
    if reset < 10 {
        tokio::time::sleep(Duration::from_secs(reset + 1)).await;
        0
    } else {
        1
    }
}

/// An answer read off a raw socket.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    pub body: String,
    pub json: Value,
}

impl RawReply {
    /// A header's value (case-insensitive name), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

impl TestApp {
    /// The books audit (L1–L14) of the test's own database, on the PostgreSQL backends
    /// (`None` in memory: the in-memory store lives inside the server, out of reach).
    pub async fn audit(&self) -> Option<atomic_core::ports::AuditReport> {
        use atomic_core::ports::LedgerAudit;
        let db = self._database.as_ref()?;
        Some(
            db.store()
                .audit(Duration::from_secs(3600))
                .await
                .expect("books audit"),
        )
    }

    /// The test's own database pool, on the PostgreSQL backends (`None` in memory).
    pub fn pool(&self) -> Option<sqlx::PgPool> {
        self._database.as_ref().map(|db| db.store().pool().clone())
    }

    /// `/api/v1` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.origin)
    }

    /// Sends a request built by `build` and collects the reply.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body read");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    /// GET with a key.
    pub async fn get(&self, path: &str, key: &str) -> Reply {
        self.send(self.client.get(self.url(path)).bearer_auth(key))
            .await
    }

    /// GET without a key.
    pub async fn get_anon(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(path))).await
    }

    /// DELETE with a key.
    pub async fn delete(&self, path: &str, key: &str) -> Reply {
        self.send(self.client.delete(self.url(path)).bearer_auth(key))
            .await
    }

    /// POST a JSON body with a key and, optionally, an idempotency key.
    pub async fn post(
        &self,
        path: &str,
        key: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Reply {
        let mut request = self.client.post(self.url(path)).bearer_auth(key).json(body);
        if let Some(k) = idempotency_key {
            request = request.header("Idempotency-Key", k);
        }
        self.send(request).await
    }

    /// POST these exact body bytes with a key and, optionally, a Content-Type.
    pub async fn post_raw(
        &self,
        path: &str,
        key: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut request = self.client.post(self.url(path)).bearer_auth(key).body(body);
        if let Some(ct) = content_type {
            request = request.header("Content-Type", ct);
        }
        self.send(request).await
    }

    /// POST exact JSON text (`application/json`) with a key.
    pub async fn post_text(&self, path: &str, key: &str, body: &str) -> Reply {
        self.post_raw(path, key, Some("application/json"), body.to_owned())
            .await
    }

    /// Writes `request` (the whole HTTP/1.1 message) on a new socket while reading the answer,
    /// and parses the status line, head and body (by `Content-Length`, or until the close).
    pub async fn raw(&self, request: Vec<u8>) -> RawReply {
        let stream = tokio::net::TcpStream::connect(self.address)
            .await
            .expect("connect");
        let (mut read, mut write) = stream.into_split();
        let writer = tokio::spawn(async move {
            // The server may answer and close before reading everything; that is fine.
            let _ = write.write_all(&request).await;
            let _ = write.flush().await;
            write
        });
        let mut buf = Vec::new();
        let read_all = async {
            let mut chunk = [0u8; 8192];
            loop {
                if let Some(end) = find(&buf, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let length = head.lines().find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.trim()
                            .eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    });
                    if let Some(length) = length
                        && buf.len() >= end + 4 + length
                    {
                        return;
                    }
                }
                match read.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read_all)
            .await
            .expect("a raw answer within 10 s");
        drop(writer);
        let end = find(&buf, b"\r\n\r\n")
            .unwrap_or_else(|| panic!("an HTTP head, got {:?}", String::from_utf8_lossy(&buf)));
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let body = String::from_utf8_lossy(&buf[end + 4..]).to_string();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line: {head}"));
        let json = serde_json::from_str(&body).unwrap_or(Value::Null);
        RawReply {
            status,
            head,
            body,
            json,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What [`books_by_sql`] found: each count is of rows that break the books in a way that no
/// constraint of the schema forbids on its own (`UNIQUE (payment_id)` already rules out a
/// second posting, so that is not asked).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SqlBooks {
    /// Accepted (202) payment ids with no row in `payments`: a lost acknowledgement.
    pub missing: Vec<String>,
    /// Postings (ledger transactions) in all.
    pub postings: i64,
    /// Postings that are not DEBIT the payment's funding account (the currency's World
    /// account), CREDIT its merchant account, of its amount and currency, for a SUCCESS payment.
    pub wrong_postings: i64,
    /// Postings whose entries are not exactly one DEBIT of the payment's amount on its funding
    /// account and one CREDIT of that amount on its merchant account.
    pub wrong_entries: i64,
    /// SUCCESS payments without a posting.
    pub unposted: i64,
    /// Accounts whose balance is not the sum of their SUCCESS payments (a merchant account:
    /// the amounts it was credited; a World account: minus the amounts it funded).
    pub wrong_balances: i64,
}

impl SqlBooks {
    /// Whether nothing is wrong.
    pub fn is_right(&self) -> bool {
        self.missing.is_empty()
            && self.wrong_postings == 0
            && self.wrong_entries == 0
            && self.unposted == 0
            && self.wrong_balances == 0
    }
}

/// Checks the books straight in PostgreSQL against the payments and refunds they post,
/// set-based: every `accepted` id is stored; a charge posting is DEBIT `world` (the payment's
/// funding account), CREDIT the payment's merchant account, of its captured amount; a refund
/// posting is the reverse, of its SUCCESS refund's amount; each has its two matching entries;
/// every SUCCESS payment and refund is posted; every balance is what they net to.
pub async fn books_by_sql(pool: &sqlx::PgPool, accepted: &[String], world: &str) -> SqlBooks {
    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT a.id::text FROM unnest($1::text[]::uuid[]) AS a(id) \
         WHERE NOT EXISTS (SELECT 1 FROM payments p WHERE p.id = a.id) ORDER BY 1",
    )
    .bind(accepted)
    .fetch_all(pool)
    .await
    .expect("look up the accepted payments");
    let (postings, wrong_postings, wrong_entries, unposted, wrong_balances): (
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = sqlx::query_as(
        "WITH tx AS ( \
           SELECT t.id, t.refund_id, t.debit_account, t.credit_account, t.amount, t.currency, \
                  p.id AS pid, p.currency AS p_currency, \
                  CASE WHEN t.refund_id IS NULL THEN p.status = 'SUCCESS' \
                       AND t.debit_account = p.funding_account AND t.debit_account = $1::uuid \
                       AND t.credit_account = p.merchant_account \
                       AND t.amount = p.amount_captured \
                  ELSE r.status = 'SUCCESS' AND r.payment_id = p.id \
                       AND t.debit_account = p.merchant_account \
                       AND t.credit_account = p.funding_account AND t.credit_account = $1::uuid \
                       AND t.amount = r.amount END AS right_posting \
           FROM ledger_transactions t LEFT JOIN payments p ON p.id = t.payment_id \
           LEFT JOIN refunds r ON r.id = t.refund_id), \
         net AS ( \
           SELECT p.merchant_account AS merchant, p.funding_account AS funding, \
                  p.amount_captured - COALESCE((SELECT sum(r.amount) FROM refunds r \
                    WHERE r.payment_id = p.id AND r.status = 'SUCCESS'), 0) AS amount \
           FROM payments p WHERE p.status = 'SUCCESS') \
         SELECT \
           (SELECT count(*) FROM tx), \
           (SELECT count(*) FROM tx WHERE pid IS NULL OR right_posting IS NOT TRUE \
              OR currency <> p_currency), \
           (SELECT count(*) FROM tx WHERE \
              (SELECT count(*) FROM ledger_entries e WHERE e.transaction_id = tx.id) <> 2 \
              OR NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.transaction_id = tx.id \
                 AND e.payment_id = tx.pid AND e.refund_id IS NOT DISTINCT FROM tx.refund_id \
                 AND e.direction = 'DEBIT' AND e.account_id = tx.debit_account \
                 AND e.amount = tx.amount AND e.currency = tx.currency) \
              OR NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.transaction_id = tx.id \
                 AND e.payment_id = tx.pid AND e.refund_id IS NOT DISTINCT FROM tx.refund_id \
                 AND e.direction = 'CREDIT' AND e.account_id = tx.credit_account \
                 AND e.amount = tx.amount AND e.currency = tx.currency)), \
           (SELECT count(*) FROM payments p WHERE p.status = 'SUCCESS' \
              AND NOT EXISTS (SELECT 1 FROM ledger_transactions t \
                 WHERE t.payment_id = p.id AND t.refund_id IS NULL)) \
           + (SELECT count(*) FROM refunds r WHERE r.status = 'SUCCESS' \
              AND NOT EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.refund_id = r.id)), \
           (SELECT count(*) FROM accounts a WHERE a.balance <> \
              CASE WHEN a.kind = 'system' THEN \
                -COALESCE((SELECT sum(n.amount) FROM net n WHERE n.funding = a.id), 0) \
              ELSE \
                COALESCE((SELECT sum(n.amount) FROM net n WHERE n.merchant = a.id), 0) \
              END)",
    )
    .bind(world)
    .fetch_one(pool)
    .await
    .expect("check the books");
    SqlBooks {
        missing,
        postings,
        wrong_postings,
        wrong_entries,
        unposted,
        wrong_balances,
    }
}
