//! A thin typed client for the routes the load generator uses (API.md): one `reqwest::Client`
//! (HTTP/1.1, keep-alive pool sized to the connection count), the JSON envelope unwrapped, and
//! every failure turned into a [`Failure`] that the caller counts, never a panic.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// Why a request did not give the expected answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The server answered with an unexpected status; `code` is the envelope's error code.
    Status {
        /// HTTP status.
        status: u16,
        /// `error.code` from the body, or empty.
        code: String,
    },
    /// No answer: connection refused or reset, or the request timed out.
    Transport(&'static str),
    /// An answer with the right status but a body this client cannot read.
    Body(String),
}

impl Failure {
    /// The key errors are counted under: the status code, or the transport kind.
    pub(crate) fn label(&self) -> String {
        match self {
            Failure::Status { status, .. } => status.to_string(),
            Failure::Transport(kind) => (*kind).to_owned(),
            Failure::Body(_) => "bad_body".to_owned(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status { status, code } if code.is_empty() => write!(f, "HTTP {status}"),
            Failure::Status { status, code } => write!(f, "HTTP {status} {code}"),
            Failure::Transport(kind) => write!(f, "no answer ({kind})"),
            Failure::Body(why) => write!(f, "unreadable answer: {why}"),
        }
    }
}

impl std::error::Error for Failure {}

/// An API key ready to go into the `Authorization` header.
#[derive(Clone)]
pub(crate) struct Key(HeaderValue);

impl Key {
    /// `Bearer <raw>`; refuses keys that cannot be a header value.
    pub(crate) fn new(raw: &str) -> Result<Key, Failure> {
        let mut value = HeaderValue::from_str(&format!("Bearer {raw}"))
            .map_err(|_| Failure::Body("API key is not a valid header value".into()))?;
        value.set_sensitive(true);
        Ok(Key(value))
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// A payment as the API shows it (the fields the load generator reads).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PaymentView {
    /// Payment id.
    #[serde(deserialize_with = "uuid_text")]
    pub(crate) id: Uuid,
    /// The credited account.
    #[serde(deserialize_with = "uuid_text")]
    pub(crate) merchant_id: Uuid,
    /// Minor units.
    pub(crate) amount: i64,
    /// `PENDING`, `PROCESSING`, `AUTHORIZED`, `SUCCESS`, `FAILED` or `CANCELED`.
    pub(crate) status: String,
    /// Last change, RFC 3339 UTC.
    pub(crate) updated_at: String,
}

impl PaymentView {
    /// Whether no worker has anything left to do for the payment: it is `SUCCESS`, `FAILED`,
    /// `CANCELED`, or `AUTHORIZED` (waiting for its merchant, not for us).
    pub(crate) fn is_terminal(&self) -> bool {
        !OPEN_STATUSES.contains(&self.status.as_str())
    }
}

/// A refund as the API shows it (the fields the load generator reads).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RefundView {
    /// Refund id.
    #[serde(deserialize_with = "uuid_text")]
    pub(crate) id: Uuid,
    /// `PENDING`, `PROCESSING`, `SUCCESS` or `FAILED`.
    pub(crate) status: String,
}

impl RefundView {
    /// Whether the refund reached `SUCCESS` or `FAILED`.
    pub(crate) fn is_terminal(&self) -> bool {
        !OPEN_STATUSES.contains(&self.status.as_str())
    }
}

/// A ledger entry (the fields the books check reads).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EntryView {
    /// The payment the entry posts.
    #[serde(deserialize_with = "uuid_text")]
    pub(crate) payment_id: Uuid,
    /// The account it posts to.
    #[serde(deserialize_with = "uuid_text")]
    pub(crate) account_id: Uuid,
    /// `DEBIT` or `CREDIT`.
    pub(crate) direction: String,
    /// Minor units.
    pub(crate) amount: i64,
}

/// An account's balance.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AccountView {
    /// Minor units.
    pub(crate) balance: i64,
}

/// One page of a list: newest first.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Page<T> {
    /// The items.
    pub(crate) items: Vec<T>,
    /// Whether older items follow.
    pub(crate) has_more: bool,
}

/// A merchant created by `POST /merchants`: its account and its own raw key.
#[derive(Debug, Clone)]
pub(crate) struct Merchant {
    /// The merchant's account (the `merchantId` of its payments).
    pub(crate) account: Uuid,
    /// The merchant's own key.
    pub(crate) key: Key,
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
}

#[derive(Deserialize)]
struct IdOnly {
    #[serde(deserialize_with = "uuid_text")]
    id: Uuid,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MerchantCreated {
    account: IdOnly,
    api_key: RawKey,
}

#[derive(Deserialize)]
struct RawKey {
    key: String,
}

/// The body of `POST /payments`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewPayment<'a> {
    /// The merchant account credited.
    #[serde(serialize_with = "uuid_out")]
    pub(crate) merchant_id: Uuid,
    /// Minor units.
    pub(crate) amount: i64,
    /// Currency code.
    pub(crate) currency: &'a str,
    /// Card token.
    pub(crate) source: &'a str,
    /// Always `loadgen`.
    pub(crate) description: &'static str,
    /// `manual`, or left out for automatic capture so the body stays the v1 one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) capture_method: Option<&'static str>,
}

impl<'a> NewPayment<'a> {
    /// A payment of `amount` into `merchant_id`, captured as `capture` says.
    pub(crate) fn new(
        merchant_id: Uuid,
        amount: i64,
        currency: &'a str,
        source: &'a str,
        capture: Capture,
    ) -> NewPayment<'a> {
        NewPayment {
            merchant_id,
            amount,
            currency,
            source,
            description: "loadgen",
            capture_method: (capture == Capture::Manual).then_some("manual"),
        }
    }
}

/// Whether a payment is captured by its worker or later by a capture request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capture {
    /// `captureMethod: automatic` (the default): the worker charges and posts it.
    Automatic,
    /// `captureMethod: manual`: the worker authorizes it; a capture request posts it.
    Manual,
}

/// The Atomic API at one base URL.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
}

/// Payment and refund statuses a worker still has to move on.
pub(crate) const OPEN_STATUSES: [&str; 2] = ["PENDING", "PROCESSING"];

impl Api {
    /// A client for `url` (without `/api/v1`) keeping up to `connections` idle connections.
    pub(crate) fn new(url: &str, connections: usize, timeout: Duration) -> Result<Api, String> {
        let http = reqwest::Client::builder()
            .http1_only()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(connections)
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Api {
            http,
            base: format!("{url}/api/v1"),
        })
    }

    /// `GET /health`: whether the server answers at all.
    pub(crate) async fn health(&self) -> Result<(), Failure> {
        let response = self
            .http
            .get(format!("{}/health", self.base))
            .send()
            .await
            .map_err(transport)?;
        expect(response, StatusCode::OK).await.map(|_| ())
    }

    /// `POST /merchants` with the platform key: a merchant, its account and its key.
    pub(crate) async fn create_merchant(
        &self,
        platform: &Key,
        name: &str,
        currency: &str,
    ) -> Result<Merchant, Failure> {
        let body = serde_json::json!({ "name": name, "currency": currency });
        let response = self
            .http
            .post(format!("{}/merchants", self.base))
            .header(AUTHORIZATION, platform.0.clone())
            .json(&body)
            .send()
            .await
            .map_err(transport)?;
        let created: MerchantCreated = decode(expect(response, StatusCode::CREATED).await?)?;
        Ok(Merchant {
            account: created.account.id,
            key: Key::new(&created.api_key.key)?,
        })
    }

    /// `POST /payments` with an idempotency key; the id of the accepted (202) payment.
    pub(crate) async fn create_payment(
        &self,
        key: &Key,
        idempotency_key: &str,
        payment: &NewPayment<'_>,
    ) -> Result<Uuid, Failure> {
        let body = serde_json::to_vec(payment).map_err(|e| Failure::Body(e.to_string()))?;
        self.post_accepted(key, "payments".to_owned(), idempotency_key, body)
            .await
    }

    /// `POST /payments/{id}/capture` with `{}` (all of the authorization); the payment's id
    /// once accepted (202).
    pub(crate) async fn capture(
        &self,
        key: &Key,
        idempotency_key: &str,
        payment: Uuid,
    ) -> Result<Uuid, Failure> {
        let path = format!("payments/{payment}/capture");
        self.post_accepted(key, path, idempotency_key, b"{}".to_vec())
            .await
    }

    /// `POST /payments/{id}/refunds` with `{"amount"}`; the id of the accepted (202) refund.
    pub(crate) async fn refund(
        &self,
        key: &Key,
        idempotency_key: &str,
        payment: Uuid,
        amount: i64,
    ) -> Result<Uuid, Failure> {
        let body = serde_json::to_vec(&serde_json::json!({ "amount": amount }))
            .map_err(|e| Failure::Body(e.to_string()))?;
        let path = format!("payments/{payment}/refunds");
        self.post_accepted(key, path, idempotency_key, body).await
    }

    /// A JSON `POST` under an idempotency key that must answer 202; the answered object's id.
    async fn post_accepted(
        &self,
        key: &Key,
        path: String,
        idempotency_key: &str,
        body: Vec<u8>,
    ) -> Result<Uuid, Failure> {
        let response = self
            .http
            .post(format!("{}/{path}", self.base))
            .header(AUTHORIZATION, key.0.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", idempotency_key)
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let created: IdOnly = decode(expect(response, StatusCode::ACCEPTED).await?)?;
        Ok(created.id)
    }

    /// `GET /refunds/{id}`.
    pub(crate) async fn refund_by_id(&self, key: &Key, id: Uuid) -> Result<RefundView, Failure> {
        let response = self
            .http
            .get(format!("{}/refunds/{id}", self.base))
            .header(AUTHORIZATION, key.0.clone())
            .send()
            .await
            .map_err(transport)?;
        decode(expect(response, StatusCode::OK).await?)
    }

    /// One page of `GET /refunds?status=&limit=&startingAfter=`.
    pub(crate) async fn refunds(
        &self,
        key: &Key,
        status: &str,
        limit: u8,
        starting_after: Option<Uuid>,
    ) -> Result<Page<RefundView>, Failure> {
        let mut url = format!("{}/refunds?status={status}&limit={limit}", self.base);
        if let Some(after) = starting_after {
            url.push_str(&format!("&startingAfter={after}"));
        }
        self.get_page(key, url).await
    }

    /// `GET /payments/{id}`.
    pub(crate) async fn payment(&self, key: &Key, id: Uuid) -> Result<PaymentView, Failure> {
        #[derive(Deserialize)]
        struct Wrapped {
            payment: PaymentView,
        }
        let response = self
            .http
            .get(format!("{}/payments/{id}", self.base))
            .header(AUTHORIZATION, key.0.clone())
            .send()
            .await
            .map_err(transport)?;
        let wrapped: Wrapped = decode(expect(response, StatusCode::OK).await?)?;
        Ok(wrapped.payment)
    }

    /// One page of `GET /payments?status=&limit=&startingAfter=`.
    pub(crate) async fn payments(
        &self,
        key: &Key,
        status: &str,
        limit: u8,
        starting_after: Option<Uuid>,
    ) -> Result<Page<PaymentView>, Failure> {
        let mut url = format!("{}/payments?status={status}&limit={limit}", self.base);
        if let Some(after) = starting_after {
            url.push_str(&format!("&startingAfter={after}"));
        }
        self.get_page(key, url).await
    }

    /// One page of `GET /accounts/{id}/entries`.
    pub(crate) async fn entries(
        &self,
        key: &Key,
        account: Uuid,
        starting_after: Option<Uuid>,
    ) -> Result<Page<EntryWithId>, Failure> {
        let mut url = format!("{}/accounts/{account}/entries?limit=100", self.base);
        if let Some(after) = starting_after {
            url.push_str(&format!("&startingAfter={after}"));
        }
        self.get_page(key, url).await
    }

    /// `GET /accounts/{id}`.
    pub(crate) async fn account(&self, key: &Key, id: Uuid) -> Result<AccountView, Failure> {
        let response = self
            .http
            .get(format!("{}/accounts/{id}", self.base))
            .header(AUTHORIZATION, key.0.clone())
            .send()
            .await
            .map_err(transport)?;
        decode(expect(response, StatusCode::OK).await?)
    }

    async fn get_page<T: DeserializeOwned>(
        &self,
        key: &Key,
        url: String,
    ) -> Result<Page<T>, Failure> {
        let response = self
            .http
            .get(url)
            .header(AUTHORIZATION, key.0.clone())
            .send()
            .await
            .map_err(transport)?;
        decode(expect(response, StatusCode::OK).await?)
    }
}

/// A ledger entry with its own id (the cursor for the next page).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct EntryWithId {
    /// Entry id.
    #[serde(deserialize_with = "uuid_text")]
    pub(crate) id: Uuid,
    /// The rest of the entry.
    #[serde(flatten)]
    pub(crate) entry: EntryView,
}

/// Reads a UUID from its JSON string (the `uuid` crate is built without its serde feature).
fn uuid_text<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
    let text = Cow::<str>::deserialize(d)?;
    Uuid::parse_str(&text).map_err(serde::de::Error::custom)
}

fn uuid_out<S: serde::Serializer>(id: &Uuid, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

fn transport(error: reqwest::Error) -> Failure {
    Failure::Transport(if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "io"
    })
}

/// The body when the status is `want`, else a [`Failure::Status`] with the error code.
async fn expect(response: reqwest::Response, want: StatusCode) -> Result<Bytes, Failure> {
    let status = response.status();
    let body = response.bytes().await.map_err(transport)?;
    if status == want {
        return Ok(body);
    }
    let code = serde_json::from_slice::<ErrorEnvelope>(&body)
        .map(|e| e.error.code)
        .unwrap_or_default();
    Err(Failure::Status {
        status: status.as_u16(),
        code,
    })
}

fn decode<T: DeserializeOwned>(body: Bytes) -> Result<T, Failure> {
    serde_json::from_slice::<Envelope<T>>(&body)
        .map(|e| e.data)
        .map_err(|e| Failure::Body(e.to_string()))
}
