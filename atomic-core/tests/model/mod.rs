//! The model-based test of the whole money path, shared by the backends it runs against
//! (atomic-core's `tests/properties.rs` on the in-memory adapters, atomic-postgres's
//! `tests/model.rs` on PostgreSQL; each includes this file with `#[path]`). Random sequences of
//! onboarding, account opening, payment requests (automatic and manual capture, with and
//! without idempotency keys, replays, mismatches, abandoned claims), captures (partial, whole,
//! too large, too late), cancels, refunds (partial, default, too large, with nothing left),
//! worker steps that finish or "crash" at chosen points, duplicate jobs, queue flushes, clock
//! moves, authorization expiries and sweeps are driven step by step against a manual clock and
//! checked against a plain model after every step: the books audit (TEST-MATRIX L1-L14) and the
//! model's own statuses, amounts, refund counters and balances. At the end everything is healed
//! and drained and the books are audited again, stuck payments included.
//!
//! What differs between backends is a [`Backend`]: how a case's store is built and how time
//! passes for it, how much every duration is scaled, how many jobs a worker step takes, and
//! whether bursts of concurrent submits (group commit) are generated.
//!
//! `PROPTEST_CASES` overrides the number of cases ([`Backend::CASES`]) and `PROPTEST_RNG_SEED`
//! the fixed seed, so a run is reproducible.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on the unexpected

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{RngSeed, TestCaseError, TestRunner};

use atomic_core::account::{Account, AccountName};
use atomic_core::error::Invariant;
use atomic_core::idempotency::{
    Claim, ClaimOutcome, Completion, Fingerprint, IdempotencyKey, IdempotencyPolicy, StoredResponse,
};
use atomic_core::memory::{MemoryQueue, MemoryRateLimiter, RecordingWebhooks};
use atomic_core::merchant::MerchantName;
use atomic_core::page::{PageLimit, PageRequest};
use atomic_core::payment::PaymentState;
use atomic_core::ports::{
    BeginOutcome, Delivery, Job, JobQueue, LeaseId, LedgerAudit, PaymentFilter, RefundBegin,
    RefundFilter, TestModeCards,
};
use atomic_core::refund::RefundState;
use atomic_core::service::{CoreConfig, Processed, SweepConfig, WorkerConfig};
use atomic_core::testkit::{StoreKit, TimeTravel};
use atomic_core::time::ManualClock;
use atomic_core::{
    AccountId, Amount, CancellationReason, CaptureMethod, CardSource, Currency, Error,
    FailureReason, Fresh, MAX_PAYMENT_AMOUNT, MerchantId, Metadata, Owner, Payment, PaymentId,
    PaymentRequest, PaymentStatus, Ports, Principal, Refund, RefundId, RefundRequest, RefundStatus,
    Services, Sweeper, Timestamp, Worker,
};

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// A fixed seed, so every run generates the same cases.
const DEFAULT_SEED: u64 = 0x00A7_0A1C_5EED_2026;

/// `cases` by default, and at most `max_shrink_iters` shrinking steps when given.
pub(crate) fn config(cases: u32, max_shrink_iters: Option<u32>) -> ProptestConfig {
    let defaults = ProptestConfig::default();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let seed = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    ProptestConfig {
        cases,
        // Do not write regression files into the source tree; the seed reproduces a run.
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: max_shrink_iters.unwrap_or(defaults.max_shrink_iters),
        ..defaults
    }
}

/// What differs between the backends the model runs against.
pub(crate) trait Backend {
    /// Cases a run makes unless `PROPTEST_CASES` says otherwise; the generator's coverage is
    /// checked only for runs of at least this many.
    const CASES: u32;
    /// The most shrinking steps after a failure (`None`: proptest's default).
    const MAX_SHRINK_ITERS: Option<u32>;
    /// Every duration of the model (the lease, the sweep deadline, the key lock timeout, the
    /// clock moves the generator makes) multiplied by this. A backend that decides with its own
    /// clock sees each deadline later than the model by the real time the case has taken so
    /// far, which must stay under one step of the generator (1 s unscaled).
    const SCALE: u32;
    /// Most jobs one worker step reserves and processes together.
    const BATCH: usize;
    /// Whether bursts of payment requests, submitted concurrently, are generated.
    const BURSTS: bool;

    /// Where a case's manual clock starts.
    fn start() -> Timestamp;

    /// The store ports of a new case, built on the case's manual clock, with the books audit.
    /// The runner moves the manual clock itself; the kit's `time` makes the same time pass for
    /// whatever else the store decides with (nothing, for a store on the manual clock): lease
    /// ends, the sweep's staleness and the age of authorizations (`request_capture` and
    /// `expire_authorizations` compare it with `AUTHORIZATION_TTL`).
    #[allow(async_fn_in_trait)]
    async fn store(clock: Arc<ManualClock>) -> StoreKit;

    /// The clock the services read: the store's own, so a service and its store judge an age
    /// (an authorization's, against `AUTHORIZATION_TTL`) alike. The manual clock for a store on
    /// it; the system clock for a store that decides with its own `now()` and whose time travel
    /// ages the stored times instead.
    fn services_clock(clock: Arc<ManualClock>) -> Arc<dyn atomic_core::Clock>;
}

// ---------------------------------------------------------------------------------------------
// The system under test
// ---------------------------------------------------------------------------------------------

/// The lease and the sweep deadline, unscaled.
const LEASE: Duration = Duration::from_secs(30);
const STALE_AFTER: Duration = Duration::from_secs(30);
/// `AUTHORIZATION_TTL`, unscaled: short enough that the generator's clock moves cross it.
const AUTHORIZATION_TTL: Duration = Duration::from_secs(300);
/// Far beyond the time a case can cover: no key expires while a case runs.
const KEY_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
const MAX_ATTEMPTS: u32 = 2;
/// Long enough for every lease, visibility and sweep deadline to run out (TEST-MATRIX T_heal),
/// unscaled.
const HEAL: Duration = Duration::from_secs(30 + 30 + 1);
/// An audit horizon no payment reaches while the case runs (stuck payments are checked only
/// at the end, after healing).
const NEVER_STUCK: Duration = Duration::from_secs(30 * 24 * 3600);
const CURRENCIES: [Currency; 3] = [Currency::USD, Currency::EUR, Currency::INR];
const TOKENS: [&str; 6] = [
    "tok_visa",
    "tok_mastercard",
    "tok_chargeDeclined",
    "tok_chargeDeclinedInsufficientFunds",
    "tok_chargeDeclinedProcessingError",
    "tok_whatever",
];
const KEY_POOL: usize = 5;

/// The API's test-card table, written out independently of the crate's.
fn token_outcome(token: &str) -> PaymentStatusWithReason {
    match token {
        "tok_chargeDeclined" => (PaymentStatus::Failed, Some(FailureReason::CardDeclined)),
        "tok_chargeDeclinedInsufficientFunds" => (
            PaymentStatus::Failed,
            Some(FailureReason::InsufficientFunds),
        ),
        "tok_chargeDeclinedProcessingError" => {
            (PaymentStatus::Failed, Some(FailureReason::ProcessingError))
        }
        other if other.starts_with("tok_") => (PaymentStatus::Success, None),
        other => panic!("not a token: {other}"),
    }
}

type PaymentStatusWithReason = (PaymentStatus, Option<FailureReason>);

/// The in-memory queue behind a switch that can lose everything at once, pending deliveries
/// included, as `FLUSHALL` or a Redis restart without persistence would
/// ([`MemoryQueue::flush`] keeps the in-flight jobs).
#[derive(Clone)]
struct RedisLike {
    current: Arc<std::sync::Mutex<MemoryQueue>>,
    clock: Arc<ManualClock>,
}

impl RedisLike {
    fn new(clock: Arc<ManualClock>) -> Self {
        Self {
            current: Arc::new(std::sync::Mutex::new(MemoryQueue::new(clock.clone()))),
            clock,
        }
    }

    /// The queue as it is now.
    fn queue(&self) -> MemoryQueue {
        self.current.lock().expect("queue lock").clone()
    }

    fn flush_all(&self) {
        *self.current.lock().expect("queue lock") = MemoryQueue::new(self.clock.clone());
    }
}

#[async_trait]
impl JobQueue for RedisLike {
    async fn ping(&self) -> atomic_core::Result<()> {
        self.queue().ping().await
    }
    async fn enqueue(&self, jobs: &[Job]) -> atomic_core::Result<()> {
        self.queue().enqueue(jobs).await
    }
    async fn reserve(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> atomic_core::Result<Vec<Delivery>> {
        self.queue().reserve(max, visibility, wait).await
    }
    async fn ack(&self, deliveries: &[Delivery]) -> atomic_core::Result<()> {
        self.queue().ack(deliveries).await
    }
    async fn retry(&self, delivery: &Delivery, delay: Duration) -> atomic_core::Result<()> {
        self.queue().retry(delivery, delay).await
    }
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> atomic_core::Result<()> {
        self.queue().dead_letter(delivery, reason).await
    }
}

/// A queue whose post-settlement steps are lost: a worker killed after its store commit and
/// before it acked, retried or dead-lettered the job.
struct LostAfterCommit(RedisLike);

#[async_trait]
impl JobQueue for LostAfterCommit {
    async fn ping(&self) -> atomic_core::Result<()> {
        self.0.ping().await
    }
    async fn enqueue(&self, jobs: &[Job]) -> atomic_core::Result<()> {
        self.0.enqueue(jobs).await
    }
    async fn reserve(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> atomic_core::Result<Vec<Delivery>> {
        self.0.reserve(max, visibility, wait).await
    }
    async fn ack(&self, _: &[Delivery]) -> atomic_core::Result<()> {
        Ok(())
    }
    async fn retry(&self, _: &Delivery, _: Duration) -> atomic_core::Result<()> {
        Ok(())
    }
    async fn dead_letter(&self, _: &Delivery, _: &str) -> atomic_core::Result<()> {
        Ok(())
    }
}

struct Sut {
    clock: Arc<ManualClock>,
    audit: Arc<dyn LedgerAudit>,
    /// Makes time pass for the store besides the manual clock; may own the case's database.
    time: Arc<dyn TimeTravel>,
    queue: RedisLike,
    ports: Ports,
    services: Services,
    worker: Worker,
    crashing_worker: Worker,
    sweeper: Sweeper,
    config: CoreConfig,
    /// The backend's [`Backend::SCALE`], and the durations scaled by it.
    scale: u32,
    lease: Duration,
    stale_after: Duration,
    authorization_ttl: Duration,
    heal: Duration,
    /// [`Backend::BATCH`].
    batch: usize,
}

impl Sut {
    async fn new<B: Backend>() -> Self {
        let clock = Arc::new(ManualClock::new(B::start()));
        let kit = B::store(clock.clone()).await;
        let audit = kit.audit.clone().expect("the model audits the books");
        let queue = RedisLike::new(clock.clone());
        let ports = Ports {
            store: kit.store.clone(),
            queue: Arc::new(queue.clone()),
            limiter: Arc::new(MemoryRateLimiter::new(clock.clone())),
            cards: Arc::new(TestModeCards),
            resolver: Arc::new(RecordingWebhooks::default()),
            sender: Arc::new(RecordingWebhooks::default()),
            clock: B::services_clock(clock.clone()),
        };
        let defaults = CoreConfig::default();
        let config = CoreConfig {
            idempotency: IdempotencyPolicy {
                ttl: KEY_TTL,
                lock_timeout: defaults.idempotency.lock_timeout * B::SCALE,
            },
            authorization_ttl: AUTHORIZATION_TTL * B::SCALE,
            ..defaults
        };
        let lease = LEASE * B::SCALE;
        let stale_after = STALE_AFTER * B::SCALE;
        let services = Services::start(ports.clone(), config.clone())
            .await
            .expect("services start");
        let worker_config = WorkerConfig {
            lease,
            max_attempts: MAX_ATTEMPTS,
            ..WorkerConfig::default()
        };
        let worker = Worker::new(&ports, worker_config);
        let crashing_worker = Worker::new(
            &Ports {
                queue: Arc::new(LostAfterCommit(queue.clone())),
                ..ports.clone()
            },
            worker_config,
        );
        let sweeper = Sweeper::new(
            &ports,
            SweepConfig {
                stale_after,
                ..SweepConfig::default()
            },
            config.authorization_ttl,
            atomic_core::service::DEFAULT_EVENT_RETENTION,
        );
        Self {
            clock,
            audit,
            time: kit.time,
            queue,
            ports,
            services,
            worker,
            crashing_worker,
            sweeper,
            authorization_ttl: config.authorization_ttl,
            config,
            scale: B::SCALE,
            lease,
            stale_after,
            heal: HEAL * B::SCALE,
            batch: B::BATCH,
        }
    }

    async fn system_account(&self, currency: Currency) -> Account {
        self.ports
            .store
            .accounts()
            .ensure_system_account(&Account::system(currency, Timestamp::now()))
            .await
            .expect("system account")
    }

    async fn stored_payments(&self) -> Vec<Payment> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .services
                .payments
                .list(
                    Principal::Platform,
                    &PaymentFilter::default(),
                    PageRequest {
                        limit: PageLimit::new(100).expect("a valid limit"),
                        starting_after: after,
                    },
                )
                .await
                .expect("list payments");
            after = page.items.last().map(|p| p.id);
            out.extend(page.items);
            if !page.has_more {
                return out;
            }
        }
    }

    async fn stored_refunds(&self) -> Vec<Refund> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .services
                .refunds
                .list(
                    Principal::Platform,
                    &RefundFilter::default(),
                    PageRequest {
                        limit: PageLimit::new(100).expect("a valid limit"),
                        starting_after: after,
                    },
                )
                .await
                .expect("list refunds");
            after = page.items.last().map(|r| r.id);
            out.extend(page.items);
            if !page.has_more {
                return out;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum TargetGen {
    /// One of the accounts opened so far.
    Account(usize),
    /// No `merchantId`: the caller's primary account (a merchant's, when the caller is the
    /// target's "owner").
    Primary(usize),
    /// The currency's system account (never a valid target).
    World,
    /// An id that names nothing.
    Unknown,
}

#[derive(Clone, Debug)]
enum CallerGen {
    Platform,
    /// Whoever owns the target account.
    Owner,
    /// Some onboarded merchant (possibly not the owner).
    Merchant(usize),
}

#[derive(Clone, Debug)]
struct PayOp {
    target: TargetGen,
    caller: CallerGen,
    amount: i64,
    /// 0: the account's currency; 1 or 2: another one.
    currency_shift: usize,
    token: usize,
    key: Option<usize>,
    /// The client dies after claiming its key, before the payment is stored.
    abandon: bool,
    /// Manual capture: the worker only authorizes.
    manual: bool,
}

/// Which payment a capture, cancel or refund names.
#[derive(Clone, Debug)]
struct PaymentPick {
    /// Mostly a payment in the state the operation needs; sometimes any payment.
    which: usize,
    /// Any payment, whatever its state.
    any: bool,
    /// An id that names nothing.
    unknown: bool,
    /// Who asks: the platform, the owner, or some merchant (possibly not the owner).
    caller: CallerGen,
}

/// A capture's amount.
#[derive(Clone, Copy, Debug)]
enum CaptureAmount {
    /// None: the whole authorization.
    Whole,
    /// This percentage of the authorized amount (at least 1).
    Part(u8),
    /// Exactly the authorized amount.
    Exact,
    /// One more than authorized.
    Over,
}

/// A refund's amount.
#[derive(Clone, Copy, Debug)]
enum RefundAmount {
    /// None: all that is still refundable.
    Rest,
    /// This percentage of the captured amount (at least 1).
    Part(u8),
    /// Exactly what is still refundable (1 when nothing is).
    Exact,
    /// One more than is still refundable.
    Over,
}

#[derive(Clone, Copy, Debug)]
enum WorkMode {
    /// `Worker::process`, to the end.
    Process,
    /// Killed right after claiming the payment (`PROCESSING` committed), before settling.
    CrashAfterClaim,
    /// Killed after the settlement commit, before the ack.
    CrashAfterCommit,
    /// Killed right after reserving the job.
    DropUntouched,
}

#[derive(Clone, Debug)]
enum Op {
    Onboard {
        currency: usize,
    },
    OpenAccount {
        currency: usize,
        merchant: Option<usize>,
    },
    Pay(PayOp),
    /// Several requests, their keys claimed and payments prepared one after the other, then
    /// all submitted at once (one group commit when they meet in the writer).
    Burst(Vec<PayOp>),
    /// Sends a keyed request of the history again, as it was or with another amount.
    Resend {
        which: usize,
        change_body: bool,
    },
    /// The client that abandoned a claim wakes up and submits after all.
    LateSubmit {
        which: usize,
    },
    /// The client of an abandoned claim sends the same request again (and may die again),
    /// possibly first waiting until `after` seconds have passed since its claim.
    RetryAbandoned {
        which: usize,
        abandon: bool,
        after: Option<u64>,
    },
    Work(WorkMode),
    /// Enqueues a job for an existing payment again (or for an unknown id).
    Redeliver {
        which: usize,
        unknown: bool,
    },
    /// `MemoryQueue::flush`: waiting jobs are lost, in-flight ones stay.
    Flush,
    /// Everything in the queue is lost, in-flight jobs and dead letters included.
    FlushAll,
    Advance {
        secs: u64,
    },
    Sweep,
    Capture {
        pick: PaymentPick,
        amount: CaptureAmount,
    },
    Cancel {
        pick: PaymentPick,
    },
    Refund {
        pick: PaymentPick,
        amount: RefundAmount,
    },
    /// Moves the clock by `AUTHORIZATION_TTL` plus `offset` seconds, then, when `sweep`, sweeps:
    /// every authorization at least that old is canceled as expired (until then a capture of
    /// it is refused).
    Expire {
        offset: i8,
        sweep: bool,
    },
    /// Enqueues a job for an existing refund again (or for an unknown id).
    RedeliverRefund {
        which: usize,
        unknown: bool,
    },
}

fn amount_strategy() -> impl Strategy<Value = i64> {
    prop_oneof![
        10 => 1i64..=MAX_PAYMENT_AMOUNT,
        2 => Just(1i64),
        2 => Just(MAX_PAYMENT_AMOUNT),
        1 => Just(MAX_PAYMENT_AMOUNT + 1),
        1 => Just(i64::MAX),
    ]
}

fn pay_strategy() -> impl Strategy<Value = PayOp> {
    let target = prop_oneof![
        16 => any::<usize>().prop_map(TargetGen::Account),
        2 => any::<usize>().prop_map(TargetGen::Primary),
        1 => Just(TargetGen::World),
        1 => Just(TargetGen::Unknown),
    ];
    let caller = prop_oneof![
        4 => Just(CallerGen::Platform),
        5 => Just(CallerGen::Owner),
        1 => any::<usize>().prop_map(CallerGen::Merchant),
    ];
    let currency_shift = prop_oneof![8 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize)];
    let key = prop_oneof![1 => Just(None), 1 => (0..KEY_POOL).prop_map(Some)];
    (
        target,
        caller,
        amount_strategy(),
        currency_shift,
        0..TOKENS.len(),
        key,
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.5),
    )
        .prop_map(
            |(target, caller, amount, currency_shift, token, key, abandon, manual)| PayOp {
                target,
                caller,
                amount,
                currency_shift,
                token,
                key,
                abandon,
                manual,
            },
        )
}

fn pick_strategy() -> impl Strategy<Value = PaymentPick> {
    let caller = prop_oneof![
        6 => Just(CallerGen::Platform),
        3 => Just(CallerGen::Owner),
        1 => any::<usize>().prop_map(CallerGen::Merchant),
    ];
    (
        any::<usize>(),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.05),
        caller,
    )
        .prop_map(|(which, any, unknown, caller)| PaymentPick {
            which,
            any,
            unknown,
            caller,
        })
}

fn capture_amount_strategy() -> impl Strategy<Value = CaptureAmount> {
    prop_oneof![
        3 => Just(CaptureAmount::Whole),
        3 => (1u8..=100).prop_map(CaptureAmount::Part),
        1 => Just(CaptureAmount::Exact),
        2 => Just(CaptureAmount::Over),
    ]
}

fn refund_amount_strategy() -> impl Strategy<Value = RefundAmount> {
    prop_oneof![
        3 => Just(RefundAmount::Rest),
        4 => (1u8..=100).prop_map(RefundAmount::Part),
        1 => Just(RefundAmount::Exact),
        2 => Just(RefundAmount::Over),
    ]
}

/// The operations; bursts only when `bursts`. Built as `prop_oneof!` builds a union of more
/// than ten (one boxed strategy each), so a backend without bursts draws exactly the cases it
/// drew before bursts were added.
fn op_strategy(bursts: bool) -> impl Strategy<Value = Op> {
    let work = prop_oneof![
        6 => Just(WorkMode::Process),
        2 => Just(WorkMode::CrashAfterClaim),
        2 => Just(WorkMode::CrashAfterCommit),
        1 => Just(WorkMode::DropUntouched),
    ];
    // Mostly the boundaries of the lease, the sweep deadline and the key lock timeout.
    let secs = prop_oneof![
        3 => prop::sample::select(vec![1u64, 29, 30, 31, 59, 60, 61, 90]),
        1 => 1u64..=180,
    ];
    let mut ops: Vec<(u32, BoxedStrategy<Op>)> = vec![
        (
            3,
            (0..CURRENCIES.len())
                .prop_map(|currency| Op::Onboard { currency })
                .boxed(),
        ),
        (
            3,
            (0..CURRENCIES.len(), prop::option::of(any::<usize>()))
                .prop_map(|(currency, merchant)| Op::OpenAccount { currency, merchant })
                .boxed(),
        ),
        (30, pay_strategy().prop_map(Op::Pay).boxed()),
        (
            6,
            (any::<usize>(), any::<bool>())
                .prop_map(|(which, change_body)| Op::Resend { which, change_body })
                .boxed(),
        ),
        (
            4,
            any::<usize>()
                .prop_map(|which| Op::LateSubmit { which })
                .boxed(),
        ),
        (
            4,
            (
                any::<usize>(),
                prop::bool::weighted(0.3),
                prop::option::of(prop::sample::select(vec![59u64, 60, 61])),
            )
                .prop_map(|(which, abandon, after)| Op::RetryAbandoned {
                    which,
                    abandon,
                    after,
                })
                .boxed(),
        ),
        (25, work.prop_map(Op::Work).boxed()),
        (
            5,
            (any::<usize>(), prop::bool::weighted(0.2))
                .prop_map(|(which, unknown)| Op::Redeliver { which, unknown })
                .boxed(),
        ),
        (2, Just(Op::Flush).boxed()),
        (1, Just(Op::FlushAll).boxed()),
        (12, secs.prop_map(|secs| Op::Advance { secs }).boxed()),
        (6, Just(Op::Sweep).boxed()),
        (
            14,
            (pick_strategy(), capture_amount_strategy())
                .prop_map(|(pick, amount)| Op::Capture { pick, amount })
                .boxed(),
        ),
        (
            4,
            pick_strategy().prop_map(|pick| Op::Cancel { pick }).boxed(),
        ),
        (
            10,
            (pick_strategy(), refund_amount_strategy())
                .prop_map(|(pick, amount)| Op::Refund { pick, amount })
                .boxed(),
        ),
        (
            3,
            (prop::sample::select(vec![-1i8, 0, 1]), any::<bool>())
                .prop_map(|(offset, sweep)| Op::Expire { offset, sweep })
                .boxed(),
        ),
        (
            2,
            (any::<usize>(), prop::bool::weighted(0.2))
                .prop_map(|(which, unknown)| Op::RedeliverRefund { which, unknown })
                .boxed(),
        ),
    ];
    if bursts {
        let burst = prop::collection::vec(pay_strategy(), 2..6).prop_map(Op::Burst);
        ops.insert(3, (4, burst.boxed()));
    }
    prop::strategy::Union::new_weighted(ops)
}

#[derive(Clone, Debug)]
struct Case {
    first_currency: usize,
    ops: Vec<Op>,
}

fn case_strategy(bursts: bool) -> impl Strategy<Value = Case> {
    (
        0..CURRENCIES.len(),
        prop::collection::vec(op_strategy(bursts), 1..60),
    )
        .prop_map(|(first_currency, ops)| Case {
            first_currency,
            ops,
        })
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// A payment's state in the model; times are model time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MStatus {
    Pending,
    /// Charging or authorizing, held under a lease that runs out at `until`.
    Processing {
        until: Duration,
    },
    /// Authorized at `at`; waits for its merchant (capture or cancel) or its expiry.
    Authorized {
        at: Duration,
    },
    /// A capture of `amount` accepted; held under a lease until `until`, or by nobody yet.
    Capturing {
        amount: i64,
        until: Option<Duration>,
    },
    Succeeded {
        captured: i64,
    },
    Failed(FailureReason),
    Canceled(CancellationReason),
}

impl MStatus {
    fn status(&self) -> PaymentStatus {
        self.state().status()
    }

    /// The state the store must show.
    fn state(&self) -> PaymentState {
        let amount = |n: i64| Amount::new(n).expect("a positive amount");
        match *self {
            MStatus::Pending => PaymentState::Pending,
            MStatus::Processing { .. } => PaymentState::Processing,
            MStatus::Authorized { .. } => PaymentState::Authorized,
            MStatus::Capturing { amount: a, .. } => PaymentState::Capturing(amount(a)),
            MStatus::Succeeded { captured } => PaymentState::Success(amount(captured)),
            MStatus::Failed(reason) => PaymentState::Failed(reason),
            MStatus::Canceled(reason) => PaymentState::Canceled(reason),
        }
    }

    /// Whether no worker has anything left to do (an authorization waits for its merchant).
    fn resting(&self) -> bool {
        !matches!(
            self,
            MStatus::Pending | MStatus::Processing { .. } | MStatus::Capturing { .. }
        )
    }

    fn captured(&self) -> i64 {
        match self {
            MStatus::Succeeded { captured } => *captured,
            _ => 0,
        }
    }
}

#[derive(Clone, Debug)]
struct MPayment {
    id: PaymentId,
    account: AccountId,
    currency: Currency,
    amount: i64,
    token: &'static str,
    manual: bool,
    status: MStatus,
    /// When the store last touched it (created, claimed, swept or asked to capture).
    touched: Duration,
    /// The sum of its refunds that are not `FAILED`.
    reserved: i64,
    /// The sum of its `SUCCESS` refunds.
    refunded: i64,
}

/// A refund's state in the model. With test-mode cards and balances that always cover the
/// refunds reserved on them, every refund a worker settles succeeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RStatus {
    Pending,
    Processing { until: Duration },
    Succeeded,
}

impl RStatus {
    fn state(&self) -> RefundState {
        match self {
            RStatus::Pending => RefundState::Pending,
            RStatus::Processing { .. } => RefundState::Processing,
            RStatus::Succeeded => RefundState::Success,
        }
    }
}

#[derive(Clone, Debug)]
struct MRefund {
    id: RefundId,
    payment: PaymentId,
    amount: i64,
    status: RStatus,
    /// When the store last touched it (created, claimed or swept).
    touched: Duration,
}

/// What claiming a job answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MClaim {
    Claimed,
    Busy,
    Finished,
    Missing,
}

/// Why a capture, cancel or refund is refused, in API.md's order of checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// 404.
    NotFound,
    /// 409 `invalid_state`, naming the status found.
    InvalidState(PaymentStatus),
    /// 422 `amount_exceeds_capturable`.
    ExceedsCapturable,
    /// 422 `amount_exceeds_refundable`.
    ExceedsRefundable,
}

impl Refusal {
    fn is(&self, error: &Error) -> bool {
        match (self, error) {
            (Refusal::NotFound, Error::NotFound)
            | (Refusal::ExceedsCapturable, Error::AmountExceedsCapturable)
            | (Refusal::ExceedsRefundable, Error::AmountExceedsRefundable) => true,
            (Refusal::InvalidState(expected), Error::InvalidState { status }) => expected == status,
            _ => false,
        }
    }
}

#[derive(Clone, Debug)]
struct MAccount {
    id: AccountId,
    owner: Owner,
    currency: Currency,
}

#[derive(Clone, Debug)]
struct MMerchant {
    id: MerchantId,
    primary: AccountId,
}

#[derive(Clone, Debug)]
struct MRecord {
    fingerprint: Fingerprint,
    token: atomic_core::idempotency::ClaimToken,
    locked_at: Duration,
    response: Option<Bytes>,
    payment: Option<PaymentId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Account(AccountId),
    Primary,
    World,
    Unknown(AccountId),
}

#[derive(Clone, Debug)]
struct Request {
    caller: Principal,
    target: Target,
    amount: i64,
    currency: Currency,
    token: &'static str,
    key: Option<String>,
    manual: bool,
}

impl Request {
    fn fingerprint(&self) -> Fingerprint {
        let body = format!(
            "{:?}|{}|{}|{}|{}",
            self.target, self.amount, self.currency, self.token, self.manual
        );
        Fingerprint::of("POST", "/api/v1/payments", body.as_bytes())
    }
}

#[derive(Debug)]
enum ExpectedClaim {
    Acquired,
    TakenOver,
    Replay(Bytes),
    Mismatch,
    InProgress,
}

#[derive(Debug)]
enum Expected {
    Validation,
    MerchantNotFound,
    Forbidden,
    CurrencyMismatch { account: Currency },
}

/// What the model knows; `now` is the time since the case started.
#[derive(Default)]
struct Model {
    now: Duration,
    accounts: Vec<MAccount>,
    merchants: Vec<MMerchant>,
    payments: Vec<MPayment>,
    index: HashMap<PaymentId, usize>,
    refunds: Vec<MRefund>,
    refund_index: HashMap<RefundId, usize>,
    records: HashMap<(Principal, String), MRecord>,
    /// Keyed requests sent so far, to send again.
    history: Vec<Request>,
    /// Claims whose client died before storing; with its request, the payment it had
    /// prepared, and when it claimed.
    abandoned: Vec<(Claim, Request, Option<Fresh<Payment>>, Duration)>,
    /// Jobs waiting in the queue: (job, attempt). Order is not modelled.
    ready: Vec<(Job, u32)>,
    /// Reserved jobs by receipt: (job, attempt, visible again at).
    in_flight: HashMap<String, (Job, u32, Duration)>,
    dead_letters: usize,
    /// How often each interesting path ran (to check the generator reaches them).
    seen: HashMap<&'static str, usize>,
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

fn positive(minor_units: i64) -> Amount {
    Amount::new(minor_units).expect("a positive amount")
}

impl Model {
    fn saw(&mut self, what: &'static str) {
        *self.seen.entry(what).or_default() += 1;
    }

    fn lock_timeout(sut: &Sut) -> Duration {
        sut.config.idempotency.lock_timeout
    }

    fn account(&self, id: AccountId) -> Option<&MAccount> {
        self.accounts.iter().find(|a| a.id == id)
    }

    fn resolve(&self, op: &PayOp) -> Request {
        let merchant = |i: usize| self.merchants.get(i % self.merchants.len().max(1));
        let base_account = match op.target {
            TargetGen::Account(i) => Some(&self.accounts[i % self.accounts.len()]),
            _ => None,
        };
        let caller = match (&op.caller, &op.target, base_account) {
            (CallerGen::Platform, _, _) => Principal::Platform,
            (CallerGen::Owner, _, Some(account)) => match account.owner {
                Owner::Platform => Principal::Platform,
                Owner::Merchant(m) => Principal::Merchant(m),
            },
            (CallerGen::Owner, TargetGen::Primary(i), None) | (CallerGen::Merchant(i), _, _) => {
                merchant(*i).map_or(Principal::Platform, |m| Principal::Merchant(m.id))
            }
            (CallerGen::Owner, _, None) => Principal::Platform,
        };
        let base_currency = match (&op.target, base_account, caller) {
            (_, Some(account), _) => account.currency,
            (TargetGen::Primary(_), _, Principal::Merchant(m)) => self
                .merchants
                .iter()
                .find(|x| x.id == m)
                .and_then(|x| self.account(x.primary))
                .map_or(Currency::USD, |a| a.currency),
            _ => Currency::USD,
        };
        let position = CURRENCIES
            .iter()
            .position(|c| *c == base_currency)
            .unwrap_or(0);
        let currency = CURRENCIES[(position + op.currency_shift) % CURRENCIES.len()];
        let target = match op.target {
            TargetGen::Account(_) => Target::Account(
                base_account
                    .map(|a| a.id)
                    .unwrap_or_else(AccountId::generate),
            ),
            TargetGen::Primary(_) => Target::Primary,
            TargetGen::World => Target::World,
            TargetGen::Unknown => Target::Unknown(AccountId::generate()),
        };
        Request {
            caller,
            target,
            amount: op.amount,
            currency,
            token: TOKENS[op.token],
            key: op.key.map(|k| format!("key-{k}")),
            manual: op.manual,
        }
    }

    /// What `PaymentService::prepare` must answer, in its documented order of checks.
    fn expect_prepare(&self, req: &Request) -> Result<MAccount, Expected> {
        if req.amount > MAX_PAYMENT_AMOUNT {
            return Err(Expected::Validation);
        }
        let account = match (&req.target, req.caller) {
            (Target::Account(id), _) => self.account(*id).cloned(),
            (Target::Primary, Principal::Platform) => return Err(Expected::Validation),
            (Target::Primary, Principal::Merchant(m)) => self
                .merchants
                .iter()
                .find(|x| x.id == m)
                .and_then(|x| self.account(x.primary))
                .cloned(),
            (Target::World | Target::Unknown(_), _) => None,
        };
        let account = account.ok_or(Expected::MerchantNotFound)?;
        if !req.caller.can_access(account.owner) {
            return Err(Expected::Forbidden);
        }
        if account.currency != req.currency {
            return Err(Expected::CurrencyMismatch {
                account: account.currency,
            });
        }
        Ok(account)
    }

    fn add_payment(&mut self, payment: &Payment, token: &'static str) {
        self.index.insert(payment.id, self.payments.len());
        self.payments.push(MPayment {
            id: payment.id,
            account: payment.merchant_account,
            currency: payment.currency,
            amount: payment.amount.minor_units(),
            token,
            manual: payment.capture_method == CaptureMethod::Manual,
            status: MStatus::Pending,
            touched: self.now,
            reserved: 0,
            refunded: 0,
        });
        self.ready.push((Job::Payment(payment.id), 1));
    }

    fn add_refund(&mut self, refund: &Refund) {
        let amount = refund.amount.minor_units();
        self.refund_index.insert(refund.id, self.refunds.len());
        self.refunds.push(MRefund {
            id: refund.id,
            payment: refund.payment_id,
            amount,
            status: RStatus::Pending,
            touched: self.now,
        });
        let i = self.index[&refund.payment_id];
        self.payments[i].reserved += amount;
        self.ready.push((Job::Refund(refund.id), 1));
    }

    /// Applies the lazy part of the queue: jobs whose visibility ran out are waiting again.
    fn expire_in_flight(&mut self) {
        let now = self.now;
        let expired: Vec<String> = self
            .in_flight
            .iter()
            .filter(|(_, (_, _, until))| *until <= now)
            .map(|(receipt, _)| receipt.clone())
            .collect();
        for receipt in expired {
            if let Some((job, attempt, _)) = self.in_flight.remove(&receipt) {
                self.ready.push((job, attempt + 1));
            }
        }
    }

    /// What claiming `job` under a lease of `lease` answers now; a claim is applied.
    fn claim(&mut self, job: Job, lease: Duration) -> MClaim {
        let now = self.now;
        match job {
            Job::Payment(id) => {
                let Some(&i) = self.index.get(&id) else {
                    return MClaim::Missing;
                };
                let p = &mut self.payments[i];
                let held = Some(now + lease);
                p.status = match p.status {
                    MStatus::Pending => MStatus::Processing { until: now + lease },
                    MStatus::Processing { until } if until > now => return MClaim::Busy,
                    MStatus::Processing { .. } => MStatus::Processing { until: now + lease },
                    MStatus::Capturing {
                        until: Some(until), ..
                    } if until > now => return MClaim::Busy,
                    MStatus::Capturing { amount, .. } => MStatus::Capturing {
                        amount,
                        until: held,
                    },
                    _ => return MClaim::Finished,
                };
                p.touched = now;
            }
            Job::Refund(id) => {
                let Some(&i) = self.refund_index.get(&id) else {
                    return MClaim::Missing;
                };
                let r = &mut self.refunds[i];
                r.status = match r.status {
                    RStatus::Processing { until } if until > now => return MClaim::Busy,
                    RStatus::Pending | RStatus::Processing { .. } => {
                        RStatus::Processing { until: now + lease }
                    }
                    RStatus::Succeeded => return MClaim::Finished,
                };
                r.touched = now;
            }
        }
        MClaim::Claimed
    }

    /// How a claimed job settles: the test-card table decides charges and authorizations;
    /// captures and refunds always succeed.
    fn settle(&mut self, job: Job) -> Processed {
        let now = self.now;
        match job {
            Job::Payment(id) => {
                let p = &mut self.payments[self.index[&id]];
                let capture = matches!(p.status, MStatus::Capturing { .. });
                p.status = match (p.status, token_outcome(p.token)) {
                    (MStatus::Capturing { amount, .. }, _) => {
                        MStatus::Succeeded { captured: amount }
                    }
                    (_, (PaymentStatus::Success, _)) if p.manual => MStatus::Authorized { at: now },
                    (_, (PaymentStatus::Success, _)) => MStatus::Succeeded { captured: p.amount },
                    (_, (_, reason)) => {
                        MStatus::Failed(reason.expect("a declined token has its reason"))
                    }
                };
                let status = p.status.status();
                if capture {
                    self.saw("worker: capture settled");
                }
                Processed::Settled(status)
            }
            Job::Refund(id) => {
                let r = &mut self.refunds[self.refund_index[&id]];
                r.status = RStatus::Succeeded;
                let (payment, amount) = (r.payment, r.amount);
                let i = self.index[&payment];
                self.payments[i].refunded += amount;
                Processed::RefundSettled(RefundStatus::Success)
            }
        }
    }

    /// What `Worker::process_batch` of these deliveries must do; applies it to the model.
    /// First every job is claimed, in order, under one lease (a job delivered twice in the
    /// batch is claimed by the first and busy for the second), then the claimed ones are
    /// settled together.
    fn process_batch(&mut self, deliveries: &[Delivery], lease: Duration) -> Vec<Processed> {
        // Attempts change nothing here: the test-mode card network always answers and the
        // store is always up, so every attempt, the last one too, ends as the first would.
        let mut outcomes = Vec::with_capacity(deliveries.len());
        let mut claimed = Vec::new();
        for (slot, delivery) in deliveries.iter().enumerate() {
            outcomes.push(match self.claim(delivery.job, lease) {
                MClaim::Missing => Processed::Missing,
                MClaim::Busy => Processed::Busy,
                MClaim::Finished => Processed::AlreadyFinished,
                MClaim::Claimed => {
                    claimed.push(slot);
                    Processed::Busy // replaced below
                }
            });
        }
        for slot in claimed {
            outcomes[slot] = self.settle(deliveries[slot].job);
        }
        outcomes
    }

    /// The payment a capture, cancel or refund names: mostly one `wanted`, sometimes any;
    /// `None` for an unknown id.
    fn pick(&self, pick: &PaymentPick, wanted: impl Fn(&MPayment) -> bool) -> Option<usize> {
        if pick.unknown || self.payments.is_empty() {
            return None;
        }
        let candidates: Vec<usize> = (0..self.payments.len())
            .filter(|&i| wanted(&self.payments[i]))
            .collect();
        if pick.any || candidates.is_empty() {
            Some(pick.which % self.payments.len())
        } else {
            Some(candidates[pick.which % candidates.len()])
        }
    }

    /// Who asks, for a picked payment.
    fn pick_caller(&self, pick: &PaymentPick, payment: Option<usize>) -> Principal {
        let owner = payment
            .and_then(|i| self.account(self.payments[i].account))
            .map(|a| a.owner);
        match (&pick.caller, owner) {
            (CallerGen::Owner, Some(Owner::Merchant(m))) => Principal::Merchant(m),
            (CallerGen::Merchant(i), _) if !self.merchants.is_empty() => {
                Principal::Merchant(self.merchants[i % self.merchants.len()].id)
            }
            _ => Principal::Platform,
        }
    }

    /// The payment `caller` may see, if it exists.
    fn visible(&self, caller: Principal, id: PaymentId) -> Option<&MPayment> {
        let p = &self.payments[*self.index.get(&id)?];
        let owner = self.account(p.account)?.owner;
        caller.can_access(owner).then_some(p)
    }

    /// Whether payment `id` is an authorization whose TTL ends exactly now.
    fn expires_now(&self, id: PaymentId, ttl: Duration) -> bool {
        self.index.get(&id).is_some_and(|&i| {
            matches!(self.payments[i].status, MStatus::Authorized { at } if at + ttl == self.now)
        })
    }

    /// What `prepare_capture` must answer: the amount to capture, or the refusal.
    fn expect_capture(
        &self,
        caller: Principal,
        id: PaymentId,
        requested: Option<i64>,
        ttl: Duration,
    ) -> Result<i64, Refusal> {
        let p = self.visible(caller, id).ok_or(Refusal::NotFound)?;
        match p.status {
            // Past the TTL an authorization counts as gone, before any sweep.
            MStatus::Authorized { at } if at + ttl > self.now => {}
            status => return Err(Refusal::InvalidState(status.status())),
        }
        let amount = requested.unwrap_or(p.amount);
        if amount > p.amount {
            return Err(Refusal::ExceedsCapturable);
        }
        Ok(amount)
    }

    /// What `prepare_cancel` must answer.
    fn expect_cancel(&self, caller: Principal, id: PaymentId) -> Result<(), Refusal> {
        let p = self.visible(caller, id).ok_or(Refusal::NotFound)?;
        match p.status {
            MStatus::Authorized { .. } => Ok(()),
            status => Err(Refusal::InvalidState(status.status())),
        }
    }

    /// What `RefundService::prepare` must answer: the amount to refund, or the refusal.
    fn expect_refund(
        &self,
        caller: Principal,
        id: PaymentId,
        requested: Option<i64>,
    ) -> Result<i64, Refusal> {
        let p = self.visible(caller, id).ok_or(Refusal::NotFound)?;
        let MStatus::Succeeded { captured } = p.status else {
            return Err(Refusal::InvalidState(p.status.status()));
        };
        let refundable = captured - p.reserved;
        match requested {
            None if refundable == 0 => Err(Refusal::ExceedsRefundable),
            None => Ok(refundable),
            Some(amount) if amount > refundable => Err(Refusal::ExceedsRefundable),
            Some(amount) => Ok(amount),
        }
    }

    /// What an account holds: what its payments captured, less what was refunded of them.
    fn expected_balance(&self, account: AccountId) -> i64 {
        self.payments
            .iter()
            .filter(|p| p.account == account)
            .map(|p| p.status.captured() - p.refunded)
            .sum()
    }

    /// Minus what the merchant accounts of `currency` hold.
    fn expected_world(&self, currency: Currency) -> i64 {
        -self
            .payments
            .iter()
            .filter(|p| p.currency == currency)
            .map(|p| p.status.captured() - p.refunded)
            .sum::<i64>()
    }
}

// ---------------------------------------------------------------------------------------------
// Driving one case
// ---------------------------------------------------------------------------------------------

fn response_body(payment: &Payment) -> Bytes {
    Bytes::from(format!(
        "{{\"id\":\"{}\",\"merchantId\":\"{}\",\"amount\":{},\"currency\":\"{}\",\"status\":\"{}\"}}",
        payment.id,
        payment.merchant_account,
        payment.amount,
        payment.currency,
        payment.status()
    ))
}

struct Runner {
    sut: Sut,
    model: Model,
}

/// A request whose payment is prepared (and key claimed): what its submit needs.
struct Ready {
    req: Request,
    payment: Fresh<Payment>,
    body: Bytes,
    completion: Option<Completion>,
}

impl Runner {
    async fn new<B: Backend>(first_currency: Currency) -> Self {
        let sut = Sut::new::<B>().await;
        let mut runner = Self {
            sut,
            model: Model::default(),
        };
        runner.open_account(first_currency, None).await;
        runner.onboard(first_currency).await;
        runner
    }

    async fn onboard(&mut self, currency: Currency) {
        let name = MerchantName::parse(format!("Merchant {}", self.model.merchants.len()))
            .expect("a valid name");
        let (onboarding, raw) = self
            .sut
            .services
            .merchants
            .prepare(Principal::Platform, name, currency)
            .expect("the platform onboards");
        self.sut
            .services
            .merchants
            .submit(&onboarding, None)
            .await
            .expect("onboarding is stored");
        let id = onboarding.merchant.id;
        assert_eq!(
            self.sut
                .services
                .api_keys
                .authenticate(raw.expose())
                .await
                .expect("authenticate"),
            Some(Principal::Merchant(id)),
            "the first key of a new merchant authenticates it"
        );
        self.model.merchants.push(MMerchant {
            id,
            primary: onboarding.account.id,
        });
        self.model.accounts.push(MAccount {
            id: onboarding.account.id,
            owner: Owner::Merchant(id),
            currency,
        });
    }

    async fn open_account(&mut self, currency: Currency, merchant: Option<usize>) {
        let caller = match merchant {
            Some(i) if !self.model.merchants.is_empty() => {
                Principal::Merchant(self.model.merchants[i % self.model.merchants.len()].id)
            }
            _ => Principal::Platform,
        };
        let name = AccountName::parse(format!("Account {}", self.model.accounts.len()))
            .expect("a valid name");
        let account = self.sut.services.accounts.prepare(caller, name, currency);
        self.sut
            .services
            .accounts
            .submit(&account, None)
            .await
            .expect("account stored");
        self.model.accounts.push(MAccount {
            id: account.id,
            owner: caller.as_owner(),
            currency,
        });
    }

    /// One payment request through the store's claim path: claim the key, prepare, then submit
    /// with the completion (or release the key on a refusal). The services write without a
    /// claim first and claim only to read a taken key; the claim path is the one with the
    /// most states, so the model drives it.
    async fn send(&mut self, req: Request, abandon: bool) -> Result<(), TestCaseError> {
        let Some(ready) = self.claim_and_prepare(req, abandon).await? else {
            return Ok(());
        };
        let submitted = self
            .sut
            .services
            .payments
            .submit(&ready.payment, ready.completion.clone())
            .await;
        self.submitted(ready, submitted)
    }

    /// Requests claimed and prepared one after the other, then submitted all at once.
    async fn burst(&mut self, ops: &[PayOp]) -> Result<(), TestCaseError> {
        let mut ready = Vec::new();
        for op in ops {
            let req = self.model.resolve(op);
            if let Some(r) = self.claim_and_prepare(req, op.abandon).await? {
                ready.push(r);
            }
        }
        let mut submits = tokio::task::JoinSet::new();
        for (i, r) in ready.iter().enumerate() {
            let (services, payment, completion) = (
                self.sut.services.clone(),
                r.payment.clone(),
                r.completion.clone(),
            );
            submits.spawn(async move { (i, services.payments.submit(&payment, completion).await) });
        }
        let mut results: Vec<Option<atomic_core::Result<()>>> =
            ready.iter().map(|_| None).collect();
        while let Some(joined) = submits.join_next().await {
            let (i, result) = joined.expect("a submit task");
            results[i] = Some(result);
        }
        if ready.len() > 1 {
            self.model.saw("burst: submitted together");
        }
        for (r, result) in ready.into_iter().zip(results) {
            self.submitted(r, result.expect("every submit answered"))?;
        }
        Ok(())
    }

    /// The model's side of a submitted payment.
    fn submitted(
        &mut self,
        ready: Ready,
        submitted: atomic_core::Result<()>,
    ) -> Result<(), TestCaseError> {
        let Ready {
            req,
            payment,
            body,
            completion: _,
        } = ready;
        submitted.map_err(|e| fail(format!("submit of a valid payment failed: {e:?}")))?;
        self.model.add_payment(&payment, req.token);
        if let Some(key) = &req.key
            && let Some(record) = self.model.records.get_mut(&(req.caller, key.clone()))
        {
            record.response = Some(body);
            record.payment = Some(payment.id);
        }
        Ok(())
    }

    /// Claims the request's key (if any) and prepares its payment, checking both against the
    /// model; the payment ready to submit, or `None` when the request ends before that.
    async fn claim_and_prepare(
        &mut self,
        req: Request,
        abandon: bool,
    ) -> Result<Option<Ready>, TestCaseError> {
        let now = self.model.now;
        let fingerprint = req.fingerprint();
        let mut claim = None;
        if let Some(key) = &req.key {
            self.model.history.push(req.clone());
            let idem_key = IdempotencyKey::parse(key.clone()).expect("a valid key");
            let outcome = self
                .sut
                .services
                .claim_idempotency_key(req.caller, &idem_key, fingerprint)
                .await
                .map_err(|e| fail(format!("claim failed: {e:?}")))?;
            let scoped = (req.caller, key.clone());
            let lock_timeout = Model::lock_timeout(&self.sut);
            // The model decides first what the claim must answer, then the store is compared.
            let expected = match self.model.records.get(&scoped) {
                None => ExpectedClaim::Acquired,
                // An unfinished claim past its lock timeout created nothing: any body takes it over.
                Some(r)
                    if r.response.is_none() && now.saturating_sub(r.locked_at) >= lock_timeout =>
                {
                    ExpectedClaim::TakenOver
                }
                Some(r) if r.fingerprint != fingerprint => ExpectedClaim::Mismatch,
                Some(MRecord {
                    response: Some(body),
                    ..
                }) => ExpectedClaim::Replay(body.clone()),
                Some(_) => ExpectedClaim::InProgress,
            };
            match (expected, outcome) {
                (ExpectedClaim::Mismatch, ClaimOutcome::Mismatch) => {
                    self.model.saw("claim: mismatch");
                    return Ok(None);
                }
                (ExpectedClaim::Replay(body), ClaimOutcome::Replay(stored)) => {
                    prop_assert_eq!(stored.status, 202);
                    prop_assert_eq!(
                        stored.body,
                        body,
                        "a replay returns exactly the stored bytes"
                    );
                    self.model.saw("claim: replay");
                    return Ok(None);
                }
                (ExpectedClaim::InProgress, ClaimOutcome::InProgress) => {
                    self.model.saw("claim: in progress");
                    return Ok(None);
                }
                (
                    expected @ (ExpectedClaim::Acquired | ExpectedClaim::TakenOver),
                    ClaimOutcome::Acquired(acquired),
                ) => {
                    self.model.saw(match expected {
                        ExpectedClaim::TakenOver => "claim: taken over",
                        _ => "claim: acquired",
                    });
                    prop_assert_eq!(acquired.scope, req.caller);
                    prop_assert_eq!(acquired.key.as_str(), key.as_str());
                    self.model.records.insert(
                        scoped,
                        MRecord {
                            fingerprint,
                            token: acquired.token,
                            locked_at: now,
                            response: None,
                            payment: None,
                        },
                    );
                    claim = Some(acquired);
                }
                (expected, outcome) => {
                    return Err(fail(format!(
                        "claim of {key:?} by {}: model expects {expected:?}, store answered {outcome:?}",
                        req.caller
                    )));
                }
            }
        }

        let system = self.sut.system_account(req.currency).await.id;
        let request = PaymentRequest {
            merchant_account: match &req.target {
                Target::Account(id) | Target::Unknown(id) => Some(*id),
                Target::World => Some(system),
                Target::Primary => None,
            },
            amount: Amount::new(req.amount).expect("positive"),
            currency: req.currency,
            source: CardSource::parse(req.token).expect("a valid token"),
            description: None,
            capture_method: if req.manual {
                CaptureMethod::Manual
            } else {
                CaptureMethod::Automatic
            },
            metadata: Metadata::default(),
        };
        let expected = self.model.expect_prepare(&req);
        let prepared = self
            .sut
            .services
            .payments
            .prepare(req.caller, request, claim.as_ref())
            .await;
        let payment = match (expected, prepared) {
            (Ok(account), Ok(payment)) => {
                prop_assert_eq!(payment.merchant_account, account.id);
                prop_assert_eq!(payment.owner, account.owner);
                prop_assert_eq!(payment.amount.minor_units(), req.amount);
                prop_assert_eq!(payment.currency, req.currency);
                prop_assert_eq!(payment.created_by, req.caller);
                prop_assert_eq!(payment.status(), PaymentStatus::Pending);
                prop_assert_eq!(payment.capture_method == CaptureMethod::Manual, req.manual);
                prop_assert_eq!(
                    payment
                        .idempotency_key
                        .as_ref()
                        .map(|k| k.as_str().to_owned()),
                    req.key.clone()
                );
                payment
            }
            (Err(expected), Err(actual)) => {
                let same = match (&expected, &actual) {
                    (Expected::Validation, Error::Validation(_))
                    | (Expected::MerchantNotFound, Error::MerchantNotFound)
                    | (Expected::Forbidden, Error::Forbidden) => true,
                    (
                        Expected::CurrencyMismatch { account },
                        Error::CurrencyMismatch {
                            account: a,
                            payment,
                        },
                    ) => a == account && *payment == req.currency,
                    _ => false,
                };
                prop_assert!(same, "{:?}: expected {:?}, got {:?}", req, expected, actual);
                self.model.saw(match expected {
                    Expected::Validation => "refused: validation",
                    Expected::MerchantNotFound => "refused: not found",
                    Expected::Forbidden => "refused: forbidden",
                    Expected::CurrencyMismatch { .. } => "refused: currency mismatch",
                });
                if let Some(claim) = claim {
                    if abandon {
                        self.model.abandoned.push((claim, req.clone(), None, now));
                    } else {
                        // An error releases the key: the request never happened.
                        self.sut
                            .services
                            .release_idempotency_key(&claim)
                            .await
                            .map_err(|e| fail(format!("release failed: {e:?}")))?;
                        self.model
                            .records
                            .remove(&(claim.scope, claim.key.as_str().to_owned()));
                    }
                }
                return Ok(None);
            }
            (expected, actual) => {
                return Err(fail(format!(
                    "{req:?}: model expected {expected:?}, prepare answered {actual:?}"
                )));
            }
        };
        if abandon {
            if let Some(claim) = claim {
                self.model
                    .abandoned
                    .push((claim, req.clone(), Some(payment), now));
            }
            return Ok(None);
        }
        let body = response_body(&payment);
        let completion = claim.map(|claim| Completion {
            claim,
            fingerprint,
            policy: self.sut.config.idempotency,
            response: StoredResponse {
                status: 202,
                body: body.clone(),
            },
        });
        Ok(Some(Ready {
            req,
            payment,
            body,
            completion,
        }))
    }

    async fn late_submit(&mut self, which: usize) -> Result<(), TestCaseError> {
        if self.model.abandoned.is_empty() {
            return Ok(());
        }
        let (claim, req, payment, _) = self
            .model
            .abandoned
            .remove(which % self.model.abandoned.len());
        let Some(payment) = payment else {
            return Ok(());
        };
        let scoped = (claim.scope, claim.key.as_str().to_owned());
        let (now, lock_timeout) = (self.model.now, Model::lock_timeout(&self.sut));
        // Completion's rule: the key is free (absent, or unfinished past the lock timeout) or
        // still held unfinished by this claim.
        let held = self.model.records.get(&scoped).is_none_or(|r| {
            r.response.is_none()
                && (r.token == claim.token || now.saturating_sub(r.locked_at) >= lock_timeout)
        });
        let (token, fingerprint) = (claim.token, req.fingerprint());
        let body = response_body(&payment);
        let result = self
            .sut
            .services
            .payments
            .submit(
                &payment,
                Some(Completion {
                    claim,
                    fingerprint,
                    policy: self.sut.config.idempotency,
                    response: StoredResponse {
                        status: 202,
                        body: body.clone(),
                    },
                }),
            )
            .await;
        if held {
            prop_assert!(result.is_ok(), "a still-held claim completes: {:?}", result);
            self.model.saw("late submit: held or free");
            let card = payment.source.expose().to_owned();
            let card = TOKENS
                .iter()
                .copied()
                .find(|t| *t == card)
                .expect("a known token");
            self.model.add_payment(&payment, card);
            self.model.records.insert(
                scoped,
                MRecord {
                    fingerprint,
                    token,
                    locked_at: now,
                    response: Some(body),
                    payment: Some(payment.id),
                },
            );
        } else {
            prop_assert!(
                matches!(
                    result,
                    Err(Error::IdempotencyClaimLost | Error::Invariant(Invariant::DuplicateId))
                ),
                "a lost claim must store nothing, got {:?}",
                result
            );
            self.model.saw("late submit: lost");
        }
        Ok(())
    }

    async fn work(&mut self, mode: WorkMode) -> Result<(), TestCaseError> {
        // Whole worker steps take a batch; the crash after a claim is one job's.
        let max = match mode {
            WorkMode::Process | WorkMode::CrashAfterCommit => self.sut.batch,
            WorkMode::CrashAfterClaim | WorkMode::DropUntouched => 1,
        };
        let deliveries = self
            .sut
            .ports
            .queue
            .reserve(max, self.sut.lease, Duration::ZERO)
            .await
            .map_err(|e| fail(format!("reserve failed: {e:?}")))?;
        self.model.expire_in_flight();
        prop_assert_eq!(
            deliveries.len(),
            self.model.ready.len().min(max),
            "waiting jobs must be delivered, up to the batch: {:?}",
            deliveries
        );
        if deliveries.is_empty() {
            return Ok(());
        }
        for delivery in &deliveries {
            let Some(position) = self
                .model
                .ready
                .iter()
                .position(|&(job, attempt)| job == delivery.job && attempt == delivery.attempt)
            else {
                return Err(fail(format!(
                    "delivered {delivery:?}, which the model does not have waiting: {:?}",
                    self.model.ready
                )));
            };
            self.model.ready.swap_remove(position);
            if delivery.attempt > 1 {
                self.model.saw("redelivery");
            }
            self.model.in_flight.insert(
                delivery.receipt.clone(),
                (
                    delivery.job,
                    delivery.attempt,
                    self.model.now + self.sut.lease,
                ),
            );
        }
        match mode {
            WorkMode::Process | WorkMode::CrashAfterCommit => {
                let worker = match mode {
                    WorkMode::Process => &self.sut.worker,
                    _ => &self.sut.crashing_worker,
                };
                let got = match deliveries.as_slice() {
                    [delivery] => vec![worker.process(delivery).await],
                    batch => worker.process_batch(batch).await,
                };
                let expected = self.model.process_batch(&deliveries, self.sut.lease);
                prop_assert_eq!(&got, &expected, "processing {:?}", deliveries);
                let settled = got
                    .iter()
                    .filter(|p| matches!(p, Processed::Settled(_)))
                    .count();
                if settled > 1 {
                    self.model.saw("batch: several settled together");
                }
                let refunds = got
                    .iter()
                    .filter(|p| matches!(p, Processed::RefundSettled(_)))
                    .count();
                if settled > 0 && refunds > 0 {
                    self.model
                        .saw("batch: payments and refunds settled together");
                }
                for (delivery, got) in deliveries.iter().zip(&got) {
                    if matches!(mode, WorkMode::CrashAfterCommit) {
                        self.model.saw("crash after commit");
                        continue;
                    }
                    // Paths count only for workers that run to the end.
                    self.model.saw(processed_name(*got));
                    if delivery.attempt >= MAX_ATTEMPTS && matches!(got, Processed::Settled(_)) {
                        // The last attempt settles like any other when the network answers.
                        self.model.saw("worker: settled on its last attempt");
                    }
                    self.model.in_flight.remove(&delivery.receipt);
                }
            }
            WorkMode::CrashAfterClaim => self.crash_after_claim(deliveries[0].job).await?,
            WorkMode::DropUntouched => {}
        }
        Ok(())
    }

    /// A worker claims `job` (its claim committed) and dies before settling it.
    async fn crash_after_claim(&mut self, job: Job) -> Result<(), TestCaseError> {
        let (lease, duration) = (LeaseId::generate(), self.sut.lease);
        let settlement = self.sut.ports.store.settlement();
        let (got, state) = match job {
            Job::Payment(id) => {
                let begun = settlement
                    .begin_payments(&[id], lease, duration)
                    .await
                    .map_err(|e| fail(format!("begin_payments failed: {e:?}")))?;
                match begun.as_slice() {
                    [BeginOutcome::Claimed(p)] => {
                        (MClaim::Claimed, Some(format!("{:?}", p.state())))
                    }
                    [BeginOutcome::Finished(p)] => {
                        (MClaim::Finished, Some(format!("{:?}", p.state())))
                    }
                    [BeginOutcome::Busy] => (MClaim::Busy, None),
                    [BeginOutcome::Missing] => (MClaim::Missing, None),
                    other => return Err(fail(format!("begin_payments answered {other:?}"))),
                }
            }
            Job::Refund(id) => {
                let begun = settlement
                    .begin_refunds(&[id], lease, duration)
                    .await
                    .map_err(|e| fail(format!("begin_refunds failed: {e:?}")))?;
                match begun.as_slice() {
                    [RefundBegin::Claimed(r)] => {
                        (MClaim::Claimed, Some(format!("{:?}", r.state())))
                    }
                    [RefundBegin::Finished(r)] => {
                        (MClaim::Finished, Some(format!("{:?}", r.state())))
                    }
                    [RefundBegin::Busy] => (MClaim::Busy, None),
                    [RefundBegin::Missing] => (MClaim::Missing, None),
                    other => return Err(fail(format!("begin_refunds answered {other:?}"))),
                }
            }
        };
        let expected = self.model.claim(job, duration);
        prop_assert_eq!(got, expected, "claim of {:?}", job);
        let modelled = match job {
            Job::Payment(id) => self
                .model
                .index
                .get(&id)
                .map(|&i| format!("{:?}", self.model.payments[i].status.state())),
            Job::Refund(id) => self
                .model
                .refund_index
                .get(&id)
                .map(|&i| format!("{:?}", self.model.refunds[i].status.state())),
        };
        if state.is_some() {
            prop_assert_eq!(state, modelled, "state of {:?}", job);
        }
        if got == MClaim::Claimed {
            self.model.saw("crash after claim");
            let capturing = matches!(job, Job::Payment(id) if matches!(
                self.model.payments[self.model.index[&id]].status,
                MStatus::Capturing { .. }
            ));
            if capturing {
                self.model.saw("crash after claim: capture");
            }
            if matches!(job, Job::Refund(_)) {
                self.model.saw("crash after claim: refund");
            }
        }
        Ok(())
    }

    async fn sweep(&mut self) -> Result<(), TestCaseError> {
        let report = self
            .sut
            .sweeper
            .tick()
            .await
            .map_err(|e| fail(format!("sweep failed: {e:?}")))?;
        let (now, stale_after) = (self.model.now, self.sut.stale_after);
        let mut due = Vec::new();
        let mut captures = 0;
        for p in &mut self.model.payments {
            let lease_over = match p.status {
                MStatus::Pending => true,
                MStatus::Processing { until } => until <= now,
                MStatus::Capturing { until, .. } => until.is_none_or(|until| until <= now),
                _ => continue,
            };
            if lease_over && p.touched + stale_after <= now {
                p.touched = now;
                due.push(Job::Payment(p.id));
                captures += usize::from(matches!(p.status, MStatus::Capturing { .. }));
            }
        }
        let mut refunds = 0;
        for r in &mut self.model.refunds {
            let lease_over = match r.status {
                RStatus::Pending => true,
                RStatus::Processing { until } => until <= now,
                RStatus::Succeeded => continue,
            };
            if lease_over && r.touched + stale_after <= now {
                r.touched = now;
                due.push(Job::Refund(r.id));
                refunds += 1;
            }
        }
        // Every authorization at least AUTHORIZATION_TTL old is canceled, exactly once.
        let mut expired = 0;
        for p in &mut self.model.payments {
            if let MStatus::Authorized { at } = p.status
                && at + self.sut.authorization_ttl <= now
            {
                p.status = MStatus::Canceled(CancellationReason::Expired);
                expired += 1;
            }
        }
        prop_assert_eq!(report.requeued, due.len(), "jobs the sweep re-enqueues");
        prop_assert_eq!(report.expired, expired, "authorizations the sweep expires");
        prop_assert_eq!(report.purged_keys, 0, "no key is old enough to purge");
        if !due.is_empty() {
            self.model.saw("sweep: requeued");
        }
        if captures > 0 {
            self.model.saw("sweep: requeued capture");
        }
        if refunds > 0 {
            self.model.saw("sweep: requeued refund");
        }
        if expired > 0 {
            self.model.saw("sweep: expired");
        }
        self.model.ready.extend(due.into_iter().map(|job| (job, 1)));
        Ok(())
    }

    async fn redeliver(&mut self, which: usize, unknown: bool) {
        // Half the time a payment nobody has finished yet (a duplicate racing its holder).
        let open: Vec<PaymentId> = self
            .model
            .payments
            .iter()
            .filter(|p| !p.status.resting())
            .map(|p| p.id)
            .collect();
        let id = if unknown || self.model.payments.is_empty() {
            PaymentId::generate()
        } else if which.is_multiple_of(2) && !open.is_empty() {
            open[(which / 2) % open.len()]
        } else {
            self.model.payments[which % self.model.payments.len()].id
        };
        self.enqueue(Job::Payment(id)).await;
    }

    async fn redeliver_refund(&mut self, which: usize, unknown: bool) {
        let id = if unknown || self.model.refunds.is_empty() {
            RefundId::generate()
        } else {
            self.model.refunds[which % self.model.refunds.len()].id
        };
        self.enqueue(Job::Refund(id)).await;
    }

    async fn enqueue(&mut self, job: Job) {
        self.sut.ports.queue.enqueue(&[job]).await.expect("enqueue");
        self.model.ready.push((job, 1));
    }

    /// A capture request, checked against the model, then submitted.
    async fn capture(
        &mut self,
        pick: &PaymentPick,
        amount: CaptureAmount,
    ) -> Result<(), TestCaseError> {
        let picked = self
            .model
            .pick(pick, |p| matches!(p.status, MStatus::Authorized { .. }));
        let caller = self.model.pick_caller(pick, picked);
        let (id, authorized) = picked.map_or((PaymentId::generate(), 100), |i| {
            (self.model.payments[i].id, self.model.payments[i].amount)
        });
        let requested = match amount {
            CaptureAmount::Whole => None,
            CaptureAmount::Part(percent) => Some((authorized * i64::from(percent) / 100).max(1)),
            CaptureAmount::Exact => Some(authorized),
            CaptureAmount::Over => Some(authorized + 1),
        };
        let expected = self
            .model
            .expect_capture(caller, id, requested, self.sut.authorization_ttl);
        let payments = &self.sut.services.payments;
        let prepared = payments
            .prepare_capture(caller, id, requested.map(positive))
            .await;
        let captured = match (expected, prepared) {
            (Ok(captured), Ok(prepared)) => {
                prop_assert_eq!(
                    prepared.state(),
                    PaymentState::Capturing(positive(captured))
                );
                let stored = payments
                    .submit_capture(&prepared, None)
                    .await
                    .map_err(|e| fail(format!("an accepted capture failed: {e:?}")))?;
                prop_assert_eq!(stored.state(), PaymentState::Capturing(positive(captured)));
                captured
            }
            (Err(refusal), Err(error)) => {
                prop_assert!(
                    refusal.is(&error),
                    "capture: expected {:?}, got {:?}",
                    refusal,
                    error
                );
                self.model.saw(match refusal {
                    Refusal::NotFound => "capture: not found",
                    Refusal::InvalidState(PaymentStatus::Authorized) => "capture: too late",
                    Refusal::InvalidState(_) => "capture: invalid state",
                    _ => "capture: exceeds",
                });
                return Ok(());
            }
            (Err(Refusal::InvalidState(PaymentStatus::Authorized)), Ok(prepared))
                if self.model.expires_now(id, self.sut.authorization_ttl) =>
            {
                // A store that decides with its own clock stamps the authorization a little
                // later than the services' clock reads it: exactly at the TTL the services may
                // still take the capture, and the store, for which it has expired, refuses it.
                let submitted = payments.submit_capture(&prepared, None).await;
                prop_assert!(
                    matches!(
                        submitted,
                        Err(Error::InvalidState {
                            status: PaymentStatus::Authorized
                        })
                    ),
                    "a capture at the TTL: {:?}",
                    submitted
                );
                self.model.saw("capture: too late for the store");
                return Ok(());
            }
            (expected, got) => {
                return Err(fail(format!(
                    "capture of {id} by {caller} ({requested:?}): model {expected:?}, service {got:?}"
                )));
            }
        };
        let now = self.model.now;
        let p = &mut self.model.payments[self.model.index[&id]];
        let part = captured < p.amount;
        p.status = MStatus::Capturing {
            amount: captured,
            until: None,
        };
        p.touched = now;
        self.model.ready.push((Job::Payment(id), 1));
        self.model.saw(if part {
            "capture: part"
        } else {
            "capture: whole"
        });
        Ok(())
    }

    /// A cancel request, checked against the model, then submitted.
    async fn cancel(&mut self, pick: &PaymentPick) -> Result<(), TestCaseError> {
        let picked = self
            .model
            .pick(pick, |p| matches!(p.status, MStatus::Authorized { .. }));
        let caller = self.model.pick_caller(pick, picked);
        let id = picked.map_or_else(PaymentId::generate, |i| self.model.payments[i].id);
        let expected = self.model.expect_cancel(caller, id);
        let payments = &self.sut.services.payments;
        match (expected, payments.prepare_cancel(caller, id).await) {
            (Ok(()), Ok(prepared)) => {
                let stored = payments
                    .submit_cancel(&prepared, None)
                    .await
                    .map_err(|e| fail(format!("an accepted cancel failed: {e:?}")))?;
                let canceled = PaymentState::Canceled(CancellationReason::Requested);
                prop_assert_eq!(stored.state(), canceled);
                let p = &mut self.model.payments[self.model.index[&id]];
                p.status = MStatus::Canceled(CancellationReason::Requested);
                self.model.saw("cancel: accepted");
            }
            (Err(refusal), Err(error)) => {
                prop_assert!(
                    refusal.is(&error),
                    "cancel: expected {:?}, got {:?}",
                    refusal,
                    error
                );
                self.model.saw(match refusal {
                    Refusal::NotFound => "cancel: not found",
                    _ => "cancel: invalid state",
                });
            }
            (expected, got) => {
                return Err(fail(format!(
                    "cancel of {id} by {caller}: model {expected:?}, service {got:?}"
                )));
            }
        }
        Ok(())
    }

    /// A refund request, checked against the model, then submitted.
    async fn refund(
        &mut self,
        pick: &PaymentPick,
        amount: RefundAmount,
    ) -> Result<(), TestCaseError> {
        let picked = self
            .model
            .pick(pick, |p| matches!(p.status, MStatus::Succeeded { .. }));
        let caller = self.model.pick_caller(pick, picked);
        let (id, captured, refundable) = picked.map_or((PaymentId::generate(), 0, 0), |i| {
            let p = &self.model.payments[i];
            (p.id, p.status.captured(), p.status.captured() - p.reserved)
        });
        let requested = match amount {
            RefundAmount::Rest => None,
            RefundAmount::Part(percent) => Some((captured * i64::from(percent) / 100).max(1)),
            RefundAmount::Exact => Some(refundable.max(1)),
            RefundAmount::Over => Some(refundable + 1),
        };
        let expected = self.model.expect_refund(caller, id, requested);
        let request = RefundRequest {
            amount: requested.map(positive),
            ..RefundRequest::default()
        };
        let refunds = &self.sut.services.refunds;
        match (expected, refunds.prepare(caller, id, request, None).await) {
            (Ok(amount), Ok(refund)) => {
                prop_assert_eq!(refund.amount.minor_units(), amount);
                prop_assert_eq!(refund.payment_id, id);
                prop_assert_eq!(refund.status(), RefundStatus::Pending);
                prop_assert_eq!(refund.created_by, caller);
                refunds
                    .submit(&refund, None)
                    .await
                    .map_err(|e| fail(format!("an accepted refund failed: {e:?}")))?;
                self.model.add_refund(&refund);
                self.model.saw(match requested {
                    None => "refund: rest",
                    Some(_) => "refund: accepted",
                });
            }
            (Err(refusal), Err(error)) => {
                prop_assert!(
                    refusal.is(&error),
                    "refund: expected {:?}, got {:?}",
                    refusal,
                    error
                );
                self.model.saw(match refusal {
                    Refusal::NotFound => "refund: not found",
                    Refusal::InvalidState(_) => "refund: invalid state",
                    _ if requested.is_none() => "refund: nothing left",
                    _ => "refund: exceeds",
                });
            }
            (expected, got) => {
                return Err(fail(format!(
                    "refund of {id} by {caller} ({requested:?}): model {expected:?}, service {got:?}"
                )));
            }
        }
        Ok(())
    }

    /// Moves time on: the manual clock (the queue, the services' stamps), the store's own
    /// time (a database's stored times, when it decides with `now()`), and the model.
    async fn advance(&mut self, by: Duration) {
        self.sut.clock.advance(by);
        self.sut.time.advance(by).await;
        self.model.now += by;
    }

    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Onboard { currency } => self.onboard(CURRENCIES[*currency]).await,
            Op::OpenAccount { currency, merchant } => {
                self.open_account(CURRENCIES[*currency], *merchant).await;
            }
            Op::Pay(pay) => {
                let req = self.model.resolve(pay);
                self.send(req, pay.abandon).await?;
            }
            Op::Burst(ops) => self.burst(ops).await?,
            Op::Resend { which, change_body } => {
                if !self.model.history.is_empty() {
                    let mut req = self.model.history[which % self.model.history.len()].clone();
                    if *change_body {
                        req.amount = if req.amount == 1 { 2 } else { req.amount - 1 };
                    }
                    self.send(req, false).await?;
                }
            }
            Op::LateSubmit { which } => self.late_submit(*which).await?,
            Op::RetryAbandoned {
                which,
                abandon,
                after,
            } => {
                if !self.model.abandoned.is_empty() {
                    let (_, req, _, claimed_at) =
                        &self.model.abandoned[which % self.model.abandoned.len()];
                    let (req, claimed_at) = (req.clone(), *claimed_at);
                    if let Some(after) = after {
                        let at = claimed_at + Duration::from_secs(*after) * self.sut.scale;
                        if at > self.model.now {
                            self.advance(at - self.model.now).await;
                        }
                    }
                    self.send(req, *abandon).await?;
                }
            }
            Op::Work(mode) => self.work(*mode).await?,
            Op::Redeliver { which, unknown } => self.redeliver(*which, *unknown).await,
            Op::RedeliverRefund { which, unknown } => {
                self.redeliver_refund(*which, *unknown).await;
            }
            Op::Capture { pick, amount } => self.capture(pick, *amount).await?,
            Op::Cancel { pick } => self.cancel(pick).await?,
            Op::Refund { pick, amount } => self.refund(pick, *amount).await?,
            Op::Expire { offset, sweep } => {
                let ttl = self.sut.authorization_ttl;
                let step = Duration::from_secs(1) * self.sut.scale;
                let by = match offset.signum() {
                    -1 => ttl - step,
                    0 => ttl,
                    _ => ttl + step,
                };
                self.advance(by).await;
                if *sweep {
                    self.sweep().await?;
                }
            }
            Op::Flush => {
                self.sut.queue.queue().flush();
                self.model.ready.clear();
            }
            Op::FlushAll => {
                self.sut.queue.flush_all();
                self.model.ready.clear();
                self.model.in_flight.clear();
                self.model.dead_letters = 0;
                self.model.saw("queue lost");
            }
            Op::Advance { secs } => {
                self.advance(Duration::from_secs(*secs) * self.sut.scale)
                    .await;
            }
            Op::Sweep => self.sweep().await?,
        }
        Ok(())
    }

    /// What must hold after every step.
    async fn check_step(&self, op: &Op) -> Result<(), TestCaseError> {
        let report = self
            .sut
            .audit
            .audit(NEVER_STUCK)
            .await
            .map_err(|e| fail(format!("audit failed: {e:?}")))?;
        prop_assert!(
            report.is_clean(),
            "after {:?} the audit finds:\n{}",
            op,
            report
        );
        prop_assert_eq!(
            self.sut.queue.queue().waiting(),
            self.model.ready.len(),
            "jobs waiting"
        );
        prop_assert_eq!(
            self.sut.queue.queue().in_flight(),
            self.model.in_flight.len(),
            "jobs in flight"
        );
        prop_assert_eq!(
            self.sut.queue.queue().dead_letters().len(),
            self.model.dead_letters,
            "dead letters"
        );
        let stored = self.sut.stored_payments().await;
        prop_assert_eq!(
            stored.len(),
            self.model.payments.len(),
            "payments stored (never a second payment for a replay, nothing for a refusal)"
        );
        for p in &stored {
            let Some(&i) = self.model.index.get(&p.id) else {
                return Err(fail(format!("a payment the model does not know: {p:?}")));
            };
            let m = &self.model.payments[i];
            prop_assert_eq!(
                p.state(),
                m.status.state(),
                "state of {:?} after {:?}",
                m,
                op
            );
            prop_assert_eq!(p.merchant_account, m.account);
            prop_assert_eq!(p.amount.minor_units(), m.amount);
            prop_assert_eq!(p.capture_method == CaptureMethod::Manual, m.manual);
            prop_assert_eq!(
                (p.amount_reserved(), p.amount_refunded()),
                (m.reserved, m.refunded),
                "refund counters of {:?} after {:?}",
                m,
                op
            );
        }
        let refunds = self.sut.stored_refunds().await;
        prop_assert_eq!(refunds.len(), self.model.refunds.len(), "refunds stored");
        for r in &refunds {
            let Some(&i) = self.model.refund_index.get(&r.id) else {
                return Err(fail(format!("a refund the model does not know: {r:?}")));
            };
            let m = &self.model.refunds[i];
            prop_assert_eq!(
                r.state(),
                m.status.state(),
                "state of {:?} after {:?}",
                m,
                op
            );
            prop_assert_eq!(r.payment_id, m.payment);
            prop_assert_eq!(r.amount.minor_units(), m.amount);
        }
        self.check_balances().await
    }

    /// Each account holds what its payments captured less what was refunded of them; each
    /// currency's system account holds minus the sum of its merchant accounts.
    async fn check_balances(&self) -> Result<(), TestCaseError> {
        for account in &self.model.accounts {
            let stored = self
                .sut
                .services
                .accounts
                .get(Principal::Platform, account.id)
                .await
                .map_err(|e| fail(format!("get account failed: {e:?}")))?;
            prop_assert_eq!(
                stored.balance.minor_units(),
                self.model.expected_balance(account.id),
                "balance of {:?}",
                account
            );
        }
        for currency in CURRENCIES {
            let system = self.sut.system_account(currency).await;
            prop_assert_eq!(
                system.balance.minor_units(),
                self.model.expected_world(currency),
                "World {}",
                currency
            );
        }
        Ok(())
    }

    /// Heals everything, drains, and checks the books against the model.
    async fn finish(&mut self) -> Result<(), TestCaseError> {
        // Liveness: one healing interval (every lease, visibility and sweep deadline runs
        // out), one sweep, and workers until the queue is empty must finish every payment.
        self.advance(self.sut.heal).await;
        self.sweep().await?;
        self.check_step(&Op::Sweep).await?;
        let mut steps = 0;
        while self.sut.queue.queue().waiting() + self.sut.queue.queue().in_flight() > 0 {
            steps += 1;
            prop_assert!(steps < 10_000, "the queue never drains");
            self.work(WorkMode::Process).await?;
            self.check_step(&Op::Work(WorkMode::Process)).await?;
        }
        for p in &self.model.payments {
            prop_assert!(
                p.status.resting(),
                "liveness: {:?} is not settled one healing interval after the last fault",
                p
            );
        }
        for r in &self.model.refunds {
            prop_assert!(
                r.status == RStatus::Succeeded,
                "liveness: {:?} is not settled one healing interval after the last fault",
                r
            );
        }
        let report = self
            .sut
            .audit
            .audit(self.sut.heal)
            .await
            .map_err(|e| fail(format!("audit failed: {e:?}")))?;
        prop_assert!(report.is_clean(), "final audit:\n{}", report);

        // Tenancy: a merchant sees its own payments and no other merchant's (TEST-MATRIX 22).
        for p in &self.model.payments {
            let owner = self
                .model
                .account(p.account)
                .map(|a| a.owner)
                .expect("the model knows the account");
            for m in &self.model.merchants {
                let seen = self
                    .sut
                    .services
                    .payments
                    .get(Principal::Merchant(m.id), p.id)
                    .await;
                if owner == Owner::Merchant(m.id) {
                    prop_assert!(seen.is_ok(), "its owner sees {:?}: {:?}", p, seen);
                } else {
                    prop_assert!(
                        matches!(seen, Err(Error::NotFound)),
                        "another merchant must not see {:?}: {:?}",
                        p,
                        seen
                    );
                }
            }
        }

        // Outcomes follow the test-card table: a declined card fails either way; an automatic
        // payment approved is captured whole; a manual one is left authorized, captured (in
        // part or whole) or canceled, as its merchant and the clock decided.
        for p in &self.model.payments {
            let stored = self
                .sut
                .services
                .payments
                .get(Principal::Platform, p.id)
                .await
                .map_err(|e| fail(format!("get failed: {e:?}")))?;
            prop_assert_eq!(stored.state(), p.status.state(), "outcome of {:?}", p);
            let follows_the_table = match (token_outcome(p.token), p.manual, p.status) {
                ((PaymentStatus::Failed, reason), _, MStatus::Failed(failed)) => {
                    reason == Some(failed)
                }
                ((PaymentStatus::Success, None), false, MStatus::Succeeded { captured }) => {
                    captured == p.amount
                }
                ((PaymentStatus::Success, None), true, status) => matches!(
                    status,
                    MStatus::Authorized { .. } | MStatus::Succeeded { .. } | MStatus::Canceled(_)
                ),
                _ => false,
            };
            prop_assert!(follows_the_table, "outcome of {:?}", p);
        }
        self.check_balances().await?;

        // Every finished key replays its stored bytes (and refers to its payment); any other
        // body under it is refused; neither creates a payment.
        let before = self.model.payments.len();
        for ((scope, key), record) in &self.model.records {
            let Some(body) = &record.response else {
                continue;
            };
            let idem_key = IdempotencyKey::parse(key.clone()).expect("a valid key");
            let replay = self
                .sut
                .services
                .claim_idempotency_key(*scope, &idem_key, record.fingerprint)
                .await
                .map_err(|e| fail(format!("claim failed: {e:?}")))?;
            prop_assert_eq!(
                replay,
                ClaimOutcome::Replay(StoredResponse {
                    status: 202,
                    body: body.clone()
                })
            );
            let payment_id = record.payment.expect("a finished record has its payment");
            let stored = self
                .sut
                .services
                .payments
                .get(*scope, payment_id)
                .await
                .map_err(|e| {
                    fail(format!(
                        "the replayed payment is not visible to its caller: {e:?}"
                    ))
                })?;
            let prefix = format!("{{\"id\":\"{}\"", stored.id);
            prop_assert!(
                body.starts_with(prefix.as_bytes()),
                "the stored response names its payment"
            );
            prop_assert_eq!(
                stored.idempotency_key.as_ref().map(|k| k.as_str()),
                Some(key.as_str())
            );
            prop_assert_eq!(stored.created_by, *scope);
            let other = Fingerprint::of("POST", "/api/v1/payments", b"a different body");
            let mismatch = self
                .sut
                .services
                .claim_idempotency_key(*scope, &idem_key, other)
                .await
                .map_err(|e| fail(format!("claim failed: {e:?}")))?;
            prop_assert_eq!(mismatch, ClaimOutcome::Mismatch);
        }
        prop_assert_eq!(self.sut.stored_payments().await.len(), before);
        Ok(())
    }
}

async fn run_case<B: Backend>(case: Case) -> Result<(), TestCaseError> {
    let mut runner = Runner::new::<B>(CURRENCIES[case.first_currency]).await;
    runner.check_step(&Op::Sweep).await?;
    for op in &case.ops {
        runner.apply(op).await?;
        runner.check_step(op).await?;
    }
    runner.finish().await?;
    SEEN.with_borrow_mut(|seen| {
        for (what, n) in &runner.model.seen {
            *seen.entry(what).or_default() += n;
        }
    });
    Ok(())
}

thread_local! {
    /// Paths taken over all cases of a run (a run drives its cases on its own thread, so runs
    /// on other threads count apart).
    static SEEN: std::cell::RefCell<HashMap<&'static str, usize>> =
        std::cell::RefCell::new(HashMap::new());
}

fn processed_name(processed: Processed) -> &'static str {
    match processed {
        Processed::Settled(PaymentStatus::Success) => "worker: settled SUCCESS",
        Processed::Settled(PaymentStatus::Authorized) => "worker: settled AUTHORIZED",
        Processed::Settled(_) => "worker: settled FAILED",
        Processed::RefundSettled(RefundStatus::Success) => "worker: refund settled SUCCESS",
        Processed::RefundSettled(_) => "worker: refund settled FAILED",
        Processed::AlreadyFinished => "worker: already finished",
        Processed::Busy => "worker: busy",
        Processed::Missing => "worker: missing",
        Processed::Retrying { .. } => "worker: retrying",
        Processed::GaveUp => "worker: gave up",
    }
}

/// Runs the money path on `B` against its model: every step checked, then healed, drained and
/// audited. A run of at least [`Backend::CASES`] cases must have taken every path of
/// `must_reach` (the generator must reach them, or the property proves little).
pub(crate) fn run<B: Backend>(name: &str, must_reach: &[&str]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let config = config(B::CASES, B::MAX_SHRINK_ITERS);
    let cases = config.cases;
    let started = std::time::Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case_strategy(B::BURSTS), |case| {
        rt.block_on(run_case::<B>(case))
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    let seen = SEEN.take();
    let mut paths: Vec<_> = seen.iter().collect();
    paths.sort();
    eprintln!(
        "{cases} cases on {name} in {:?}; paths taken: {paths:?}",
        started.elapsed()
    );
    if cases >= B::CASES {
        for path in must_reach {
            assert!(
                seen.get(path).copied().unwrap_or(0) > 0,
                "no case took the path {path:?}: {paths:?}"
            );
        }
    }
}
