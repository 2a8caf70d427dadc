//! TEST-MATRIX row 32, the seeded chaos soak. A load driver pays through an API process
//! while a fault scheduler on the same seed kills the API and the worker with SIGKILL,
//! crashes PostgreSQL (`pg_ctl restart -m immediate`, on a cluster of the test's own),
//! flushes Redis and restarts it empty. Then the faults stop, everything heals, and the
//! checkers run over the driver's history and the database:
//! - per key, every 202 of every attempt named the same payment, and it is the key's only
//!   payment (Stripe's idempotency, linearised). Each key is replayed right after its first
//!   202 (so replays cross the faults) and once more after the heal, so every key has at
//!   least two 202s to compare;
//! - every payment id a client saw in a 202 exists (L11), and every payment ends terminal
//!   within T_heal (L12);
//! - the books audit reports 0 on every invariant (L15 and L16, the outbox, included);
//! - every event was delivered at least once to the endpoint subscribed to `*` at the start,
//!   whose receiver the schedule also takes down (connections refused) and hangs (accepts,
//!   never answers), and every delivery's signature verifies.
//!
//! The short form runs in CI (`ATOMIC_CHAOS_SECONDS`, default 20). The long form is the same
//! test for ten minutes: `ATOMIC_CHAOS_SECONDS=600 cargo test -p atomic-server --test chaos --
//! --nocapture`. `ATOMIC_CHAOS_SEED` replays a seed: the same faults, in the same order, at the
//! same times.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use atomic_core::ports::LedgerAudit;
use atomic_redis::testkit::RedisServer;
use common::books::{Acked, assert_acked_stored};
use common::fault::{Fault, KEY, T_HEAL};
use common::receiver::{Answer, Hanging, Hit, HitLog, Receiver, free_ports, hit_verifies};
use common::{Answered, pg_cluster::PgCluster};
use serde_json::{Value, json};
use tokio::sync::{Mutex, RwLock};

const CLIENTS: usize = 8;
/// Short requests, so a claim a killed request held goes stale within seconds; webhooks to
/// the loopback receiver, attempts bounded at 1 s, retried often enough for a minute.
const SHORT: [(&str, &str); 4] = [
    ("REQUEST_TIMEOUT", "5s"),
    ("WEBHOOK_ALLOW_PRIVATE", "true"),
    ("WEBHOOK_TIMEOUT", "1s"),
    (
        "WEBHOOK_RETRY_SCHEDULE",
        "200ms,500ms,1s,1s,1s,2s,2s,2s,2s,2s,3s,3s,3s,3s,3s,5s,5s,5s,5s,5s,5s,5s,5s",
    ),
];
/// How long the receiver stays down, or hangs, when the schedule says so.
const RECEIVER_FAULT: Duration = Duration::from_millis(1_500);

/// splitmix64: the one source of randomness, so a seed replays a run's schedule.
fn mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum FaultKind {
    KillApi,
    KillWorker,
    FlushRedis,
    RestartRedis,
    CrashPostgres,
    ReceiverDown,
    ReceiverHangs,
}

/// The webhook receiver of the soak, on one port: up, down, or hanging. What each of its
/// incarnations received is kept across its restarts, including what a connection it accepted
/// before going down carried afterwards (keep-alive), which it recorded and answered.
struct Switchable {
    port: u16,
    up: Option<Receiver>,
    logs: Vec<HitLog>,
}

impl Switchable {
    async fn start() -> Self {
        let [port] = free_ports::<1>();
        let up = Receiver::start_on(port, Answer::Status(204)).await;
        Self {
            port,
            logs: vec![up.log()],
            up: Some(up),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Stops the receiver, and waits until its port is free (its task ends after the abort).
    async fn down(&mut self) {
        drop(self.up.take());
        for _ in 0..200 {
            if std::net::TcpListener::bind(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "port {} still taken 2 s after the receiver stopped",
            self.port
        );
    }

    async fn up(&mut self) {
        self.down().await;
        let up = Receiver::start_on(self.port, Answer::Status(204)).await;
        self.logs.push(up.log());
        self.up = Some(up);
    }

    /// Down (connections refused) or hanging for [`RECEIVER_FAULT`], then up again.
    async fn fault(&mut self, hang: bool) {
        self.down().await;
        let hanging = if hang {
            Some(Hanging::start_on(self.port).await)
        } else {
            None
        };
        tokio::time::sleep(RECEIVER_FAULT).await;
        drop(hanging);
        tokio::task::yield_now().await;
        self.up().await;
    }

    /// Every delivery received so far.
    fn received(&self) -> Vec<Hit> {
        self.logs.iter().flat_map(HitLog::hits).collect()
    }
}

/// The fault schedule of a seed: (seconds from the start, fault), one every 2-4 s.
fn schedule(seed: u64, run_for: Duration) -> Vec<(Duration, FaultKind)> {
    let mut state = seed;
    let mut at = Duration::from_millis(1_000);
    let mut faults = Vec::new();
    loop {
        at += Duration::from_millis(2_000 + mix(&mut state) % 2_000);
        if at >= run_for {
            return faults;
        }
        let kind = match mix(&mut state) % 7 {
            0 => FaultKind::KillApi,
            1 => FaultKind::KillWorker,
            2 => FaultKind::FlushRedis,
            3 => FaultKind::RestartRedis,
            4 => FaultKind::ReceiverDown,
            5 => FaultKind::ReceiverHangs,
            _ => FaultKind::CrashPostgres,
        };
        faults.push((at, kind));
    }
}

/// What one attempt of one key got.
enum Outcome {
    Accepted(String),
    /// No definitive answer: no response, 409 in progress, 503.
    Retry,
}

async fn attempt(
    http: &reqwest::Client,
    api: &str,
    account: &str,
    key: &str,
    amount: u64,
) -> Outcome {
    let source = if amount % 10 == 7 {
        "tok_chargeDeclined"
    } else {
        "tok_visa"
    };
    let Ok(reply) = http
        .post(format!("{api}/payments"))
        .bearer_auth(KEY)
        .header("Idempotency-Key", key)
        .json(
            &json!({"merchantId": account, "amount": amount, "currency": "USD", "source": source}),
        )
        .send()
        .await
    else {
        return Outcome::Retry;
    };
    let status = reply.status().as_u16();
    let Ok(body) = reply.json::<Value>().await else {
        return Outcome::Retry;
    };
    match status {
        202 => Outcome::Accepted(body["data"]["id"].as_str().unwrap().to_owned()),
        409 | 503 => Outcome::Retry,
        other => panic!("key {key}: unexpected {other}: {body}"),
    }
}

/// Subscribes an endpoint to every event at `url`; its secret.
async fn subscribe(http: &reqwest::Client, api: &str, url: &str) -> String {
    let made: Value = http
        .post(format!("{api}/webhook-endpoints"))
        .bearer_auth(KEY)
        .json(&json!({"url": url, "events": ["*"]}))
        .answer()
        .await;
    made["data"]["secret"]
        .as_str()
        .expect("an endpoint with its secret")
        .to_owned()
}

/// Waits until no delivery is `PENDING`, then checks every event reached the receiver and
/// every delivery it got verifies; the figures, in words.
async fn assert_every_event_delivered(
    fault: &Fault,
    receiver: &Switchable,
    secret: &str,
) -> String {
    fault
        .until(
            "every delivery finished",
            Duration::from_secs(90),
            || async {
                fault
                    .count("SELECT count(*) FROM webhook_deliveries WHERE status = 'PENDING'")
                    .await
                    == 0
            },
        )
        .await;
    let events: Vec<(String,)> = sqlx::query_as("SELECT id::text FROM events")
        .fetch_all(fault.store.pool())
        .await
        .unwrap();
    let failed = fault
        .count("SELECT count(*) FROM webhook_deliveries WHERE status <> 'DELIVERED'")
        .await;
    assert_eq!(failed, 0, "every delivery DELIVERED");
    let hits = receiver.received();
    let ids: BTreeSet<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    let missing = events
        .iter()
        .filter(|(id,)| !ids.contains(id.as_str()))
        .count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} events never reached the receiver",
        events.len()
    );
    let forged = hits.iter().filter(|h| !hit_verifies(secret, h)).count();
    assert_eq!(
        forged,
        0,
        "{forged} of {} deliveries do not verify",
        hits.len()
    );
    format!("events={} deliveries_received={}", events.len(), hits.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_chaos_loses_nothing_doubles_nothing_and_heals() {
    let seed: u64 = std::env::var("ATOMIC_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let run_for = Duration::from_secs(
        std::env::var("ATOMIC_CHAOS_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    let plan = schedule(seed, run_for);
    assert_eq!(plan, schedule(seed, run_for), "a seed gives one schedule");
    println!("chaos: seed={seed} (ATOMIC_CHAOS_SEED={seed} replays it) run_for={run_for:?}");
    println!("chaos: schedule {plan:?}");

    let redis = Arc::new(Mutex::new(RedisServer::start().await));
    let url = redis.lock().await.url();
    let cluster = Arc::new(tokio::task::spawn_blocking(PgCluster::start).await.unwrap());
    let fault = Arc::new(Fault::on_database(cluster.url(), url).await);
    let (worker, _) = fault.start_with("worker", None, &SHORT).await;
    let (api_process, api_url) = fault.start_with("api", None, &SHORT).await;
    let account = fault.merchant(&api_url).await;
    let mut receiver = Switchable::start().await;
    let secret = subscribe(&fault.http, &api_url, &receiver.url()).await;
    let api = Arc::new(RwLock::new(api_url));

    // The load driver: each client pays one key at a time and retries it (same key, same
    // body) until it gets a 202, then replays it once; every 202 of every attempt is recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let history: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let attempts = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (fault, api, account, stop, history, attempts) = (
            fault.clone(),
            api.clone(),
            account.clone(),
            stop.clone(),
            history.clone(),
            attempts.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            // Keys not yet answered when the load stops; finished during the heal.
            loop {
                let key = format!("chaos-{c}-{n}");
                let amount = 100 + (seed.wrapping_add(c as u64 * 1_000_003 + n) % 9_900);
                // Until the first 202; then one replay, whatever it gets.
                let mut answered = false;
                loop {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    let current = api.read().await.clone();
                    let accepted =
                        match attempt(&fault.http, &current, &account, &key, amount).await {
                            Outcome::Accepted(id) => {
                                history.lock().await.push(Acked {
                                    key: key.clone(),
                                    id,
                                    amount: amount as i64,
                                });
                                true
                            }
                            Outcome::Retry => false,
                        };
                    if answered {
                        break;
                    }
                    if accepted {
                        answered = true;
                    } else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                n += 1;
                if stop.load(Ordering::Relaxed) {
                    return n;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }));
    }

    // The fault scheduler.
    let started = Instant::now();
    let mut api_process = api_process;
    let mut worker = worker;
    let mut applied: BTreeMap<String, u32> = BTreeMap::new();
    for (at, kind) in &plan {
        tokio::time::sleep_until((started + *at).into()).await;
        match kind {
            FaultKind::KillApi => {
                api_process.start_kill().unwrap();
                api_process.wait().await.unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                let (process, url) = fault.start_with("api", None, &SHORT).await;
                api_process = process;
                *api.write().await = url;
            }
            FaultKind::KillWorker => {
                worker.start_kill().unwrap();
                worker.wait().await.unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                worker = fault.start_with("worker", None, &SHORT).await.0;
            }
            FaultKind::FlushRedis => {
                let mut conn = redis.lock().await.connection().await;
                let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
            }
            FaultKind::RestartRedis => redis.lock().await.restart().await,
            FaultKind::CrashPostgres => {
                let cluster = cluster.clone();
                tokio::task::spawn_blocking(move || cluster.crash_restart())
                    .await
                    .unwrap();
            }
            FaultKind::ReceiverDown => receiver.fault(false).await,
            FaultKind::ReceiverHangs => receiver.fault(true).await,
        }
        *applied.entry(format!("{kind:?}")).or_default() += 1;
    }
    tokio::time::sleep_until((started + run_for).into()).await;

    // Heal: faults stop; every client finishes its key in flight.
    stop.store(true, Ordering::Relaxed);
    let mut keys = 0;
    for client in clients {
        keys += tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .expect("every key in flight gets its 202 within 60 s of the heal")
            .unwrap();
    }
    let took = fault
        .until("every payment terminal", T_HEAL, || async {
            fault.open().await == 0
        })
        .await;

    // Every key answered is replayed once more against the healed system (same key, same
    // body, until a 202), by CLIENTS concurrent clients; each answer joins the history.
    let answered: Vec<Acked> = {
        let history = history.lock().await;
        let mut seen = BTreeSet::new();
        history
            .iter()
            .filter(|a| seen.insert(a.key.clone()))
            .cloned()
            .collect()
    };
    let answered = Arc::new(answered);
    let mut replays = Vec::new();
    for c in 0..CLIENTS {
        let (fault, api, account, history, attempts, answered) = (
            fault.clone(),
            api.clone(),
            account.clone(),
            history.clone(),
            attempts.clone(),
            answered.clone(),
        );
        replays.push(tokio::spawn(async move {
            let current = api.read().await.clone();
            for a in answered.iter().skip(c).step_by(CLIENTS) {
                loop {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    let amount = a.amount as u64;
                    match attempt(&fault.http, &current, &account, &a.key, amount).await {
                        Outcome::Accepted(id) => {
                            history.lock().await.push(Acked { id, ..a.clone() });
                            break;
                        }
                        Outcome::Retry => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        }));
    }
    for replay in replays {
        tokio::time::timeout(Duration::from_secs(120), replay)
            .await
            .expect("every key replayed within 120 s of the heal")
            .unwrap();
    }

    // Checker 1: per key, every 202 of every attempt named one payment, and that payment is
    // the only one stored for the key.
    let history = history.lock().await;
    let mut by_key: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    let mut answers_of: HashMap<&str, usize> = HashMap::new();
    for a in history.iter() {
        by_key.entry(&a.key).or_default().insert(&a.id);
        *answers_of.entry(&a.key).or_default() += 1;
    }
    let two_payments: Vec<String> = by_key
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(key, ids)| format!("{key}: {ids:?}"))
        .collect();
    assert!(
        two_payments.is_empty(),
        "{} keys answered 202 with more than one payment: {:?}",
        two_payments.len(),
        &two_payments[..two_payments.len().min(5)]
    );
    assert_eq!(by_key.len() as u64, keys, "every key answered");
    let least = answers_of.values().copied().min().unwrap_or(0);
    assert!(
        least >= 2,
        "every key has at least two 202s to compare ({least})"
    );
    let stored: Vec<(String, String)> =
        sqlx::query_as("SELECT idempotency_key, id::text FROM payments")
            .fetch_all(fault.store.pool())
            .await
            .unwrap();
    let mut stored_by_key: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for (key, id) in &stored {
        stored_by_key.entry(key).or_default().insert(id);
    }
    let mut mismatched = Vec::new();
    for (key, ids) in &by_key {
        if stored_by_key.get(key) != Some(ids) {
            mismatched.push(format!(
                "{key}: answered {ids:?}, stored {:?}",
                stored_by_key.get(key)
            ));
        }
    }
    for (key, ids) in &stored_by_key {
        if !by_key.contains_key(key) {
            mismatched.push(format!("{key}: never answered, stored {ids:?}"));
        }
    }
    assert!(
        mismatched.is_empty(),
        "{} keys whose stored payments are not the one answered: {:?}",
        mismatched.len(),
        &mismatched[..mismatched.len().min(5)]
    );
    // Checker 2: L11, every 202 looked up by id, under its key and amount.
    let durable = assert_acked_stored(fault.store.pool(), &history).await;
    // Checker 3: the books (L12 after T_heal, postings against payments, audit).
    fault.assert_books(&account, stored.len() as i64).await;
    let audit = fault.store.audit(T_HEAL).await.unwrap();
    assert!(audit.is_clean(), "books audit:\n{audit}");
    // Checker 4: every event delivered at least once, every delivery signed.
    let delivered = assert_every_event_delivered(&fault, &receiver, &secret).await;
    println!(
        "chaos: seed={seed} run_for={run_for:?} faults={applied:?} keys={keys} attempts={} \
         answers_202={durable} (at least {least} per key) terminal_after_heal={took:?} \
         (T_heal {T_HEAL:?}) {delivered} violations=0",
        attempts.load(Ordering::Relaxed),
    );
    drop(worker);
    drop(api_process);
}
