//! A webhook receiver to watch Atomic's deliveries arrive: it answers every POST, prints the
//! event's type and id, and verifies the Standard Webhooks signature with
//! `atomic-webhook-signature` when `WEBHOOK_SECRET` (the `whsec_...` shown when the endpoint was
//! created) is set. A delivery that fails verification is answered 400, so Atomic retries it.
//!
//! `RECEIVER_ADDR` (default `127.0.0.1:4000`) is where it listens.

use std::time::{SystemTime, UNIX_EPOCH};

use atomic_webhook_signature::{Headers, Secret, verify};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

#[tokio::main]
async fn main() {
    let addr = std::env::var("RECEIVER_ADDR").unwrap_or_else(|_| "127.0.0.1:4000".to_owned());
    let secret = match std::env::var("WEBHOOK_SECRET") {
        Ok(raw) => match Secret::parse(&raw) {
            Ok(secret) => Some(secret),
            Err(error) => exit(&format!("WEBHOOK_SECRET: {error}")),
        },
        Err(_) => None,
    };
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(error) => exit(&format!("cannot listen on {addr}: {error}")),
    };
    match &secret {
        Some(_) => println!("receiving on http://{addr}/ and verifying signatures"),
        None => println!(
            "receiving on http://{addr}/; signatures are not checked until WEBHOOK_SECRET is set \
             to the endpoint's secret (whsec_...) and the receiver restarted"
        ),
    }
    let app = Router::new()
        .route("/", post(receive))
        .route("/{*path}", post(receive))
        .with_state(secret);
    if let Err(error) = axum::serve(listener, app).await {
        exit(&format!("server stopped: {error}"));
    }
}

/// Prints one delivery and answers it: 204 when it verifies (or no secret is set), else 400.
async fn receive(
    State(secret): State<Option<Secret>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let event = summary(&body);
    let Some(secret) = secret else {
        println!("{event}  (signature not checked)");
        return StatusCode::NO_CONTENT;
    };
    let signed = Headers {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    match verify(&secret, &signed, &body, now) {
        Ok(()) => {
            println!("{event}  signature verified");
            StatusCode::NO_CONTENT
        }
        Err(error) => {
            println!("{event}  REFUSED: {error}");
            StatusCode::BAD_REQUEST
        }
    }
}

/// `type id (n bytes)` of an event body.
fn summary(body: &[u8]) -> String {
    let event: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let field = |name: &str| event[name].as_str().unwrap_or("?").to_owned();
    format!("{} {} ({} bytes)", field("type"), field("id"), body.len())
}

fn exit(message: &str) -> ! {
    eprintln!("receiver: {message}");
    std::process::exit(1)
}
