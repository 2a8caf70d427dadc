//! The fault harness shared by the process-level fault tests: one PostgreSQL database and one
//! Redis key prefix, server processes started on them in a given role (with a failpoint armed
//! if asked), a merchant, payments, the queue's pending count, bounded waits, and the books
//! check every fault test ends with.

use std::time::{Duration, Instant};

use atomic_core::ports::LedgerAudit;
use atomic_postgres::testkit::TestDatabase;
use atomic_postgres::{PgConfig, PgStore};
use atomic_redis::QueueKeys;
use atomic_redis::testkit::{DeleteOnDrop, connection, require_redis, unique_config};
use serde_json::{Value, json};
use tokio::process::Child;

use std::sync::{Arc, Mutex};

use super::{merchant_account, server, wait_listening_keeping};

pub use super::{KEY, KEY_HASH};
pub const PAYMENTS: usize = 20;
/// The worker lease and sweep interval the processes run with.
pub const LEASE: Duration = Duration::from_secs(2);
pub const SWEEP: Duration = Duration::from_millis(500);
/// T_heal of the matrix for these settings: lease + sweep interval + 30 s (32.5 s).
pub const T_HEAL: Duration = super::books::t_heal(LEASE, SWEEP);

/// One database and one Redis key prefix, shared by the processes of a test.
pub struct Fault {
    /// The database's URL (what the processes get as `DATABASE_URL`).
    pub db_url: String,
    /// A store on the database, for the test's own reads.
    pub store: PgStore,
    /// A database of the shared server, dropped with the harness (none on an own cluster).
    _db: Option<TestDatabase>,
    pub redis_url: String,
    pub prefix: String,
    _keys: DeleteOnDrop,
    pub http: reqwest::Client,
}

impl Fault {
    /// A fresh database, and a key prefix of its own on the Redis of `REDIS_URL`.
    pub async fn new() -> Self {
        let redis_url =
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        Self::on_redis(redis_url).await
    }

    /// A fresh database, and a key prefix of its own on the Redis at `redis_url` (e.g. a
    /// `RedisServer` the test may flush or stop).
    pub async fn on_redis(redis_url: String) -> Self {
        let db = TestDatabase::create().await;
        let (db_url, store) = (db.url().to_owned(), db.store());
        Self::on(db_url, store, Some(db), redis_url).await
    }

    /// The database at `db_url` (e.g. a `PgCluster` the test may crash; the first server
    /// process migrates it), and a key prefix of its own on the Redis at `redis_url`.
    pub async fn on_database(db_url: String, redis_url: String) -> Self {
        let store = PgStore::connect(&PgConfig::new(&db_url)).await.unwrap();
        Self::on(db_url, store, None, redis_url).await
    }

    async fn on(
        db_url: String,
        store: PgStore,
        db: Option<TestDatabase>,
        redis_url: String,
    ) -> Self {
        require_redis(&redis_url).await;
        let config = unique_config(&redis_url);
        Fault {
            db_url,
            store,
            _db: db,
            prefix: config.prefix.clone(),
            _keys: DeleteOnDrop::new(&config),
            redis_url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// Starts a server process in `role`, with `failpoint` armed if given; returns it and the
    /// API base URL.
    pub async fn start(&self, role: &str, failpoint: Option<&str>) -> (Child, String) {
        self.start_with(role, failpoint, &[]).await
    }

    /// As [`Self::start`], with more environment variables (they win over the defaults).
    pub async fn start_with(
        &self,
        role: &str,
        failpoint: Option<&str>,
        vars: &[(&str, &str)],
    ) -> (Child, String) {
        self.spawn(role, failpoint, vars, None).await
    }

    async fn spawn(
        &self,
        role: &str,
        failpoint: Option<&str>,
        vars: &[(&str, &str)],
        logs: Option<Arc<Mutex<Vec<String>>>>,
    ) -> (Child, String) {
        let mut cmd = server();
        cmd.env("ROLE", role)
            .env("DATABASE_URL", &self.db_url)
            .env("DATABASE_POOL_SIZE", "6")
            .env("REDIS_URL", &self.redis_url)
            .env("REDIS_KEY_PREFIX", &self.prefix)
            .env("MERCHANT_API_KEY_HASH", KEY_HASH)
            .env("RATE_LIMIT_GLOBAL", "off")
            .env("RATE_LIMIT_PAYMENTS", "off")
            .env("WORKER_LEASE", "2s")
            .env("SWEEP_INTERVAL", "500ms")
            .env("SWEEP_STALE_AFTER", "2s");
        if let Some(failpoint) = failpoint {
            cmd.env("ATOMIC_FAILPOINTS", failpoint);
        }
        cmd.envs(vars.iter().copied());
        let mut child = cmd.spawn().unwrap();
        let (address, _) = wait_listening_keeping(&mut child, logs).await;
        (child, format!("http://{address}/api/v1"))
    }

    /// As [`Self::start_with`], keeping the process's log lines in `logs`.
    pub async fn start_logged(
        &self,
        role: &str,
        failpoint: Option<&str>,
        vars: &[(&str, &str)],
        logs: Arc<Mutex<Vec<String>>>,
    ) -> (Child, String) {
        self.spawn(role, failpoint, vars, Some(logs)).await
    }

    pub async fn merchant(&self, api: &str) -> String {
        merchant_account(&self.http, api, "Fault Shop").await
    }

    /// POSTs payment `i` (every fifth is declined); `Ok(id)` on 202, `Err` with no answer.
    pub async fn pay(&self, api: &str, account: &str, i: usize) -> Result<String, reqwest::Error> {
        pay_with(&self.http, api, account, i).await
    }

    /// Stores `PAYMENTS` payments through an API process that settles nothing, and stops it:
    /// their jobs wait in the Redis stream for a worker.
    pub async fn backlog(&self) -> String {
        self.backlog_of(PAYMENTS).await
    }

    /// As [`Self::backlog`], with `n` payments (sent by 8 concurrent clients).
    pub async fn backlog_of(&self, n: usize) -> String {
        let (mut api_process, api) = self.start("api", None).await;
        let account = self.merchant(&api).await;
        let mut clients = tokio::task::JoinSet::new();
        for c in 0..8 {
            let (http, api, account) = (self.http.clone(), api.clone(), account.clone());
            clients.spawn(async move {
                for i in (c..n).step_by(8) {
                    pay_with(&http, &api, &account, i).await.unwrap();
                }
            });
        }
        while let Some(done) = clients.join_next().await {
            done.unwrap();
        }
        api_process.kill().await.unwrap();
        account
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }

    pub async fn open(&self) -> i64 {
        self.count("SELECT count(*) FROM payments WHERE status IN ('PENDING', 'PROCESSING')")
            .await
    }

    /// Jobs delivered to a worker and not acknowledged (the stream's pending entries).
    pub async fn unacked(&self) -> i64 {
        let mut conn = connection(&self.redis_url).await.unwrap();
        let summary: redis::Value = redis::cmd("XPENDING")
            .arg(QueueKeys::new(&self.prefix).stream)
            .arg("workers")
            .query_async(&mut conn)
            .await
            .unwrap();
        match summary {
            redis::Value::Array(items) => match items.first() {
                Some(redis::Value::Int(n)) => *n,
                other => panic!("XPENDING count: {other:?}"),
            },
            other => panic!("XPENDING: {other:?}"),
        }
    }

    /// The stream's pending entries, each with its delivery count (`XPENDING` with details).
    pub async fn deliveries(&self) -> Vec<(String, i64)> {
        let mut conn = connection(&self.redis_url).await.unwrap();
        let entries: Vec<(String, String, i64, i64)> = redis::cmd("XPENDING")
            .arg(QueueKeys::new(&self.prefix).stream)
            .arg("workers")
            .arg("-")
            .arg("+")
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        entries
            .into_iter()
            .map(|(id, _consumer, _idle, delivered)| (id, delivered))
            .collect()
    }

    /// Waits (bounded) until `done` holds; returns how long it took.
    pub async fn until<F, Fut>(&self, what: &str, limit: Duration, mut done: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        while !done().await {
            assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        started.elapsed()
    }

    /// The books after recovery, all checked by the test rather than by what constraints
    /// already forbid: every posting matches its payment (accounts, sides, amount), each
    /// SUCCESS is posted and nothing else, balances are the sums of SUCCESS amounts; the
    /// audit is clean, with L12 (`stuck_payments`) at the row's T_heal; every payment is
    /// terminal and the test merchant's.
    pub async fn assert_books(&self, account: &str, payments: i64) {
        assert_eq!(self.count("SELECT count(*) FROM payments").await, payments);
        super::books::assert_postings_match_payments(self.store.pool()).await;
        let audit = self.store.audit(T_HEAL).await.unwrap();
        assert!(
            audit.is_clean(),
            "books audit (L12 after {T_HEAL:?}):\n{audit}"
        );
        assert_eq!(self.open().await, 0, "every payment terminal");
        let theirs: i64 =
            sqlx::query_scalar("SELECT count(*) FROM payments WHERE merchant_account = $1::uuid")
                .bind(account)
                .fetch_one(self.store.pool())
                .await
                .unwrap();
        assert_eq!(theirs, payments, "every payment is to the test's merchant");
    }
}

/// POSTs payment `i` (every fifth is declined) with its own Idempotency-Key; `Ok(id)` on 202,
/// `Err` with no answer.
pub async fn pay_with(
    http: &reqwest::Client,
    api: &str,
    account: &str,
    i: usize,
) -> Result<String, reqwest::Error> {
    let source = if i % 5 == 4 {
        "tok_chargeDeclined"
    } else {
        "tok_visa"
    };
    let reply = http
        .post(format!("{api}/payments"))
        .bearer_auth(KEY)
        .header("Idempotency-Key", format!("fault-{i}"))
        .json(
            &json!({"merchantId": account, "amount": 100 + i, "currency": "USD", "source": source}),
        )
        .send()
        .await?;
    assert_eq!(reply.status(), 202, "payment {i}");
    let body: Value = reply.json().await?;
    Ok(body["data"]["id"].as_str().unwrap().to_owned())
}
