//! One run end to end: create the merchants, offer the load (closed or open loop) over N
//! keep-alive connections while the follower samples settlement, then check the books.
//!
//! Latency goes into one HDR histogram per connection (merged at the end, no shared lock on the
//! hot path), and with `--series` into the connection's per-second buckets too. In the open loop a payment's latency counts from its scheduled send time, so a
//! server (or a loadgen) that falls behind shows it in the percentiles instead of hiding it.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::args::{Load, Options, TokenMix, is_manual, splitmix64, token_succeeds};
use crate::client::{Api, Capture, Failure, Key, Merchant, NewPayment};
use crate::follow::{FollowOutcome, Follower, Sample};
use crate::report::{Report, Timeline};
use crate::series::Buckets;
use crate::verify::{self, Books};

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

/// What one connection did, or all of them merged.
struct ConnectionResult {
    histogram: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    max_lag: Duration,
    /// With `--series`: sends, answers and latencies per second of the load.
    per_second: Option<Buckets>,
}

impl ConnectionResult {
    /// Nothing recorded yet; `per_second` when the run writes its series.
    fn new(per_second: bool) -> Result<ConnectionResult, String> {
        Ok(ConnectionResult {
            histogram: new_histogram()?,
            errors: BTreeMap::new(),
            max_lag: Duration::ZERO,
            per_second: per_second.then(Buckets::default),
        })
    }

    /// Counts a send starting now, `start` being the start of the load (with `--series`).
    fn record_send(&mut self, start: Instant) {
        if let Some(seconds) = &mut self.per_second {
            seconds.sent(start.elapsed());
        }
    }

    /// Records an accepted payment's latency, counted from `scheduled` (at least 1 µs), and
    /// (with `--series`) the second of the load it arrived in.
    fn record_accepted(&mut self, scheduled: Instant, start: Instant) {
        let now = Instant::now();
        let latency = now.saturating_duration_since(scheduled);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(micros.max(1));
        if let Some(seconds) = &mut self.per_second {
            seconds.accepted(now.saturating_duration_since(start), latency);
        }
    }

    /// Counts a failed payment under its label.
    fn count_failure(&mut self, failure: &Failure) {
        *self.errors.entry(failure.label()).or_default() += 1;
    }

    /// Adds another connection's latencies and errors; the lag is the larger of the two.
    fn merge(&mut self, other: ConnectionResult) -> Result<(), String> {
        self.histogram
            .add(&other.histogram)
            .map_err(|e| format!("histogram merge: {e}"))?;
        for (label, n) in other.errors {
            *self.errors.entry(label).or_default() += n;
        }
        self.max_lag = self.max_lag.max(other.max_lag);
        match (&mut self.per_second, other.per_second) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
        Ok(())
    }
}

/// Everything the connections share, read-only but for `next`.
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
    /// Whether the connections count per second (`--series`).
    per_second: bool,
    next: AtomicU64,
}

impl LoadPlan {
    /// The plan of a closed or open loop over `merchants`; an open loop's schedule counts from
    /// `start`.
    fn new(
        opts: &Options,
        api: &Api,
        merchants: &[Merchant],
        run_id: &str,
        seed: u64,
        start: Instant,
    ) -> LoadPlan {
        LoadPlan {
            api: api.clone(),
            merchants: merchants.to_vec(),
            tokens: opts.tokens.clone(),
            manual_percent: opts.manual_percent,
            currency: opts.currency.clone(),
            run_id: run_id.to_owned(),
            seed,
            total: opts.load.total(),
            interval: match opts.load {
                Load::Open { rate, .. } => Some(Duration::from_secs_f64(1.0 / rate)),
                _ => None,
            },
            deadline: match opts.load {
                Load::Open { duration, .. } => Some(start + duration + OPEN_LOOP_GRACE),
                _ => None,
            },
            per_second: opts.series.is_some(),
            next: AtomicU64::new(0),
        }
    }
}

/// When a payment goes out.
struct Slot {
    /// What its latency counts from: its scheduled time (open loop) or now (closed loop).
    at: Instant,
    /// Open loop: how late the send started past `at` (zero in the closed loop).
    lag: Duration,
}

/// What a closed or open loop left once its load ended and the follower (if any) was done.
struct LoadOutcome {
    /// The connections' latencies, errors and lag, merged.
    totals: ConnectionResult,
    /// Time from start to the last answer.
    accept_elapsed: Duration,
    follow: Option<FollowOutcome>,
    /// Payments handed to a connection.
    sent: u64,
    /// The accepted payments, in answer order.
    accepted: Vec<Accepted>,
    /// Wall-clock start of the load (µs since the epoch), to line up the server's timestamps.
    wall_start_us: i64,
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
    let (api, platform) = connect(opts).await?;
    let seed = run_seed();
    let run_id = format!("{:08x}", seed as u32);
    announce(opts, &run_id);
    match opts.load {
        Load::FollowOnly => follow_only(opts, api, platform, run_id).await,
        Load::Mixed { charges } => {
            crate::mixed::run(opts, &api, &platform, &run_id, seed, charges).await
        }
        Load::Closed { .. } | Load::Open { .. } => {
            offer_payments(opts, &api, &platform, run_id, seed).await
        }
    }
}

/// The API client and the platform key, once the server answers its health check.
async fn connect(opts: &Options) -> Result<(Api, Key), String> {
    let api = Api::new(&opts.url, opts.connections + 4, opts.timeout)?;
    let platform = Key::new(&opts.key).map_err(|e| e.to_string())?;
    api.health().await.map_err(|e| {
        format!(
            "the server at {} does not answer /api/v1/health: {e}",
            opts.url
        )
    })?;
    Ok((api, platform))
}

/// Prints the run's first line to stderr: its id and the load it offers.
fn announce(opts: &Options, run_id: &str) {
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
}

/// Closed or open loop: creates the run's merchants, sends the payments while the follower
/// samples settlement, then checks the books.
async fn offer_payments(
    opts: &Options,
    api: &Api,
    platform: &Key,
    run_id: String,
    seed: u64,
) -> Result<Report, String> {
    let merchants = create_merchants(api, platform, opts, &run_id).await?;
    let mut load = send_payments(opts, api, platform, &merchants, &run_id, seed).await?;
    if let (Some(path), Some(seconds)) = (&opts.series, load.totals.per_second.take()) {
        write_series(path, seconds, load.follow.as_ref());
    }
    let books = check_books(opts, api, &merchants, &load.accepted, load.follow.as_ref()).await;
    let timeline = books.as_ref().and_then(|b| {
        Timeline::from_server_times(
            &b.terminal_times,
            load.wall_start_us,
            load.accept_elapsed,
            load.accepted.len(),
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
        sent: load.sent,
        accepted: load.accepted.len() as u64,
        errors: load.totals.errors,
        accept_elapsed: load.accept_elapsed,
        histogram: Some(load.totals.histogram),
        max_lag: load.totals.max_lag,
        follow: load.follow,
        timeline,
        books,
    })
}

/// Sends the plan's payments over `--connections` connections, with the progress line and
/// (when following) the follower running alongside; returns once both the load and the
/// follower are done.
async fn send_payments(
    opts: &Options,
    api: &Api,
    platform: &Key,
    merchants: &[Merchant],
    run_id: &str,
    seed: u64,
) -> Result<LoadOutcome, String> {
    let shared = Arc::new(Shared::new());
    let wall_start_us = unix_micros(SystemTime::now());
    let progress = tokio::spawn(crate::report::progress_lines(
        shared.clone(),
        opts.load.total(),
    ));
    let follower = opts.follow.then(|| {
        let scopes = merchants.iter().map(|m| m.key.clone()).collect();
        let follower = Follower::new(api.clone(), platform.clone(), scopes, opts);
        spawn_follower(follower, &shared)
    });
    let plan = LoadPlan::new(opts, api, merchants, run_id, seed, shared.start);
    let totals = run_connections(Arc::new(plan), &shared, opts.connections).await?;
    shared.end_load();
    let accept_elapsed = shared.load_done_at().unwrap_or_default();
    let follow = join_follower(follower).await?;
    progress.abort();
    Ok(LoadOutcome {
        totals,
        accept_elapsed,
        follow,
        sent: shared.sent.load(Ordering::Relaxed),
        accepted: shared.accepted_snapshot(),
        wall_start_us,
    })
}

/// Writes the run's per-second series to `path` (`--series`). A failure is reported and the
/// run goes on: its report matters more than the picture.
fn write_series(path: &Path, seconds: Buckets, follow: Option<&FollowOutcome>) {
    let rows = seconds.into_rows(follow.map_or(&[][..], |f| &f.samples));
    match std::fs::write(path, crate::series::to_csv(&rows)) {
        Ok(()) => eprintln!(
            "loadgen: wrote {} second(s) of the run to {}",
            rows.len(),
            path.display()
        ),
        Err(error) => eprintln!(
            "loadgen: cannot write the series to {}: {error}",
            path.display()
        ),
    }
}

/// Runs `count` connections over the plan until it is used up and merges what they did.
async fn run_connections(
    plan: Arc<LoadPlan>,
    shared: &Arc<Shared>,
    count: usize,
) -> Result<ConnectionResult, String> {
    let mut connections = tokio::task::JoinSet::new();
    for _ in 0..count {
        connections.spawn(connection(plan.clone(), shared.clone()));
    }
    let mut totals = ConnectionResult::new(plan.per_second)?;
    while let Some(joined) = connections.join_next().await {
        let done = joined.map_err(|e| format!("a connection task failed: {e}"))??;
        totals.merge(done)?;
    }
    Ok(totals)
}

/// Starts the follower on its own task, sampling settlement until the backlog drains.
pub(crate) fn spawn_follower(
    follower: Follower,
    shared: &Arc<Shared>,
) -> JoinHandle<FollowOutcome> {
    let shared = shared.clone();
    tokio::spawn(async move { follower.follow(&shared).await })
}

/// What the follower saw, once it is done (`None` when the run does not follow).
pub(crate) async fn join_follower(
    follower: Option<JoinHandle<FollowOutcome>>,
) -> Result<Option<FollowOutcome>, String> {
    match follower {
        Some(task) => task
            .await
            .map(Some)
            .map_err(|e| format!("the follower failed: {e}")),
        None => Ok(None),
    }
}

/// The books check, when the run checks its books (no `--no-verify`) and the follower saw the
/// backlog drain: a payment still open would read as a problem.
async fn check_books(
    opts: &Options,
    api: &Api,
    merchants: &[Merchant],
    accepted: &[Accepted],
    follow: Option<&FollowOutcome>,
) -> Option<Books> {
    if !(opts.verify && follow.is_some_and(FollowOutcome::drained)) {
        return None;
    }
    eprintln!("loadgen: checking the books through the API ...");
    Some(verify::check(api, merchants, accepted).await)
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
    let mut done = ConnectionResult::new(plan.per_second)?;
    loop {
        let i = plan.next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.total {
            break;
        }
        let Some(slot) = wait_for_slot(&plan, &shared, i).await else {
            break;
        };
        done.max_lag = done.max_lag.max(slot.lag);
        send_payment(&plan, &shared, i, slot.at, &mut done).await;
    }
    Ok(done)
}

/// When payment `i` goes out. Closed loop: now. Open loop: its scheduled time, slept until;
/// `None` once that is past the deadline (the rest are missed).
async fn wait_for_slot(plan: &LoadPlan, shared: &Shared, i: u64) -> Option<Slot> {
    let Some(gap) = plan.interval else {
        return Some(Slot {
            at: Instant::now(),
            lag: Duration::ZERO,
        });
    };
    let at = shared.start + gap.mul_f64(i as f64);
    tokio::time::sleep_until(at.into()).await;
    if plan.deadline.is_some_and(|d| Instant::now() > d) {
        return None;
    }
    Some(Slot {
        at,
        lag: at.elapsed(),
    })
}

/// Sends payment `i` and records the answer: accepted, its latency from `scheduled` and the
/// payment for the follower; refused or unanswered, the failure. Its merchant is `i` round
/// robin; token, amount and capture are drawn from the run's seed and `i`.
async fn send_payment(
    plan: &LoadPlan,
    shared: &Shared,
    i: u64,
    scheduled: Instant,
    done: &mut ConnectionResult,
) {
    let m = (i % plan.merchants.len() as u64) as usize;
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
    done.record_send(shared.start);
    match plan
        .api
        .create_payment(&merchant.key, &idempotency_key, &payment)
        .await
    {
        Ok(id) => {
            done.record_accepted(scheduled, shared.start);
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
            done.count_failure(&failure);
        }
    }
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
