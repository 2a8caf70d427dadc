//! The receiver example, run as a process on loopback: a delivery signed with the endpoint's
//! secret is accepted (204); the same delivery with its body, id or timestamp changed, or
//! signed with another secret, is refused (400), so Atomic would retry it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atomic_webhook_signature::{Secret, sign};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The receiver process; killed when dropped.
struct Receiver(Child, String);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start() -> Receiver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_receiver"))
        .env("RECEIVER_ADDR", &addr)
        .env("WEBHOOK_SECRET", SECRET)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let receiver = Receiver(child, format!("http://{addr}/hooks/atomic"));
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return receiver;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the receiver did not listen on {addr}");
}

async fn deliver(url: &str, id: &str, timestamp: i64, body: &str, signature: &str) -> u16 {
    reqwest::Client::new()
        .post(url)
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn signed_deliveries_are_accepted_and_tampered_ones_refused() {
    let receiver = start().await;
    let url = &receiver.1;
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let secret = Secret::parse(SECRET).unwrap();
    let body = r#"{"id":"evt_1","type":"payment.succeeded","data":{"object":{}}}"#;
    let good = sign(&secret, "evt_1", now, body.as_bytes());

    assert_eq!(deliver(url, "evt_1", now, body, &good).await, 204);
    let tampered = body.replace("succeeded", "failed");
    assert_eq!(deliver(url, "evt_1", now, &tampered, &good).await, 400);
    assert_eq!(deliver(url, "evt_2", now, body, &good).await, 400);
    assert_eq!(deliver(url, "evt_1", now + 1, body, &good).await, 400);
    let stale = sign(&secret, "evt_1", now - 3_600, body.as_bytes());
    assert_eq!(deliver(url, "evt_1", now - 3_600, body, &stale).await, 400);
    let other = Secret::from_key(b"not the endpoint's".to_vec()).unwrap();
    let forged = sign(&other, "evt_1", now, body.as_bytes());
    assert_eq!(deliver(url, "evt_1", now, body, &forged).await, 400);
}
