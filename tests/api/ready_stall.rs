//! Readiness when Redis hangs (issue 13 item 11b): `GET /health/ready` answers within a second
//! whatever a dependency does, with the dependencies that have not answered by then `down`,
//! and its 503 carries `data` only. A `redis-server` child of the test is paused
//! (`CLIENT PAUSE ... ALL`), so every command the server sends it waits.

use std::time::{Duration, Instant};

use atomic_redis::testkit::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::helpers::{Backend, spawn_on};

/// Pauses every client of the Redis server on `port` for `millis`, speaking RESP directly.
async fn pause_clients(port: u16, millis: u64) {
    let millis = millis.to_string();
    let command = format!(
        "*4\r\n$6\r\nCLIENT\r\n$5\r\nPAUSE\r\n${}\r\n{millis}\r\n$3\r\nALL\r\n",
        millis.len()
    );
    let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    conn.write_all(command.as_bytes()).await.unwrap();
    let mut reply = [0u8; 5];
    conn.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"+OK\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_answers_within_a_second_when_redis_hangs() {
    let redis = RedisServer::start().await;
    let app = spawn_on(Backend::Memory, &[("REDIS_URL", &redis.url())]).await;
    let ready = app.get_anon("/health/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.text);

    pause_clients(redis.port(), 10_000).await;
    let asked = Instant::now();
    let ready = app.get_anon("/health/ready").await;
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(1), "answered in {took:?}");
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.json["success"], false, "{}", ready.text);
    assert_eq!(ready.data()["status"], "unavailable", "{}", ready.text);
    let checks = &ready.data()["checks"];
    assert_eq!(
        (&checks["store"], &checks["queue"], &checks["limiter"]),
        (&"up".into(), &"down".into(), &"down".into()),
        "{}",
        ready.text
    );
    assert!(
        ready.json.get("error").is_none(),
        "data only, no error beside it: {}",
        ready.text
    );
    assert!(ready.header("x-request-id").is_some());
}
