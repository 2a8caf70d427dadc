//! One run end to end: create the merchants, offer the load (closed or open loop) over N
//! keep-alive connections while the follower samples settlement, then check the books.
//!
//! Latency goes into one HDR histogram per connection (merged at the end, no shared lock on the
//! hot path). In the open loop a payment's latency counts from its scheduled send time, so a
//! server (or a loadgen) that falls behind shows it in the percentiles instead of hiding it.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::args::{Load, Options, TokenMix, is_manual, splitmix64, token_succeeds};
use crate::client::{Api, Capture, Failure, Key, Merchant, NewPayment};
use crate::follow::{Follower, Sample};
use crate::report::{Report, Timeline};
use crate::verify;

/// What an accepted request left for a worker to settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A payment to charge, authorize or capture.
    Payment,
    /// A refund to post.
    Refund,
}

/// One accepted payment (or refund): what the follower and the books check need to know.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Accepted {
    /// Payment or refund id (UUIDv7: ids sort roughly in acceptance order).
    pub(crate) id: Uuid,
    /// Which of the two `id` names.
    pub(crate) kind: Kind,
    /// Index of its merchant in the run's merchant list.
    pub(crate) merchant: u32,
    /// Minor units.
    pub(crate) amount: i64,
    /// Whether its card token should end `SUCCESS`.
    pub(crate) succeeds: bool,
}

/// Counters and logs shared by the connections, the follower and the progress line.
#[derive(Debug)]
pub(crate) struct Shared {
    /// When the run started (load start).
    pub(crate) start: Instant,
    /// Payments handed to a connection.
    pub(crate) sent: AtomicU64,
    /// Payments answered 202.
    pub(crate) accepted: AtomicU64,
    /// Payments answered otherwise, or not answered.
    pub(crate) errors: AtomicU64,
    /// Microseconds from start to the last answer, once the load has ended.
    load_done_us: AtomicU64,
    load_done: AtomicBool,
    /// Wakes the follower at once when the load ends.
    pub(crate) load_ended: Notify,
    /// The accepted payments, in answer order.
    accepted_log: Mutex<Vec<Accepted>>,
    /// The follower's latest sample, for the progress line.
    latest: Mutex<Option<Sample>>,
    first_errors: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked mid-push; the data is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            start: Instant::now(),
            sent: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            load_done_us: AtomicU64::new(0),
            load_done: AtomicBool::new(false),
            load_ended: Notify::new(),
            accepted_log: Mutex::new(Vec::new()),
            latest: Mutex::new(None),
            first_errors: Mutex::new(HashSet::new()),
        }
    }

    /// Records an accepted payment.
    pub(crate) fn push_accepted(&self, payment: Accepted) {
        lock(&self.accepted_log).push(payment);
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// A copy of the accepted payments so far.
    pub(crate) fn accepted_snapshot(&self) -> Vec<Accepted> {
        lock(&self.accepted_log).clone()
    }

    /// Marks the end of the load (the last answer) and wakes the follower.
    pub(crate) fn end_load(&self) {
        let us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.load_done_us.store(us, Ordering::SeqCst);
        self.load_done.store(true, Ordering::SeqCst);
        self.load_ended.notify_one();
    }

    /// Time from start to the end of the load, once it has ended.
    pub(crate) fn load_done_at(&self) -> Option<Duration> {
        self.load_done
            .load(Ordering::SeqCst)
            .then(|| Duration::from_micros(self.load_done_us.load(Ordering::SeqCst)))
    }

    /// Stores the follower's latest sample.
    pub(crate) fn set_latest(&self, sample: Sample) {
        *lock(&self.latest) = Some(sample);
    }

    /// The follower's latest sample.
    pub(crate) fn latest(&self) -> Option<Sample> {
        lock(&self.latest).clone()
    }

    /// Prints the first failure of each kind to stderr (later ones are only counted).
    pub(crate) fn note_failure(&self, what: &str, failure: &Failure) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if lock(&self.first_errors).insert(failure.label()) {
            eprintln!(
                "loadgen: first {} failure on {what}: {failure}",
                failure.label()
            );
        }
    }
}

/// What one connection did.
struct ConnectionResult {
    histogram: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    max_lag: Duration,
}

/// Everything the connections share, read-only.
struct LoadPlan {
    api: Api,
    merchants: Vec<Merchant>,
    tokens: TokenMix,
    manual_percent: u64,
    currency: String,
    run_id: String,
    seed: u64,
    total: u64,
    /// Open loop: the gap between scheduled sends.
    interval: Option<Duration>,
    /// Open loop: no send starts after this; what is still unsent then is missed.
    deadline: Option<Instant>,
    next: AtomicU64,
}

/// Open loop: how far past its duration a run may still start sends before it stops and counts
/// the rest as missed (the server fell behind the offered rate).
const OPEN_LOOP_GRACE: Duration = Duration::from_secs(1);

/// A fresh histogram: 1 µs to 10 min at 3 significant figures.
pub(crate) fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| format!("histogram: {e}"))
}

/// Runs the whole thing and returns the report (or why it could not run).
pub(crate) async fn run(opts: &Options) -> Result<Report, String> {
    let api = Api::new(&opts.url, opts.connections + 4, opts.timeout)?;
    let platform = Key::new(&opts.key).map_err(|e| e.to_string())?;
    api.health().await.map_err(|e| {
        format!(
            "the server at {} does not answer /api/v1/health: {e}",
            opts.url
        )
    })?;
    let seed = run_seed();
    let run_id = format!("{:08x}", seed as u32);
    if opts.load == Load::FollowOnly {
        eprintln!(
            "loadgen: run {run_id}, following the open payments at {}",
            opts.url
        );
    } else {
        eprintln!(
            "loadgen: run {run_id}, {} loop, {} payments, {} connections, {} merchant(s), tokens {}",
            opts.load.name(),
            opts.load.total(),
            opts.connections,
            opts.merchants,
            opts.tokens.describe()
        );
    }

    if opts.load == Load::FollowOnly {
        return follow_only(opts, api, platform, run_id).await;
    }
    if let Load::Mixed { charges } = opts.load {
        return crate::mixed::run(opts, &api, &platform, &run_id, seed, charges).await;
    }

    let merchants = create_merchants(&api, &platform, opts, &run_id).await?;
    let shared = Arc::new(Shared::new());
    let wall_start_us = unix_micros(SystemTime::now());
    let progress = tokio::spawn(crate::report::progress_lines(
        shared.clone(),
        opts.load.total(),
    ));

    let follower = opts.follow.then(|| {
        let follower = Follower::new(
            api.clone(),
            platform.clone(),
            merchants.iter().map(|m| m.key.clone()).collect(),
            opts,
        );
        let shared = shared.clone();
        tokio::spawn(async move { follower.follow(&shared).await })
    });

    let plan = Arc::new(LoadPlan {
        api: api.clone(),
        merchants: merchants.clone(),
        tokens: opts.tokens.clone(),
        manual_percent: opts.manual_percent,
        currency: opts.currency.clone(),
        run_id: run_id.clone(),
        seed,
        total: opts.load.total(),
        interval: match opts.load {
            Load::Open { rate, .. } => Some(Duration::from_secs_f64(1.0 / rate)),
            _ => None,
        },
        deadline: match opts.load {
            Load::Open { duration, .. } => Some(shared.start + duration + OPEN_LOOP_GRACE),
            _ => None,
        },
        next: AtomicU64::new(0),
    });
    let mut connections = tokio::task::JoinSet::new();
    for _ in 0..opts.connections {
        connections.spawn(connection(plan.clone(), shared.clone()));
    }
    let mut histogram = new_histogram()?;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut max_lag = Duration::ZERO;
    while let Some(joined) = connections.join_next().await {
        let done = joined.map_err(|e| format!("a connection task failed: {e}"))??;
        histogram
            .add(&done.histogram)
            .map_err(|e| format!("histogram merge: {e}"))?;
        for (label, n) in done.errors {
            *errors.entry(label).or_default() += n;
        }
        max_lag = max_lag.max(done.max_lag);
    }
    shared.end_load();
    let accept_elapsed = shared.load_done_at().unwrap_or_default();

    let outcome = match follower {
        Some(task) => Some(
            task.await
                .map_err(|e| format!("the follower failed: {e}"))?,
        ),
        None => None,
    };
    progress.abort();

    let accepted = shared.accepted_snapshot();
    let books = if opts.verify && outcome.as_ref().is_some_and(|o| o.drained()) {
        eprintln!("loadgen: checking the books through the API ...");
        Some(verify::check(&api, &merchants, &accepted).await)
    } else {
        None
    };
    let timeline = books.as_ref().and_then(|b| {
        Timeline::from_server_times(
            &b.terminal_times,
            wall_start_us,
            accept_elapsed,
            accepted.len(),
        )
    });

    Ok(Report {
        mode: opts.load,
        run_id,
        connections: opts.connections,
        merchants: opts.merchants,
        tokens: opts.tokens.describe(),
        mix: None,
        offered: opts.load.total(),
        sent: shared.sent.load(Ordering::Relaxed),
        accepted: accepted.len() as u64,
        errors,
        accept_elapsed,
        histogram: Some(histogram),
        max_lag,
        follow: outcome,
        timeline,
        books,
    })
}

/// Follow-only: snapshot every open payment the platform key sees, then follow it to the end.
async fn follow_only(
    opts: &Options,
    api: Api,
    platform: Key,
    run_id: String,
) -> Result<Report, String> {
    let follower = Follower::new(api, platform.clone(), vec![platform], opts);
    let snapshot = Instant::now();
    let open = follower
        .snapshot_open()
        .await
        .map_err(|e| format!("cannot list the open payments: {e}"))?;
    let refunds = open.iter().filter(|a| a.kind == Kind::Refund).count();
    let mix = format!("payments {} / refunds {refunds}", open.len() - refunds);
    // The clock starts once the snapshot is taken: a caller starts the workers on the line
    // below (bench/run), so the drain is timed from then, not from the listing before it.
    let shared = Arc::new(Shared::new());
    eprintln!(
        "loadgen: following {} open job(s): {mix} (snapshot took {:.2}s)",
        open.len(),
        snapshot.elapsed().as_secs_f64()
    );
    for payment in open {
        shared.push_accepted(payment);
    }
    shared
        .sent
        .store(shared.accepted.load(Ordering::Relaxed), Ordering::Relaxed);
    shared.end_load();
    let progress = tokio::spawn(crate::report::progress_lines(shared.clone(), 0));
    let outcome = follower.follow(&shared).await;
    progress.abort();
    Ok(Report {
        mode: Load::FollowOnly,
        run_id,
        connections: 0,
        merchants: 0,
        tokens: String::new(),
        mix: Some(mix),
        offered: 0,
        sent: 0,
        accepted: shared.accepted.load(Ordering::Relaxed),
        errors: BTreeMap::new(),
        accept_elapsed: Duration::ZERO,
        histogram: None,
        max_lag: Duration::ZERO,
        follow: Some(outcome),
        timeline: None,
        books: None,
    })
}

async fn create_merchants(
    api: &Api,
    platform: &Key,
    opts: &Options,
    run_id: &str,
) -> Result<Vec<Merchant>, String> {
    let mut merchants = Vec::with_capacity(opts.merchants);
    for i in 0..opts.merchants {
        let name = format!("loadgen {run_id} #{i}");
        let merchant = api
            .create_merchant(platform, &name, &opts.currency)
            .await
            .map_err(|e| match e {
                Failure::Status { status: 401, .. } => {
                    "the platform key was refused (401): use the key this server printed".to_owned()
                }
                Failure::Status { status: 403, .. } => {
                    "POST /merchants was forbidden (403): --key must be the platform key".to_owned()
                }
                Failure::Status { status: 429, .. } => {
                    "rate limited (429) creating merchants: start the server with \
                     RATE_LIMIT_GLOBAL=off RATE_LIMIT_PAYMENTS=off"
                        .to_owned()
                }
                other => format!("cannot create merchant {i}: {other}"),
            })?;
        merchants.push(merchant);
    }
    Ok(merchants)
}

/// One keep-alive connection's loop: take the next payment number, (open loop: wait for its
/// slot), send it, record the answer.
async fn connection(plan: Arc<LoadPlan>, shared: Arc<Shared>) -> Result<ConnectionResult, String> {
    let mut histogram = new_histogram()?;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut max_lag = Duration::ZERO;
    let merchant_count = plan.merchants.len() as u64;
    loop {
        let i = plan.next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.total {
            break;
        }
        let scheduled = match plan.interval {
            Some(gap) => {
                let at = shared.start + gap.mul_f64(i as f64);
                tokio::time::sleep_until(at.into()).await;
                if plan.deadline.is_some_and(|d| Instant::now() > d) {
                    break;
                }
                max_lag = max_lag.max(at.elapsed());
                at
            }
            None => Instant::now(),
        };
        let m = (i % merchant_count) as usize;
        let merchant = &plan.merchants[m];
        let token = plan.tokens.pick(plan.seed, i);
        let amount = payment_amount(plan.seed, i);
        let idempotency_key = format!("lg-{}-{i}", plan.run_id);
        let capture = match is_manual(plan.manual_percent, i) {
            true => Capture::Manual,
            false => Capture::Automatic,
        };
        let payment = NewPayment::new(merchant.account, amount, &plan.currency, token, capture);
        shared.sent.fetch_add(1, Ordering::Relaxed);
        match plan
            .api
            .create_payment(&merchant.key, &idempotency_key, &payment)
            .await
        {
            Ok(id) => {
                let micros = u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX);
                histogram.saturating_record(micros.max(1));
                shared.push_accepted(Accepted {
                    id,
                    kind: Kind::Payment,
                    merchant: m as u32,
                    amount,
                    succeeds: token_succeeds(token),
                });
            }
            Err(failure) => {
                shared.note_failure("POST /payments", &failure);
                *errors.entry(failure.label()).or_default() += 1;
            }
        }
    }
    Ok(ConnectionResult {
        histogram,
        errors,
        max_lag,
    })
}

/// The amount of payment `index`: 1.00 to 99.99, varied so the balance check means something.
pub(crate) fn payment_amount(seed: u64, index: u64) -> i64 {
    100 + (splitmix64(seed.wrapping_add(index)) % 9_900) as i64
}

fn run_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    splitmix64(nanos ^ u64::from(std::process::id()).rotate_left(32))
}

/// Microseconds since the Unix epoch (0 for a clock before 1970).
pub(crate) fn unix_micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
