//! Test helpers for this crate's tests and for crates that test against Redis (feature
//! `testkit`, not semver-stable): a throwaway `redis-server` child process on a free port that
//! can be stopped and restarted, configs with a unique key prefix, a reachability check that
//! fails with one line saying how to start Redis, and a guard that deletes a prefix's keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use crate::config::{RedisConfig, redact_url};

/// How to start the Redis the tests expect.
pub const START_REDIS: &str =
    "redis-server --daemonize yes --port 6379 --save \"\" --appendonly no";

/// How long a child server may take to answer after it is spawned.
const STARTUP: Duration = Duration::from_secs(10);

/// A config for `url` with a unique prefix (`test-<uuid>`) and short timeouts.
pub fn unique_config(url: &str) -> RedisConfig {
    RedisConfig::new(url)
        .with_prefix(format!("test-{}", uuid::Uuid::now_v7().simple()))
        .with_timeouts(
            Duration::from_millis(500),
            Duration::from_secs(2),
            Duration::from_secs(1),
        )
}

/// A plain connection to `url`, for inspecting what the adapters wrote.
pub async fn connection(url: &str) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(url)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Whether Redis at `url` answers `PING` within a second.
pub async fn answers(url: &str) -> bool {
    let ping = async {
        let mut conn = connection(url).await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ping).await,
        Ok(Ok(_))
    )
}

/// Panics with one line saying how to start Redis unless Redis at `url` answers.
pub async fn require_redis(url: &str) {
    if !answers(url).await {
        panic!(
            "Redis not reachable at {}; start it: {START_REDIS}",
            redact_url(url)
        );
    }
}

/// Deletes every key under a prefix when dropped (at the end of a test).
#[derive(Debug)]
pub struct DeleteOnDrop {
    url: String,
    prefix: String,
}

impl DeleteOnDrop {
    /// A guard for the keys of `config`.
    pub fn new(config: &RedisConfig) -> Self {
        Self {
            url: config.url.clone(),
            prefix: config.prefix.clone(),
        }
    }
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
            return;
        };
        // Queue keys start with `{<prefix>:`, counters with `<prefix>:`.
        for pattern in [format!("{{{}:*", self.prefix), format!("{}:*", self.prefix)] {
            let mut cursor = 0u64;
            loop {
                let Ok((next, keys)) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query::<(u64, Vec<String>)>(&mut conn)
                else {
                    return;
                };
                if !keys.is_empty() {
                    let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query(&mut conn);
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
    }
}

/// A `redis-server` child process on a free port, without persistence; killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    pub async fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            child: None,
        };
        server.spawn().await;
        server
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A config for this server with a unique prefix and short timeouts.
    pub fn config(&self) -> RedisConfig {
        unique_config(&self.url())
    }

    /// A plain connection to this server.
    pub async fn connection(&self) -> MultiplexedConnection {
        connection(&self.url())
            .await
            .expect("connect to the child redis-server")
    }

    /// Kills the server (as a crash would) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts an empty one on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed to run these tests");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + STARTUP;
        let url = self.url();
        while !answers(&url).await {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("redis-server on port {} exited: {status}", self.port);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server on port {} did not answer within {STARTUP:?}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}
