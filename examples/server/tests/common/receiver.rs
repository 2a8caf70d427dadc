//! Webhook receivers of the tests' own, on loopback only: one that records every delivery and
//! answers it (a status, a redirect, after an optional delay), one that accepts connections and
//! never answers, a port kept free so a receiver can be "down" (connections refused) and come up
//! later on it, and the Standard Webhooks check written here from HMAC-SHA256 and base64
//! directly, independent of `atomic-webhook-signature`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request a receiver got, as it arrived.
#[derive(Clone, Debug)]
pub struct Hit {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Bytes,
    /// When it arrived (the test's monotonic clock).
    pub at: Instant,
    /// When it arrived (wall clock, to compare with an event's `createdAt`).
    pub wall: SystemTime,
}

/// How a [`Receiver`] answers.
#[derive(Clone, Debug)]
pub enum Answer {
    /// This status, empty body.
    Status(u16),
    /// This status, after waiting this long.
    Slow(Duration, u16),
    /// 302 with this `Location`.
    Redirect(String),
}

/// A receiver on 127.0.0.1 that records and answers every POST. Answers can be held back
/// ([`Receiver::hold`]) until released.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    hits: Mutex<Vec<Hit>>,
    answer: Answer,
    /// The webhook-ids of requests arrived and not answered yet.
    answering: Mutex<Vec<String>>,
    /// Open (true) lets answers go.
    gate: tokio::sync::watch::Sender<bool>,
}

impl Receiver {
    /// On a free port of 127.0.0.1.
    pub async fn start(answer: Answer) -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").await.unwrap(), answer)
    }

    /// On `port` of 127.0.0.1 (one of [`free_ports`]).
    pub async fn start_on(port: u16, answer: Answer) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        Self::on(listener, answer)
    }

    /// On `port` of ::1, if this host has IPv6 loopback.
    pub async fn start_on_ipv6(port: u16, answer: Answer) -> Option<Self> {
        let listener = TcpListener::bind(("::1", port)).await.ok()?;
        Some(Self::on(listener, answer))
    }

    fn on(listener: TcpListener, answer: Answer) -> Self {
        let addr = listener.local_addr().unwrap();
        assert!(addr.ip().is_loopback(), "receivers listen on loopback only");
        let shared = Arc::new(Shared {
            hits: Mutex::default(),
            answer,
            answering: Mutex::default(),
            gate: tokio::sync::watch::Sender::new(true),
        });
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, shared, task }
    }

    /// `http://127.0.0.1:<port>/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }

    /// What this receiver records, readable after it is dropped: a connection it accepted
    /// before it stopped may still carry a request (keep-alive), which it records and answers.
    pub fn log(&self) -> HitLog {
        HitLog(self.shared.clone())
    }

    pub fn count(&self) -> usize {
        self.shared.hits.lock().unwrap().len()
    }

    /// The webhook-ids of the requests that arrived and are not answered yet.
    pub fn answering(&self) -> Vec<String> {
        self.shared.answering.lock().unwrap().clone()
    }

    /// Holds every answer not given yet until [`Self::release`].
    pub fn hold(&self) {
        self.shared.gate.send_replace(false);
    }

    pub fn release(&self) {
        self.shared.gate.send_replace(true);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = text("webhook-id");
    shared.hits.lock().unwrap().push(Hit {
        id: id.clone(),
        timestamp: text("webhook-timestamp"),
        signature: text("webhook-signature"),
        body,
        at: Instant::now(),
        wall: SystemTime::now(),
    });
    shared.answering.lock().unwrap().push(id.clone());
    let _ = shared.gate.subscribe().wait_for(|open| *open).await;
    let status = |code: u16| StatusCode::from_u16(code).unwrap();
    let response = match &shared.answer {
        Answer::Status(code) => status(*code).into_response(),
        Answer::Slow(wait, code) => {
            tokio::time::sleep(*wait).await;
            status(*code).into_response()
        }
        Answer::Redirect(to) => {
            (StatusCode::FOUND, [(header::LOCATION, to.clone())]).into_response()
        }
    };
    let mut answering = shared.answering.lock().unwrap();
    if let Some(at) = answering.iter().position(|a| *a == id) {
        answering.remove(at);
    }
    response
}

/// The requests a [`Receiver`] recorded, kept past its end.
#[derive(Clone)]
pub struct HitLog(Arc<Shared>);

impl HitLog {
    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.0.hits.lock().unwrap().clone()
    }
}

/// When each connection of a [`Hanging`] receiver opened, and when the sender closed it.
type Held = Arc<Mutex<Vec<(Instant, Option<Instant>)>>>;

/// A receiver on 127.0.0.1 that accepts connections, reads what comes and never answers; it
/// records when each connection opened and when the sender closed it.
pub struct Hanging {
    pub addr: SocketAddr,
    held: Held,
    task: JoinHandle<()>,
}

impl Hanging {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// On `port` of 127.0.0.1 (0: a free one).
    pub async fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held: Held = Arc::default();
        let record = held.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                let record = record.clone();
                connections.spawn(async move {
                    let at = {
                        let mut held = record.lock().unwrap();
                        held.push((Instant::now(), None));
                        held.len() - 1
                    };
                    let mut buf = [0u8; 4096];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                    record.lock().unwrap()[at].1 = Some(Instant::now());
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self { addr, held, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Connections so far: when each opened, and how long the sender held it (if it closed).
    pub fn connections(&self) -> Vec<(Instant, Option<Duration>)> {
        self.held
            .lock()
            .unwrap()
            .iter()
            .map(|(opened, closed)| (*opened, closed.map(|c| c - *opened)))
            .collect()
    }
}

impl Drop for Hanging {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `N` distinct ports of 127.0.0.1 nobody listens on, below the ephemeral range (32768 and up
/// on Linux), so no outgoing connection takes one as its local port (nor connects to itself on
/// it) while it is down. A receiver can be started on one later with [`Receiver::start_on`].
pub fn free_ports<const N: usize>() -> [u16; N] {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id();
    // Held until all are found, so they differ; dropped (closed) when returned.
    let held: Vec<std::net::TcpListener> = (0..10_000u32)
        .map(|i| 20_000 + u16::try_from(seed.wrapping_add(i * 7_919) % 12_000).unwrap())
        .filter_map(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok())
        .take(N)
        .collect();
    assert_eq!(held.len(), N, "free ports of 127.0.0.1 below 32000");
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// The Standard Webhooks check, written independently of the product: `signature` holds a
/// `v1,<base64>` that is the HMAC-SHA256, keyed by the base64 after `whsec_` in `secret`, of
/// `"<id>.<timestamp>.<body>"`, compared in constant time; and the timestamp is within five
/// minutes of now.
pub fn verifies(secret: &str, id: &str, timestamp: &str, signature: &str, body: &[u8]) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .unwrap();
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    if (now - ts).abs() > 300 {
        return false;
    }
    signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|tag| STANDARD.decode(tag).ok())
        .any(|tag| {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            mac.verify_slice(&tag).is_ok()
        })
}

/// [`verifies`] on a recorded delivery.
pub fn hit_verifies(secret: &str, hit: &Hit) -> bool {
    verifies(secret, &hit.id, &hit.timestamp, &hit.signature, &hit.body)
}
