//! The outbound ports against real receivers on loopback (127.0.0.1 and ::1 only, port 0):
//! what a delivery sends, which addresses it refuses, that it follows no redirect and that
//! time and bytes are bounded. Nothing here connects anywhere but loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on the unexpected

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atomic_core::ports::{HostResolver, SendOutcome, WebhookRequest, WebhookSender};
use atomic_core::webhook::{AddressPolicy, WebhookUrl};
use atomic_webhook_sender::{Outbound, OutboundConfig, USER_AGENT};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const SIGNATURE: &str = "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=";
const BODY: &str = r#"{"id":"evt_1","type":"payment.succeeded"}"#;

const OPEN: AddressPolicy = AddressPolicy {
    allow_private: true,
};
const STRICT: AddressPolicy = AddressPolicy {
    allow_private: false,
};

/// Longest any test waits for an attempt that should have ended on its own.
const GUARD: Duration = Duration::from_secs(20);

/// One request as a receiver saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// An axum receiver on 127.0.0.1 that records every request and answers `answer`.
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// How a receiver answers every request.
type Answer = Arc<dyn Fn() -> Response + Send + Sync>;

impl Receiver {
    async fn start(answer: impl Fn() -> Response + Send + Sync + 'static) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state: ReceiverState = (seen.clone(), Arc::new(answer));
        let app = Router::new().fallback(record).with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, seen }
    }

    fn url(&self, host: &str, path: &str) -> WebhookUrl {
        WebhookUrl::parse(&format!("http://{host}:{}{path}", self.addr.port())).unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

type ReceiverState = (Arc<Mutex<Vec<Seen>>>, Answer);

async fn record(
    State((seen, answer)): State<ReceiverState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    seen.lock().unwrap().push(Seen {
        method,
        uri,
        headers,
        body,
    });
    answer()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn sender(timeout: Duration) -> Outbound {
    Outbound::new(OutboundConfig::new(timeout)).unwrap()
}

fn request(url: WebhookUrl) -> WebhookRequest {
    WebhookRequest {
        url,
        id: "evt_1".to_owned(),
        timestamp: 1_700_000_000,
        signature: SIGNATURE.to_owned(),
        body: Bytes::from_static(BODY.as_bytes()),
    }
}

async fn send(sender: &Outbound, url: WebhookUrl, policy: AddressPolicy) -> SendOutcome {
    tokio::time::timeout(GUARD, sender.send(&request(url), policy))
        .await
        .expect("the attempt ends within its own timeout")
}

fn failure(outcome: SendOutcome) -> String {
    match outcome {
        SendOutcome::Failed(text) => {
            assert!(!text.contains(SIGNATURE), "the signature leaked: {text}");
            text
        }
        answered => panic!("expected a failure, got {answered:?}"),
    }
}

#[tokio::test]
async fn a_delivery_posts_the_signed_event_with_its_headers() {
    let receiver = Receiver::start(no_content).await;
    let url = receiver.url("127.0.0.1", "/hooks/in?tenant=7");

    let outcome = send(&sender(Duration::from_secs(5)), url, OPEN).await;

    assert_eq!(outcome, SendOutcome::Answered(204));
    assert!(outcome.delivered());
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    let got = &seen[0];
    assert_eq!(got.method, Method::POST);
    assert_eq!(got.uri.to_string(), "/hooks/in?tenant=7");
    assert_eq!(got.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(got.headers["webhook-id"], "evt_1");
    assert_eq!(got.headers["webhook-timestamp"], "1700000000");
    assert_eq!(got.headers["webhook-signature"], SIGNATURE);
    assert_eq!(got.headers[header::USER_AGENT], USER_AGENT);
    assert!(USER_AGENT.starts_with("atomic-webhooks/"));
    assert_eq!(got.body, BODY.as_bytes());
}

#[tokio::test]
async fn a_name_is_resolved_by_the_checked_resolver_and_delivered_to() {
    let receiver = Receiver::start(no_content).await;
    let url = receiver.url("localhost", "/");

    let outcome = send(&sender(Duration::from_secs(5)), url, OPEN).await;

    assert_eq!(outcome, SendOutcome::Answered(204));
    assert_eq!(receiver.seen().len(), 1);
}

#[tokio::test]
async fn internal_addresses_are_refused_without_connecting() {
    let receiver = Receiver::start(no_content).await;
    let sender = sender(Duration::from_secs(5));

    for host in ["127.0.0.1", "localhost", "[::1]", "2130706433"] {
        let outcome = send(&sender, receiver.url(host, "/"), STRICT).await;
        assert_eq!(failure(outcome), "refused address: loopback", "{host}");
    }
    assert_eq!(receiver.seen().len(), 0, "nothing may reach the receiver");
}

#[tokio::test]
async fn a_redirect_is_an_answer_and_never_followed() {
    let second = Receiver::start(no_content).await;
    let location = format!("http://127.0.0.1:{}/", second.addr.port());
    let first = Receiver::start(move || {
        (StatusCode::FOUND, [(header::LOCATION, location.clone())]).into_response()
    })
    .await;

    let outcome = send(
        &sender(Duration::from_secs(5)),
        first.url("127.0.0.1", "/"),
        OPEN,
    )
    .await;

    assert_eq!(outcome, SendOutcome::Answered(302));
    assert!(!outcome.delivered());
    assert_eq!(first.seen().len(), 1);
    assert_eq!(second.seen().len(), 0, "the redirect was followed");
}

/// A receiver that accepts connections and never answers (it keeps them open).
async fn silent_receiver() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_receiver_that_never_answers_times_out() {
    let (addr, task) = silent_receiver().await;
    let url = WebhookUrl::parse(&format!("http://127.0.0.1:{}/", addr.port())).unwrap();

    let outcome = send(&sender(Duration::from_millis(300)), url, OPEN).await;

    assert_eq!(failure(outcome), "timeout");
    task.abort();
}

/// Declared length of the endless answer: far more than any socket buffer.
const ENDLESS: usize = 256 * 1024 * 1024;

/// A receiver that answers 200 and streams a body of [`ENDLESS`] bytes; reports how many
/// bytes it wrote before the client went away, or `None` if it wrote them all.
async fn endless_receiver() -> (SocketAddr, oneshot::Receiver<Option<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report, written) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = [0_u8; 4096];
        let _ = stream.read(&mut head).await;
        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {ENDLESS}\r\n\r\n");
        stream.write_all(answer.as_bytes()).await.unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < ENDLESS {
            if stream.write_all(&chunk).await.is_err() {
                let _ = report.send(Some(sent));
                return;
            }
            sent += chunk.len();
        }
        let _ = report.send(None);
    });
    (addr, written)
}

#[tokio::test]
async fn a_long_answer_is_cut_off_and_its_status_counts() {
    let (addr, written) = endless_receiver().await;
    let url = WebhookUrl::parse(&format!("http://127.0.0.1:{}/", addr.port())).unwrap();

    let outcome = send(&sender(Duration::from_secs(15)), url, OPEN).await;

    assert_eq!(outcome, SendOutcome::Answered(200));
    let written = tokio::time::timeout(GUARD, written).await.unwrap().unwrap();
    let cut_at = written.expect("the client read the whole body instead of stopping");
    assert!(cut_at < ENDLESS, "{cut_at}");
}

#[tokio::test]
async fn a_closed_port_is_a_connection_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = WebhookUrl::parse(&format!("http://127.0.0.1:{port}/hooks?token=s3cr3t")).unwrap();

    let text = failure(send(&sender(Duration::from_secs(5)), url, OPEN).await);

    assert!(text.starts_with("connection error: "), "{text}");
    assert!(!text.contains("s3cr3t"), "the URL leaked: {text}");
}

#[tokio::test]
async fn an_https_url_speaks_tls() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (report, first_bytes) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut hello = [0_u8; 2];
        stream.read_exact(&mut hello).await.unwrap();
        let _ = report.send(hello);
    });
    let url = WebhookUrl::parse(&format!("https://127.0.0.1:{port}/")).unwrap();

    let text = failure(send(&sender(Duration::from_secs(5)), url, OPEN).await);

    // 0x16 0x03: a TLS handshake record, so the TLS stack and its crypto provider are wired.
    assert_eq!(first_bytes.await.unwrap(), [0x16, 0x03]);
    assert!(text.starts_with("connection error: "), "{text}");
}

#[tokio::test]
async fn resolving_gives_every_address_of_a_host() {
    let outbound = sender(Duration::from_secs(5));

    let localhost = WebhookUrl::parse("http://localhost/").unwrap();
    let addresses = outbound.resolve(&localhost).await.unwrap();
    assert!(!addresses.is_empty());
    assert!(addresses.iter().all(|ip| ip.is_loopback()), "{addresses:?}");

    let literal = WebhookUrl::parse("http://[::1]:8080/").unwrap();
    assert_eq!(
        outbound.resolve(&literal).await.unwrap(),
        vec!["::1".parse::<std::net::IpAddr>().unwrap()]
    );

    let nowhere = WebhookUrl::parse("https://no-such-host.invalid/").unwrap();
    let error = outbound.resolve(&nowhere).await.unwrap_err();
    assert!(error.0.contains("no-such-host.invalid"), "{error}");
}
