//! Helpers shared by the tests that run the server binary as a process.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

pub mod books;
pub mod fault;
pub mod pg_cluster;
pub mod receiver;

use std::future::Future;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The platform key the process tests configure, and its SHA-256 (`MERCHANT_API_KEY_HASH`).
pub const KEY: &str = "my-platform-key";
pub const KEY_HASH: &str = "fbc8fbbecee728e8b80603d82be02344366d08c232e0d306c7b4808b584973f6";

/// A request sent and its answer read as JSON, whatever its status.
pub trait Answered {
    fn answer(self) -> impl Future<Output = Value> + Send;
}

impl Answered for reqwest::RequestBuilder {
    async fn answer(self) -> Value {
        let reply = self.send().await.unwrap();
        reply.json().await.unwrap()
    }
}

/// Every line a server process writes on stdout and stderr, read to the end of both streams.
pub struct Captured {
    lines: Arc<tokio::sync::Mutex<Vec<String>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Captured {
    /// Starts reading `child`'s stdout and stderr (both piped, as [`server`] sets them).
    pub fn start(child: &mut Child) -> Self {
        let lines: Arc<tokio::sync::Mutex<Vec<String>>> = Arc::default();
        let read = |stream: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
            let into = lines.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream).lines();
                while let Some(line) = stream.next_line().await.unwrap() {
                    into.lock().await.push(line);
                }
            })
        };
        let readers = vec![
            read(Box::new(child.stderr.take().unwrap())),
            read(Box::new(child.stdout.take().unwrap())),
        ];
        Self { lines, readers }
    }

    /// The address from the server's "listening" record, once it is written (30 s at most).
    pub async fn address(&self) -> String {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let found = self.lines.lock().await.iter().find_map(|line| {
                    let log: Value = serde_json::from_str(line).ok()?;
                    (log["fields"]["message"] == "atomic-server listening")
                        .then(|| log["fields"]["address"].as_str().unwrap().to_owned())
                });
                if let Some(address) = found {
                    return address;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the server starts")
    }

    /// Waits for `child` to exit and for both streams to end; every line it wrote.
    pub async fn finish(self, child: &mut Child) -> Vec<String> {
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap()
            .unwrap();
        for reader in self.readers {
            tokio::time::timeout(Duration::from_secs(10), reader)
                .await
                .expect("the streams end once the server has exited")
                .unwrap();
        }
        self.lines.lock().await.clone()
    }
}

/// Onboards a merchant in USD through the API at `api` with `key`; returns the whole answer
/// (`data.merchant`, `data.account`, `data.apiKey`).
pub async fn onboard(http: &reqwest::Client, api: &str, key: &str, name: &str) -> Value {
    http.post(format!("{api}/merchants"))
        .bearer_auth(key)
        .json(&serde_json::json!({"name": name, "currency": "USD"}))
        .answer()
        .await
}

/// Onboards a merchant in USD through the API at `api`; returns its account id.
pub async fn merchant_account(http: &reqwest::Client, api: &str, name: &str) -> String {
    onboard(http, api, KEY, name).await["data"]["account"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The server binary with a clean environment, port 0, no metrics listener (servers run side
/// by side; a test that scrapes sets `METRICS_ADDR`), JSON logs, piped output.
pub fn server() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atomic-server"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", "0")
        .env("METRICS_ADDR", "off")
        .env("LOG_FORMAT", "json")
        // No .env file is read from here: the tests run in the package directory, which has none.
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Reads the server's JSON log lines until the "listening" one; returns (address, storage).
pub async fn wait_listening(child: &mut Child) -> (String, String) {
    wait_listening_keeping(child, None).await
}

/// As [`wait_listening`], keeping every stderr line the server writes (then and later) in
/// `sink` when one is given.
pub async fn wait_listening_keeping(
    child: &mut Child,
    sink: Option<Arc<Mutex<Vec<String>>>>,
) -> (String, String) {
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let keep = sink.clone();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(sink) = &keep {
                sink.lock().unwrap().push(line.clone());
            }
            let Ok(log) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if log["fields"]["message"] == "atomic-server listening" {
                return (
                    log["fields"]["address"].as_str().unwrap().to_owned(),
                    log["fields"]["storage"].as_str().unwrap().to_owned(),
                );
            }
        }
        panic!("the server exited without listening");
    })
    .await
    .expect("the server starts within 30 s");
    // Keep draining stderr so the server never blocks on a full pipe.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(sink) = &sink {
                sink.lock().unwrap().push(line);
            }
        }
    });
    found
}

pub async fn printed_key(child: &mut Child) -> String {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let key = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(key) = line.trim().strip_prefix("export ATOMIC_KEY=") {
                return key.to_owned();
            }
        }
        panic!("no platform key printed");
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    key
}
