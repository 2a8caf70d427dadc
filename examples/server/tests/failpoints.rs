//! Crashes between two steps of the money path (TEST-MATRIX rows 3 and 4, and the window of row
//! 1 between storing a payment and enqueueing it). A server process is started with a failpoint
//! armed (`ATOMIC_FAILPOINTS`, compiled into test builds only) and aborts itself at that exact
//! step, as `kill -9` would; a second process without it then recovers. Each test ends with
//! every payment terminal, one posting per SUCCESS, none on anything else, and a clean books
//! audit. The production shape: PostgreSQL and Redis, API and worker as separate processes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use atomic_core::ports::LedgerAudit;
use atomic_postgres::testkit::TestDatabase;
use atomic_redis::QueueKeys;
use atomic_redis::testkit::{DeleteOnDrop, connection, require_redis, unique_config};
use common::{server, wait_listening};
use serde_json::{Value, json};
use tokio::process::Child;

const KEY: &str = "my-platform-key";
const KEY_HASH: &str = "fbc8fbbecee728e8b80603d82be02344366d08c232e0d306c7b4808b584973f6";
const PAYMENTS: usize = 20;
/// The worker lease and sweep interval the processes run with.
const LEASE: Duration = Duration::from_secs(2);
const SWEEP: Duration = Duration::from_millis(500);
const SIGABRT: i32 = 6;

/// One database and one Redis key prefix, shared by the processes of a test.
struct Fault {
    db: TestDatabase,
    redis_url: String,
    prefix: String,
    _keys: DeleteOnDrop,
    http: reqwest::Client,
}

impl Fault {
    async fn new() -> Self {
        let redis_url =
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        require_redis(&redis_url).await;
        let config = unique_config(&redis_url);
        Fault {
            db: TestDatabase::create().await,
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
    async fn start(&self, role: &str, failpoint: Option<&str>) -> (Child, String) {
        let mut cmd = server();
        cmd.env("ROLE", role)
            .env("DATABASE_URL", self.db.url())
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
        let mut child = cmd.spawn().unwrap();
        let (address, _) = wait_listening(&mut child).await;
        (child, format!("http://{address}/api/v1"))
    }

    async fn merchant(&self, api: &str) -> String {
        let body: Value = self
            .http
            .post(format!("{api}/merchants"))
            .bearer_auth(KEY)
            .json(&json!({"name": "Fault Shop", "currency": "USD"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["data"]["account"]["id"].as_str().unwrap().to_owned()
    }

    /// POSTs payment `i` (every fifth is declined); `Ok(id)` on 202, `Err` with no answer.
    async fn pay(&self, api: &str, account: &str, i: usize) -> Result<String, reqwest::Error> {
        let source = if i % 5 == 4 {
            "tok_chargeDeclined"
        } else {
            "tok_visa"
        };
        let reply = self
            .http
            .post(format!("{api}/payments"))
            .bearer_auth(KEY)
            .header("Idempotency-Key", format!("fault-{i}"))
            .json(&json!({"merchantId": account, "amount": 100 + i, "currency": "USD", "source": source}))
            .send()
            .await?;
        assert_eq!(reply.status(), 202, "payment {i}");
        let body: Value = reply.json().await?;
        Ok(body["data"]["id"].as_str().unwrap().to_owned())
    }

    /// Stores `PAYMENTS` payments through an API process that settles nothing, and stops it:
    /// their jobs wait in the Redis stream for a worker.
    async fn backlog(&self) -> String {
        let (mut api_process, api) = self.start("api", None).await;
        let account = self.merchant(&api).await;
        for i in 0..PAYMENTS {
            self.pay(&api, &account, i).await.unwrap();
        }
        api_process.kill().await.unwrap();
        account
    }

    async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(self.db.store().pool())
            .await
            .unwrap()
    }

    async fn open(&self) -> i64 {
        self.count("SELECT count(*) FROM payments WHERE status IN ('PENDING', 'PROCESSING')")
            .await
    }

    /// Jobs delivered to a worker and not acknowledged (the stream's pending entries).
    async fn unacked(&self) -> i64 {
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

    /// Waits (bounded) until `done` holds; returns how long it took.
    async fn until<F, Fut>(&self, what: &str, limit: Duration, mut done: F) -> Duration
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

    /// The books after recovery: every payment terminal, each SUCCESS posted exactly once and
    /// nothing else posted, the merchant's balance the sum of SUCCESS amounts, a clean audit.
    async fn assert_books(&self, account: &str, payments: i64) {
        assert_eq!(self.count("SELECT count(*) FROM payments").await, payments);
        assert_eq!(self.open().await, 0, "every payment terminal");
        let wrongly_posted = self
            .count(
                "SELECT count(*) FROM payments p \
                 LEFT JOIN (SELECT payment_id, count(*) AS n FROM ledger_transactions \
                            GROUP BY payment_id) t ON t.payment_id = p.id \
                 WHERE coalesce(t.n, 0) <> CASE WHEN p.status = 'SUCCESS' THEN 1 ELSE 0 END",
            )
            .await;
        assert_eq!(wrongly_posted, 0, "one posting per SUCCESS, none otherwise");
        let entries_per_transaction = self
            .count(
                "SELECT count(*) FROM ledger_transactions t \
                 WHERE (SELECT count(*) FROM ledger_entries e WHERE e.transaction_id = t.id) <> 2",
            )
            .await;
        assert_eq!(entries_per_transaction, 0, "two entries per posting");
        let balance: i64 = sqlx::query_scalar("SELECT balance FROM accounts WHERE id = $1::uuid")
            .bind(account)
            .fetch_one(self.db.store().pool())
            .await
            .unwrap();
        let success = self
            .count("SELECT coalesce(sum(amount), 0)::bigint FROM payments WHERE status = 'SUCCESS'")
            .await;
        assert_eq!(balance, success, "balance = sum of SUCCESS amounts");
        let audit = self
            .db
            .store()
            .audit(Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(audit.is_clean(), "books audit:\n{audit}");
    }
}

/// Waits for a process to abort itself at its failpoint.
async fn aborted(child: &mut Child) {
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the failpoint fires within 30 s")
        .unwrap();
    assert_eq!(status.signal(), Some(SIGABRT), "{status:?}");
}

/// Row 3: the worker dies after its settlement committed and before it acknowledged the jobs.
/// The jobs come back to the next worker, which finds the payments finished and only acks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dead_after_the_settlement_commit_before_the_ack_posts_nothing_twice() {
    let fault = Fault::new().await;
    let account = fault.backlog().await;

    let (mut worker, _) = fault
        .start("worker", Some("worker.after_settle_commit"))
        .await;
    aborted(&mut worker).await;
    let settled_at_crash = fault
        .count("SELECT count(*) FROM payments WHERE status IN ('SUCCESS', 'FAILED')")
        .await;
    let unacked_at_crash = fault.unacked().await;
    assert!(settled_at_crash >= 1, "the settlement committed");
    assert!(
        unacked_at_crash >= settled_at_crash,
        "the settled jobs were never acked ({unacked_at_crash} unacked, {settled_at_crash} settled)"
    );

    let (_worker, _) = fault.start("worker", None).await;
    fault
        .until(
            "every payment terminal",
            Duration::from_secs(30),
            || async { fault.open().await == 0 },
        )
        .await;
    // The redelivered jobs were acked: nothing is left pending.
    fault
        .until(
            "the pending jobs acked",
            Duration::from_secs(30),
            || async { fault.unacked().await == 0 },
        )
        .await;
    fault.assert_books(&account, PAYMENTS as i64).await;
    println!(
        "row 3: payments={PAYMENTS} settled_at_crash={settled_at_crash} \
         unacked_at_crash={unacked_at_crash} redelivered_and_acked={unacked_at_crash} duplicates=0"
    );
}

/// Row 4: the worker dies after claiming (PROCESSING committed under its lease) and before
/// posting anything. Once the lease runs out the payments are claimed again and settled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dead_after_the_claim_is_settled_once_after_its_lease() {
    let fault = Fault::new().await;
    let account = fault.backlog().await;

    let (mut worker, _) = fault.start("worker", Some("worker.after_claim")).await;
    aborted(&mut worker).await;
    let processing = fault
        .count("SELECT count(*) FROM payments WHERE status = 'PROCESSING'")
        .await;
    let posted = fault
        .count("SELECT count(*) FROM ledger_transactions")
        .await;
    assert!(processing >= 1, "the claim committed");
    assert_eq!(posted, 0, "nothing was posted before the crash");

    let (_worker, _) = fault.start("worker", None).await;
    // Pass criterion: terminal within lease + sweep interval + 5 s of the new worker.
    let limit = LEASE + SWEEP + Duration::from_secs(5);
    let took = fault
        .until("every payment terminal", limit, || async {
            fault.open().await == 0
        })
        .await;
    fault.assert_books(&account, PAYMENTS as i64).await;
    println!(
        "row 4: payments={PAYMENTS} processing_at_crash={processing} terminal_after={took:?} \
         (limit {limit:?}) duplicates=0"
    );
}

/// Row 1's narrowest window: the process dies after the payment is stored and before its job
/// is enqueued or the 202 sent. The client retries with the same key and gets that payment;
/// the recovery sweep, not the lost job, brings it to an end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_dead_between_storing_a_payment_and_enqueueing_it_loses_nothing() {
    let fault = Fault::new().await;
    let (mut first, api) = fault
        .start("both", Some("payment.after_insert_before_enqueue@5"))
        .await;
    let account = fault.merchant(&api).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(fault.pay(&api, &account, i).await.unwrap());
    }
    assert!(
        fault.pay(&api, &account, 4).await.is_err(),
        "the fifth request gets no answer"
    );
    aborted(&mut first).await;
    let stored = fault.count("SELECT count(*) FROM payments").await;
    assert_eq!(
        stored, 5,
        "the unanswered payment was stored before the crash"
    );

    let (_second, api) = fault.start("both", None).await;
    // The retry with the same key answers with the stored payment, and creates nothing.
    let retried = fault.pay(&api, &account, 4).await.unwrap();
    let stored_id: String =
        sqlx::query_scalar("SELECT id::text FROM payments WHERE idempotency_key = 'fault-4'")
            .fetch_one(fault.db.store().pool())
            .await
            .unwrap();
    assert_eq!(retried, stored_id);
    ids.push(retried);
    let took = fault
        .until(
            "every payment terminal",
            Duration::from_secs(30),
            || async { fault.open().await == 0 },
        )
        .await;
    fault.assert_books(&account, 5).await;
    println!(
        "payment.after_insert_before_enqueue: stored=5 answered_after_retry=5 terminal_after={took:?} duplicates=0"
    );
}
