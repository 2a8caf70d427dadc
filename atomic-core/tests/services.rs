//! Unit tests of the services. Failures are injected with mockall mocks of single ports (the
//! rest of the backend stays in memory) and each test checks the service answers correctly and
//! calls (or does not call) the other ports; behaviour is checked on the in-memory adapters.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on the unexpected

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atomic_core::api_key::{ApiKey, RawApiKey};
use atomic_core::card::CardOutcome;
use atomic_core::error::Invariant;
use atomic_core::idempotency::{
    ClaimOutcome, Completion, Fingerprint, IdempotencyKey, IdempotencyPolicy, StoredResponse,
};
use atomic_core::memory::{MemoryQueue, MemoryStore};
use atomic_core::page::{CreatedRange, PageRequest};
use atomic_core::payment::{Description, NewPayment, PaymentState};
use atomic_core::ports::{
    Backend, BeginOutcome, CardProcessor, Delivery, Job, JobQueue, LeaseId, LedgerAudit,
    MockAccountStore, MockApiKeyStore, MockCardProcessor, MockIdempotencyStore, MockJobQueue,
    MockPaymentStore, MockSettlementStore, RefundBegin, RefundResult, SettleOutcome, Settlement,
    SettlementResult, SettlementStore, TestModeCards,
};
use atomic_core::refund::{RefundFailureReason, RefundState};
use atomic_core::service::{
    Backoff, CoreConfig, Processed, SweepConfig, SweepReport, WorkerConfig,
};
use atomic_core::time::ManualClock;
use atomic_core::{
    AccountId, Amount, CancellationReason, CaptureMethod, CardSource, Currency, Direction, Error,
    FailureReason, Fresh, MerchantId, Metadata, Owner, Payment, PaymentId, PaymentStatus, Ports,
    Principal, Refund, RefundId, RefundRequest, RefundStatus, Services, Sweeper, Timestamp, Worker,
};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const MAX_ATTEMPTS: u32 = 4;
const LEASE: Duration = Duration::from_secs(30);
const STALE_AFTER: Duration = Duration::from_secs(30);
/// Longer than any retry delay of [`worker_config`].
const PAST_ANY_BACKOFF: Duration = Duration::from_secs(11);

fn unavailable() -> Error {
    Error::unavailable("injected outage")
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        Timestamp::from_unix_micros(1_767_225_600_000_000).expect("a valid instant"),
    ))
}

/// In-memory ports on a manual clock; tests swap single ports for mocks.
fn memory_ports() -> Ports {
    Ports::in_memory_with_clock(clock())
}

/// `ports` with its backend changed by `change` (a port replaced by a mock).
fn with_store(ports: Ports, change: impl FnOnce(Backend) -> Backend) -> Ports {
    Ports {
        store: change(ports.store.clone()),
        ..ports
    }
}

fn worker_config() -> WorkerConfig {
    WorkerConfig {
        lease: LEASE,
        max_attempts: MAX_ATTEMPTS,
        backoff: Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        },
        ..WorkerConfig::default()
    }
}

fn sweep_config() -> SweepConfig {
    SweepConfig {
        stale_after: STALE_AFTER,
        ..SweepConfig::default()
    }
}

fn new_payment(token: &str, capture_method: CaptureMethod) -> Payment {
    fresh_payment(token, capture_method).into_inner()
}

fn fresh_payment(token: &str, capture_method: CaptureMethod) -> Fresh<Payment> {
    Payment::new(
        NewPayment {
            merchant_account: AccountId::generate(),
            funding_account: AccountId::generate(),
            owner: Owner::Platform,
            amount: Amount::for_payment(4_50).expect("a valid amount"),
            currency: Currency::USD,
            source: CardSource::parse(token).expect("a valid token"),
            description: Description::default(),
            capture_method,
            metadata: Metadata::default(),
            idempotency_key: None,
            created_by: Principal::Platform,
        },
        Timestamp::now(),
    )
}

fn pending_payment(token: &str) -> Payment {
    new_payment(token, CaptureMethod::Automatic)
}

fn processing(payment: &Payment) -> Payment {
    let mut p = payment.clone();
    p.start_processing(Timestamp::now())
        .expect("PENDING -> PROCESSING");
    p
}

fn finished(payment: &Payment, result: &SettlementResult) -> Payment {
    let mut p = processing(payment);
    match result {
        SettlementResult::Posted(_) => p.succeed(Timestamp::now()),
        SettlementResult::Authorized => p.authorize(Timestamp::now()),
        SettlementResult::Failed(reason) => p.fail(*reason, Timestamp::now()),
    }
    .expect("PROCESSING -> its end");
    p
}

/// A manual payment of 4.50, authorized, with a capture of `amount` requested.
fn capturing(amount: i64) -> Payment {
    let mut p = finished(
        &new_payment("tok_visa", CaptureMethod::Manual),
        &SettlementResult::Authorized,
    );
    p.request_capture(Amount::new(amount).expect("positive"), Timestamp::now())
        .expect("AUTHORIZED -> PROCESSING");
    p
}

/// An automatic payment of 4.50, settled.
fn succeeded() -> Payment {
    let mut p = processing(&pending_payment("tok_visa"));
    p.succeed(Timestamp::now()).expect("PROCESSING -> SUCCESS");
    p
}

/// A refund of `amount` of `payment` (which reserves it), claimed by a worker.
fn processing_refund(payment: &mut Payment, amount: i64) -> Refund {
    let amount = Amount::new(amount).expect("positive");
    payment
        .reserve_refund(amount, Timestamp::now())
        .expect("refundable");
    let mut refund = Refund::new(
        payment,
        amount,
        RefundRequest::default(),
        None,
        Principal::Platform,
        Timestamp::now(),
    )
    .into_inner();
    refund
        .start_processing(Timestamp::now())
        .expect("PENDING -> PROCESSING");
    refund
}

fn delivery(payment_id: PaymentId, attempt: u32) -> Delivery {
    Delivery {
        receipt: "receipt-1".to_owned(),
        job: Job::Payment(payment_id),
        attempt,
    }
}

/// The only settlement of a batch of one payment: (payment, lease, result).
fn one_payment(settlements: &[Settlement]) -> Option<(PaymentId, LeaseId, &SettlementResult)> {
    match settlements {
        [
            Settlement::Payment {
                payment_id,
                lease,
                result,
            },
        ] => Some((*payment_id, *lease, result)),
        _ => None,
    }
}

/// The only settlement of a batch of one refund: (refund, lease, result).
fn one_refund(settlements: &[Settlement]) -> Option<(RefundId, LeaseId, &RefundResult)> {
    match settlements {
        [
            Settlement::Refund {
                refund_id,
                lease,
                result,
            },
        ] => Some((*refund_id, *lease, result)),
        _ => None,
    }
}

/// A settlement mock whose `begin_payments` claims `payment` and records every lease it hands
/// out, in order.
fn ledger_claiming(payment: &Payment, leases: &Arc<Mutex<Vec<LeaseId>>>) -> MockSettlementStore {
    let mut ledger = MockSettlementStore::new();
    let claimed = processing(payment);
    let id = payment.id;
    let leases = leases.clone();
    ledger
        .expect_begin_payments()
        .withf(move |ids, _, duration| ids == [id] && *duration == LEASE)
        .returning(move |_, lease, _| {
            leases.lock().expect("lock").push(lease);
            Ok(vec![BeginOutcome::Claimed(claimed.clone())])
        });
    // The lease is still held whenever the worker checks before voiding.
    ledger.expect_begin_void().returning(|_, _, _| Ok(true));
    ledger
}

/// Services on `ports` with one merchant account (USD) and one accepted payment of 100
/// into it, paid with `tok_visa`.
async fn shop_with_a_payment(ports: &Ports) -> (Services, atomic_core::Account, Payment) {
    let services = Services::start(ports.clone(), CoreConfig::default())
        .await
        .expect("start");
    let account = open_usd_account(&services).await;
    let payment = services
        .payments
        .create(Principal::Platform, pay(&account, "tok_visa"), None)
        .await
        .expect("accepted");
    (services, account, payment)
}

/// A processor that gives no answer to the one charge, then voids that attempt.
fn cards_failing() -> MockCardProcessor {
    let mut cards = MockCardProcessor::new();
    let charged = Arc::new(Mutex::new(None));
    let attempt = charged.clone();
    cards.expect_charge().times(1).returning(move |charge| {
        *attempt.lock().expect("lock") = Some(charge.attempt);
        Err(unavailable())
    });
    cards
        .expect_void()
        .withf(move |charge| *charged.lock().expect("lock") == Some(charge.attempt))
        .times(1)
        .returning(|_| Ok(()));
    cards
}

fn cards_approving() -> MockCardProcessor {
    let mut cards = MockCardProcessor::new();
    cards
        .expect_charge()
        .times(1)
        .returning(|_| Ok(CardOutcome::Approved));
    cards
}

fn worker_with(
    ledger: MockSettlementStore,
    queue: MockJobQueue,
    cards: MockCardProcessor,
) -> Worker {
    let ports = Ports {
        queue: Arc::new(queue),
        cards: Arc::new(cards),
        ..with_store(memory_ports(), |store| {
            store.with_settlement(Arc::new(ledger))
        })
    };
    Worker::new(&ports, worker_config())
}

// ---------------------------------------------------------------------------------------------
// PaymentService::submit
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn submit_propagates_a_store_outage_and_enqueues_nothing() {
    let payment = fresh_payment("tok_visa", CaptureMethod::Automatic);
    let mut payments = MockPaymentStore::new();
    let id = payment.id;
    payments
        .expect_create_payment()
        .withf(move |p, completion| p.id == id && completion.is_some())
        .times(1)
        .returning(|_, _| Err(unavailable()));
    let mut queue = MockJobQueue::new();
    queue.expect_enqueue().times(0);
    let ports = Ports {
        queue: Arc::new(queue),
        ..with_store(memory_ports(), |store| {
            store.with_payments(Arc::new(payments))
        })
    };
    let services = Services::start(ports, CoreConfig::default())
        .await
        .expect("start");
    let claim = match services
        .claim_idempotency_key(
            Principal::Platform,
            &IdempotencyKey::parse("k-1").expect("a valid key"),
            Fingerprint::of("POST", "/api/v1/payments", b"{}"),
        )
        .await
        .expect("claim")
    {
        ClaimOutcome::Acquired(claim) => claim,
        other => panic!("a fresh key is acquired, got {other:?}"),
    };
    let completion = Completion {
        claim,
        fingerprint: Fingerprint::of("POST", "/api/v1/payments", b"{}"),
        policy: CoreConfig::default().idempotency,
        response: StoredResponse {
            status: 202,
            body: bytes::Bytes::from_static(b"{}"),
        },
    };

    let result = services.payments.submit(&payment, Some(completion)).await;

    assert!(
        matches!(result, Err(Error::Unavailable(_))),
        "the outage is the answer: {result:?}"
    );
}

#[tokio::test]
async fn submit_succeeds_when_only_the_enqueue_fails() {
    let payment = fresh_payment("tok_visa", CaptureMethod::Automatic);
    let mut payments = MockPaymentStore::new();
    let id = payment.id;
    payments
        .expect_create_payment()
        .withf(move |p, completion| p.id == id && completion.is_none())
        .times(1)
        .returning(|_, _| Ok(()));
    let mut queue = MockJobQueue::new();
    queue
        .expect_enqueue()
        .withf(move |jobs| jobs == [Job::Payment(id)])
        .times(1)
        .returning(|_| Err(unavailable()));
    let ports = Ports {
        queue: Arc::new(queue),
        ..with_store(memory_ports(), |store| {
            store.with_payments(Arc::new(payments))
        })
    };
    let services = Services::start(ports, CoreConfig::default())
        .await
        .expect("start");

    let result = services.payments.submit(&payment, None).await;

    assert!(
        result.is_ok(),
        "the payment is durable once stored: {result:?}"
    );
}

/// End to end on the in-memory store: a payment whose job was never enqueued is found by the
/// sweep once it is stale, and settled.
#[tokio::test]
async fn a_payment_whose_enqueue_failed_is_swept_and_settled() {
    let clock = clock();
    let store = MemoryStore::new(clock.clone());
    let real_queue = MemoryQueue::new(clock.clone());
    let mut failing_queue = MockJobQueue::new();
    failing_queue
        .expect_enqueue()
        .times(1)
        .returning(|_| Err(unavailable()));
    let ports = Ports {
        store: Backend::new(Arc::new(store.clone())),
        queue: Arc::new(failing_queue),
        ..Ports::in_memory_with_clock(clock.clone())
    };
    let (services, account, payment) = shop_with_a_payment(&ports).await;
    assert_eq!(real_queue.waiting(), 0);

    let healthy = Ports {
        queue: Arc::new(real_queue.clone()),
        ..ports
    };
    let sweeper = Sweeper::new(
        &healthy,
        sweep_config(),
        CoreConfig::default().authorization_ttl,
        atomic_core::service::DEFAULT_EVENT_RETENTION,
    );
    let first = sweeper.tick().await.expect("sweep");
    assert_eq!(first.requeued, 0, "not stale yet");
    clock.advance(STALE_AFTER);
    let second = sweeper.tick().await.expect("sweep");
    assert_eq!(second.requeued, 1, "stale PENDING payment re-enqueued");
    let processed = Worker::new(&healthy, worker_config())
        .run_once()
        .await
        .expect("worker");
    assert_eq!(processed, vec![Processed::Settled(PaymentStatus::Success)]);
    let settled = services
        .payments
        .get(Principal::Platform, payment.id)
        .await
        .expect("get");
    assert_eq!(settled.status(), PaymentStatus::Success);
    let balance = services
        .accounts
        .get(Principal::Platform, account.id)
        .await
        .expect("account")
        .balance;
    assert_eq!(balance.minor_units(), 100);
}

// ---------------------------------------------------------------------------------------------
// Worker::process
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn worker_releases_and_retries_when_the_card_processor_is_down() {
    let payment = pending_payment("tok_visa");
    let leases = Arc::new(Mutex::new(Vec::new()));
    let mut ledger = ledger_claiming(&payment, &leases);
    let id = payment.id;
    let released = leases.clone();
    ledger
        .expect_release()
        .withf(move |job, lease| {
            *job == Job::Payment(id) && released.lock().expect("lock").first() == Some(lease)
        })
        .times(1)
        .returning(|_, _| Ok(()));
    ledger.expect_settle().times(0);
    let retried = Arc::new(Mutex::new(None));
    let mut queue = MockJobQueue::new();
    let seen = retried.clone();
    queue
        .expect_retry()
        .withf(move |d, _| d.job == Job::Payment(id) && d.attempt == 1)
        .times(1)
        .returning(move |_, delay| {
            *seen.lock().expect("lock") = Some(delay);
            Ok(())
        });
    queue.expect_ack().times(0);
    queue.expect_dead_letter().times(0);
    let worker = worker_with(ledger, queue, cards_failing());

    let outcome = worker.process(&delivery(id, 1)).await;

    let delay = retried.lock().expect("lock").expect("retry scheduled");
    assert_eq!(outcome, Processed::Retrying { delay });
    // The first backoff step: between half and all of the base delay.
    assert!(
        delay >= Duration::from_millis(50) && delay <= Duration::from_millis(100),
        "{delay:?}"
    );
    assert_eq!(leases.lock().expect("lock").len(), 1);
}

fn cards_voiding(
    result: fn() -> atomic_core::Result<()>,
    seq: &mut mockall::Sequence,
    id: PaymentId,
) -> MockCardProcessor {
    let mut cards = MockCardProcessor::new();
    cards
        .expect_charge()
        .times(1)
        .in_sequence(seq)
        .returning(|_| Err(unavailable()));
    cards
        .expect_void()
        .withf(move |charge| charge.payment_id == id)
        .times(1)
        .in_sequence(seq)
        .returning(move |_| result());
    cards
}

#[tokio::test]
async fn worker_voids_then_fails_a_charge_left_unanswered_on_the_last_attempt() {
    let payment = pending_payment("tok_visa");
    let leases = Arc::new(Mutex::new(Vec::new()));
    let mut ledger = ledger_claiming(&payment, &leases);
    let id = payment.id;
    let mut seq = mockall::Sequence::new();
    let cards = cards_voiding(|| Ok(()), &mut seq, id);
    let held = leases.clone();
    let failed = finished(
        &payment,
        &SettlementResult::Failed(FailureReason::ProcessingError),
    );
    ledger
        .expect_settle()
        .withf(move |s| {
            // Failed under the lease that charged, only after the void.
            one_payment(s).is_some_and(|(pid, lease, result)| {
                pid == id
                    && *result == SettlementResult::Failed(FailureReason::ProcessingError)
                    && held.lock().expect("lock").first() == Some(&lease)
            })
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_| vec![Ok(SettleOutcome::Payment(failed.clone()))]);
    ledger.expect_release().times(0);
    let mut queue = MockJobQueue::new();
    queue.expect_ack().times(1).returning(|_| Ok(()));
    queue.expect_retry().times(0);
    queue.expect_dead_letter().times(0);
    let worker = worker_with(ledger, queue, cards);

    let outcome = worker.process(&delivery(id, MAX_ATTEMPTS)).await;

    assert_eq!(outcome, Processed::Settled(PaymentStatus::Failed));
    assert_eq!(leases.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn worker_voids_its_own_attempt_when_its_lease_is_lost_before_voiding() {
    let payment = pending_payment("tok_visa");
    let id = payment.id;
    let leases = Arc::new(Mutex::new(Vec::new()));
    let mut ledger = MockSettlementStore::new();
    let claimed = processing(&payment);
    let handed = leases.clone();
    ledger
        .expect_begin_payments()
        .returning(move |_, lease, _| {
            handed.lock().expect("lock").push(lease);
            Ok(vec![BeginOutcome::Claimed(claimed.clone())])
        });
    // The charge took longer than the lease: another worker holds (or settled) it now.
    ledger
        .expect_begin_void()
        .times(1)
        .returning(|_, _, _| Ok(false));
    ledger.expect_settle().times(0);
    let mut cards = MockCardProcessor::new();
    cards
        .expect_charge()
        .times(1)
        .returning(|_| Err(unavailable()));
    // Only this worker's lease could post its attempt: the attempt is voided, and only it.
    let ours = leases.clone();
    cards
        .expect_void()
        .withf(move |charge| ours.lock().expect("lock").first() == Some(&charge.attempt))
        .times(1)
        .returning(|_| Ok(()));
    let mut queue = MockJobQueue::new();
    queue.expect_ack().times(1).returning(|_| Ok(()));
    queue.expect_retry().times(0);
    queue.expect_dead_letter().times(0);
    let worker = worker_with(ledger, queue, cards);

    let outcome = worker.process(&delivery(id, MAX_ATTEMPTS)).await;

    assert_eq!(outcome, Processed::AlreadyFinished);
}

#[tokio::test]
async fn worker_never_fails_a_payment_whose_charge_it_could_not_void() {
    let payment = pending_payment("tok_visa");
    let leases = Arc::new(Mutex::new(Vec::new()));
    let mut ledger = ledger_claiming(&payment, &leases);
    let id = payment.id;
    let mut seq = mockall::Sequence::new();
    let cards = cards_voiding(|| Err(unavailable()), &mut seq, id);
    ledger.expect_settle().times(0);
    ledger.expect_release().times(1).returning(|_, _| Ok(()));
    let mut queue = MockJobQueue::new();
    queue.expect_dead_letter().times(1).returning(|_, _| Ok(()));
    queue.expect_ack().times(0);
    queue.expect_retry().times(0);
    let worker = worker_with(ledger, queue, cards);

    let outcome = worker.process(&delivery(id, MAX_ATTEMPTS)).await;

    assert_eq!(
        outcome,
        Processed::GaveUp,
        "left unfinished for the sweep, not failed"
    );
}

#[tokio::test]
async fn worker_never_fails_a_payment_for_a_store_outage_on_the_last_attempt() {
    let payment = pending_payment("tok_visa");
    let leases = Arc::new(Mutex::new(Vec::new()));
    let mut ledger = ledger_claiming(&payment, &leases);
    let id = payment.id;
    ledger
        .expect_settle()
        .withf(|s| one_payment(s).is_some_and(|(_, _, r)| matches!(r, SettlementResult::Posted(_))))
        .times(1)
        .returning(|_| vec![Err(unavailable())]);
    ledger.expect_release().times(1).returning(|_, _| Ok(()));
    let mut cards = cards_approving();
    cards.expect_void().times(0);
    let mut queue = MockJobQueue::new();
    queue.expect_dead_letter().times(1).returning(|_, _| Ok(()));
    queue.expect_ack().times(0);
    queue.expect_retry().times(0);
    let worker = worker_with(ledger, queue, cards);

    let outcome = worker.process(&delivery(id, MAX_ATTEMPTS)).await;

    assert_eq!(
        outcome,
        Processed::GaveUp,
        "an approved charge is never turned into FAILED by an outage"
    );
}

#[tokio::test]
async fn worker_past_its_attempts_still_settles_when_the_network_answers() {
    let payment = pending_payment("tok_visa");
    let leases = Arc::new(Mutex::new(Vec::new()));
    let mut ledger = ledger_claiming(&payment, &leases);
    let id = payment.id;
    let succeeded = {
        let mut p = processing(&payment);
        p.succeed(Timestamp::now()).expect("PROCESSING -> SUCCESS");
        p
    };
    ledger
        .expect_settle()
        .withf(|s| one_payment(s).is_some_and(|(_, _, r)| matches!(r, SettlementResult::Posted(_))))
        .times(1)
        .returning(move |_| vec![Ok(SettleOutcome::Payment(succeeded.clone()))]);
    let mut queue = MockJobQueue::new();
    queue.expect_ack().times(1).returning(|_| Ok(()));
    queue.expect_dead_letter().times(0);
    let worker = worker_with(ledger, queue, cards_approving());

    let outcome = worker.process(&delivery(id, MAX_ATTEMPTS + 3)).await;

    assert_eq!(outcome, Processed::Settled(PaymentStatus::Success));
}

#[tokio::test]
async fn worker_voids_and_fails_the_payment_when_the_books_refuse_the_posting() {
    let payment = pending_payment("tok_visa");
    let leases = Arc::new(Mutex::new(Vec::new()));
    let mut ledger = ledger_claiming(&payment, &leases);
    let id = payment.id;
    let mut seq = mockall::Sequence::new();
    let posted_lease = leases.clone();
    let expected = payment.clone();
    ledger
        .expect_settle()
        .withf(move |s| {
            one_payment(s).is_some_and(|(pid, lease, result)| {
                pid == id
                    && matches!(result, SettlementResult::Posted(t) if t.matches(&processing(&expected)))
                    && posted_lease.lock().expect("lock").first() == Some(&lease)
            })
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| vec![Err(Error::Invariant(Invariant::BalanceOverflow))]);
    let mut cards = MockCardProcessor::new();
    cards
        .expect_charge()
        .withf(move |charge| charge.payment_id == id)
        .times(1)
        .returning(|_| Ok(CardOutcome::Approved));
    cards
        .expect_void()
        .withf(move |charge| charge.payment_id == id)
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let failed_lease = leases.clone();
    let failed = finished(
        &payment,
        &SettlementResult::Failed(FailureReason::ProcessingError),
    );
    ledger
        .expect_settle()
        .withf(move |s| {
            one_payment(s).is_some_and(|(pid, lease, result)| {
                pid == id
                    && *result == SettlementResult::Failed(FailureReason::ProcessingError)
                    && failed_lease.lock().expect("lock").first() == Some(&lease)
            })
        })
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_| vec![Ok(SettleOutcome::Payment(failed.clone()))]);
    ledger.expect_release().times(0);
    let mut queue = MockJobQueue::new();
    queue
        .expect_ack()
        .withf(move |d| d.len() == 1 && d[0].job == Job::Payment(id))
        .times(1)
        .returning(|_| Ok(()));
    queue.expect_retry().times(0);
    queue.expect_dead_letter().times(0);
    let worker = worker_with(ledger, queue, cards);

    let outcome = worker.process(&delivery(id, 1)).await;

    assert_eq!(outcome, Processed::Settled(PaymentStatus::Failed));
    assert_eq!(leases.lock().expect("lock").len(), 1, "one claim only");
}

#[tokio::test]
async fn worker_retries_when_the_store_is_down_at_settlement() {
    let payment = pending_payment("tok_visa");
    let leases = Arc::new(Mutex::new(Vec::new()));
    let mut ledger = ledger_claiming(&payment, &leases);
    let id = payment.id;
    ledger
        .expect_settle()
        .times(1)
        .returning(|_| vec![Err(unavailable())]);
    let held = leases.clone();
    ledger
        .expect_release()
        .withf(move |job, lease| {
            *job == Job::Payment(id) && held.lock().expect("lock").first() == Some(lease)
        })
        .times(1)
        .returning(|_, _| Err(unavailable()));
    let mut queue = MockJobQueue::new();
    queue.expect_retry().times(1).returning(|_, _| Ok(()));
    queue.expect_ack().times(0);
    queue.expect_dead_letter().times(0);
    let worker = worker_with(ledger, queue, cards_approving());

    let outcome = worker.process(&delivery(id, 2)).await;

    assert!(
        matches!(outcome, Processed::Retrying { .. }),
        "a store outage at settlement is transient: {outcome:?}"
    );
}

async fn worker_acks_without_settling_when(begin: BeginOutcome, expected: Processed) {
    let payment = pending_payment("tok_visa");
    let id = payment.id;
    let mut ledger = MockSettlementStore::new();
    ledger
        .expect_begin_payments()
        .withf(move |ids, _, _| ids == [id])
        .times(1)
        .returning(move |_, _, _| Ok(vec![begin.clone()]));
    ledger.expect_settle().times(0);
    ledger.expect_release().times(0);
    let mut cards = MockCardProcessor::new();
    cards.expect_charge().times(0);
    let mut queue = MockJobQueue::new();
    queue
        .expect_ack()
        .withf(move |d| d.len() == 1 && d[0].job == Job::Payment(id) && d[0].receipt == "receipt-1")
        .times(1)
        .returning(|_| Ok(()));
    queue.expect_retry().times(0);
    queue.expect_dead_letter().times(0);
    let worker = worker_with(ledger, queue, cards);

    let outcome = worker.process(&delivery(id, 1)).await;

    assert_eq!(outcome, expected);
}

#[tokio::test]
async fn worker_acks_a_payment_another_worker_holds() {
    worker_acks_without_settling_when(BeginOutcome::Busy, Processed::Busy).await;
}

#[tokio::test]
async fn worker_acks_a_payment_that_is_already_finished() {
    let done = finished(
        &pending_payment("tok_visa"),
        &SettlementResult::Failed(FailureReason::CardDeclined),
    );
    worker_acks_without_settling_when(BeginOutcome::Finished(done), Processed::AlreadyFinished)
        .await;
}

#[tokio::test]
async fn worker_acks_a_job_for_an_unknown_payment() {
    worker_acks_without_settling_when(BeginOutcome::Missing, Processed::Missing).await;
}

#[tokio::test]
async fn worker_retries_without_acking_when_the_store_is_down_at_claim() {
    let id = PaymentId::generate();
    let mut ledger = MockSettlementStore::new();
    ledger
        .expect_begin_payments()
        .times(1)
        .returning(|_, _, _| Err(unavailable()));
    ledger.expect_release().times(0);
    ledger.expect_settle().times(0);
    let mut cards = MockCardProcessor::new();
    cards.expect_charge().times(0);
    let mut queue = MockJobQueue::new();
    queue
        .expect_retry()
        .withf(move |d, _| d.job == Job::Payment(id))
        .times(1)
        .returning(|_, _| Ok(()));
    queue.expect_ack().times(0);
    queue.expect_dead_letter().times(0);
    let worker = worker_with(ledger, queue, cards);

    let outcome = worker.process(&delivery(id, 1)).await;

    assert!(matches!(outcome, Processed::Retrying { .. }), "{outcome:?}");
}

#[tokio::test]
async fn worker_lets_a_lost_lease_win() {
    // Settlement refused because the lease was taken over: nothing written, the job is acked.
    let payment = pending_payment("tok_chargeDeclined");
    let leases = Arc::new(Mutex::new(Vec::new()));
    let mut ledger = ledger_claiming(&payment, &leases);
    ledger
        .expect_settle()
        .withf(|s| {
            one_payment(s).is_some_and(|(_, _, r)| {
                *r == SettlementResult::Failed(FailureReason::CardDeclined)
            })
        })
        .times(1)
        .returning(|_| vec![Ok(SettleOutcome::NotHeld)]);
    let mut queue = MockJobQueue::new();
    queue.expect_ack().times(1).returning(|_| Ok(()));
    queue.expect_retry().times(0);
    queue.expect_dead_letter().times(0);
    let ports = Ports {
        queue: Arc::new(queue),
        cards: Arc::new(TestModeCards),
        ..with_store(memory_ports(), |store| {
            store.with_settlement(Arc::new(ledger))
        })
    };
    let worker = Worker::new(&ports, worker_config());

    let outcome = worker.process(&delivery(payment.id, 1)).await;

    assert_eq!(outcome, Processed::AlreadyFinished);
}

// ---------------------------------------------------------------------------------------------
// Sweeper::tick
// ---------------------------------------------------------------------------------------------

/// A settlement mock with no authorization to expire.
fn settlement_expiring_nothing() -> MockSettlementStore {
    let mut ledger = MockSettlementStore::new();
    ledger
        .expect_expire_authorizations()
        .returning(|_, _| Ok(Vec::new()));
    // The sweep reports the backlog last; these tests are about what comes before.
    ledger
        .expect_open_payments()
        .returning(|| Ok(atomic_core::ports::OpenPayments::default()));
    ledger
}

fn sweeper_with(
    ledger: MockSettlementStore,
    queue: MockJobQueue,
    idempotency: MockIdempotencyStore,
    batch: usize,
) -> Sweeper {
    let ports = Ports {
        queue: Arc::new(queue),
        ..with_store(memory_ports(), |store| {
            store
                .with_settlement(Arc::new(ledger))
                .with_idempotency(Arc::new(idempotency))
        })
    };
    Sweeper::new(
        &ports,
        SweepConfig {
            stale_after: STALE_AFTER,
            batch,
            ..SweepConfig::default()
        },
        CoreConfig::default().authorization_ttl,
        atomic_core::service::DEFAULT_EVENT_RETENTION,
    )
}

fn payment_jobs(n: usize) -> Vec<Job> {
    (0..n)
        .map(|_| Job::Payment(PaymentId::generate()))
        .collect()
}

#[tokio::test]
async fn sweep_enqueues_exactly_the_payments_it_finds() {
    let mut due = payment_jobs(2);
    due.push(Job::Refund(RefundId::generate()));
    let mut ledger = settlement_expiring_nothing();
    let found = due.clone();
    ledger
        .expect_sweep()
        .withf(|stale, batch| *stale == STALE_AFTER && *batch == 10)
        .times(1)
        .returning(move |_, _| Ok(found.clone()));
    let mut queue = MockJobQueue::new();
    let expected = due.clone();
    queue
        .expect_enqueue()
        .withf(move |jobs| jobs == expected.as_slice())
        .times(1)
        .returning(|_| Ok(()));
    let mut idempotency = MockIdempotencyStore::new();
    idempotency
        .expect_purge_expired()
        .times(1)
        .returning(|_| Ok(7));

    let report = sweeper_with(ledger, queue, idempotency, 10)
        .tick()
        .await
        .expect("tick");

    assert_eq!(
        report,
        SweepReport {
            requeued: 3,
            expired: 0,
            purged_keys: 7,
            purged_events: 0
        }
    );
}

#[tokio::test]
async fn sweep_takes_full_batches_until_a_short_one() {
    let first = payment_jobs(2);
    let second = payment_jobs(1);
    let mut ledger = settlement_expiring_nothing();
    let mut seq = mockall::Sequence::new();
    let batch = first.clone();
    ledger
        .expect_sweep()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _| Ok(batch.clone()));
    let batch = second.clone();
    ledger
        .expect_sweep()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _| Ok(batch.clone()));
    let mut queue = MockJobQueue::new();
    let (a, b) = (first.clone(), second.clone());
    queue
        .expect_enqueue()
        .withf(move |jobs| jobs == a.as_slice() || jobs == b.as_slice())
        .times(2)
        .returning(|_| Ok(()));
    let mut idempotency = MockIdempotencyStore::new();
    idempotency.expect_purge_expired().returning(|_| Ok(0));

    let report = sweeper_with(ledger, queue, idempotency, 2)
        .tick()
        .await
        .expect("tick");

    assert_eq!(report.requeued, 3);
}

#[tokio::test]
async fn sweep_reports_a_failed_enqueue() {
    let mut ledger = settlement_expiring_nothing();
    ledger
        .expect_sweep()
        .times(1)
        .returning(|_, _| Ok(payment_jobs(1)));
    let mut queue = MockJobQueue::new();
    queue
        .expect_enqueue()
        .times(1)
        .returning(|_| Err(unavailable()));
    let mut idempotency = MockIdempotencyStore::new();
    idempotency.expect_purge_expired().returning(|_| Ok(0));

    let result = sweeper_with(ledger, queue, idempotency, 10).tick().await;

    assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
}

#[tokio::test]
async fn sweep_reports_a_store_outage_and_enqueues_nothing() {
    let mut ledger = settlement_expiring_nothing();
    ledger
        .expect_sweep()
        .times(1)
        .returning(|_, _| Err(unavailable()));
    let mut queue = MockJobQueue::new();
    queue.expect_enqueue().times(0);
    let mut idempotency = MockIdempotencyStore::new();
    idempotency.expect_purge_expired().returning(|_| Ok(0));

    let result = sweeper_with(ledger, queue, idempotency, 10).tick().await;

    assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
}

// ---------------------------------------------------------------------------------------------
// ApiKeyService::authenticate
// ---------------------------------------------------------------------------------------------

const PLATFORM_SECRET: &str = "platform-secret-for-tests";

async fn services_with_keys(keys: MockApiKeyStore) -> Services {
    let ports = with_store(memory_ports(), |store| store.with_api_keys(Arc::new(keys)));
    Services::start(
        ports,
        CoreConfig {
            platform_key: Some(RawApiKey::from_presented(PLATFORM_SECRET).hash()),
            ..CoreConfig::default()
        },
    )
    .await
    .expect("start")
}

#[tokio::test]
async fn authenticate_never_looks_up_a_malformed_key() {
    let mut keys = MockApiKeyStore::new();
    keys.expect_key_by_hash().times(0);
    let services = services_with_keys(keys).await;
    let minted = RawApiKey::generate().expect("a key");
    let mut corrupted = minted.expose().to_owned();
    let last = corrupted.pop().expect("non-empty");
    corrupted.push(if last == 'a' { 'b' } else { 'a' });
    let malformed = [
        String::new(),
        "sk_test_".to_owned(),
        "Bearer sk_test_abc".to_owned(),
        minted.expose()[..minted.expose().len() - 1].to_owned(),
        format!("{}x", minted.expose()),
        corrupted,
        minted.expose().replace("sk_test_", "sk_live_"),
        format!("{PLATFORM_SECRET} "),
    ];
    for presented in &malformed {
        let who = services
            .api_keys
            .authenticate(presented)
            .await
            .expect("no store call, no error");
        assert_eq!(who, None, "{presented:?}");
    }
}

#[tokio::test]
async fn authenticate_refuses_a_revoked_key_and_accepts_an_active_one() {
    let merchant = MerchantId::generate();
    let (active, active_raw) = ApiKey::mint(merchant, Timestamp::now()).expect("mint");
    let (mut revoked, revoked_raw) = ApiKey::mint(merchant, Timestamp::now()).expect("mint");
    revoked.revoked_at = Some(Timestamp::now());
    let mut keys = MockApiKeyStore::new();
    let (active_hash, revoked_hash) = (active.hash, revoked.hash);
    keys.expect_key_by_hash()
        .withf(move |hash| *hash == revoked_hash)
        .times(1)
        .returning(move |_| Ok(Some(revoked.clone())));
    keys.expect_key_by_hash()
        .withf(move |hash| *hash == active_hash)
        .times(1)
        .returning(move |_| Ok(Some(active.clone())));
    let services = services_with_keys(keys).await;

    let revoked_who = services
        .api_keys
        .authenticate(revoked_raw.expose())
        .await
        .expect("authenticate");
    let active_who = services
        .api_keys
        .authenticate(active_raw.expose())
        .await
        .expect("authenticate");

    assert_eq!(revoked_who, None, "a revoked key authenticates nobody");
    assert_eq!(active_who, Some(Principal::Merchant(merchant)));
}

#[tokio::test]
async fn authenticate_knows_the_platform_key_without_a_store_call() {
    let mut keys = MockApiKeyStore::new();
    keys.expect_key_by_hash().times(0);
    let services = services_with_keys(keys).await;

    let who = services
        .api_keys
        .authenticate(PLATFORM_SECRET)
        .await
        .expect("authenticate");

    assert_eq!(who, Some(Principal::Platform));
}

#[tokio::test]
async fn authenticate_reports_a_store_outage_instead_of_refusing_the_key() {
    let mut keys = MockApiKeyStore::new();
    keys.expect_key_by_hash()
        .times(1)
        .returning(|_| Err(unavailable()));
    let services = services_with_keys(keys).await;
    let raw = RawApiKey::generate().expect("a key");

    let result = services.api_keys.authenticate(raw.expose()).await;

    assert!(
        matches!(result, Err(Error::Unavailable(_))),
        "an outage is not a bad key: {result:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Services start-up and idempotency policy
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn start_fails_when_a_system_account_cannot_be_ensured() {
    let mut accounts = MockAccountStore::new();
    accounts
        .expect_ensure_system_account()
        .times(1)
        .returning(|_| Err(unavailable()));
    let ports = with_store(memory_ports(), |store| {
        store.with_accounts(Arc::new(accounts))
    });

    let result = Services::start(ports, CoreConfig::default()).await;

    assert!(matches!(result, Err(Error::Unavailable(_))));
}

#[tokio::test]
async fn claims_use_the_configured_idempotency_policy() {
    let policy = IdempotencyPolicy {
        ttl: Duration::from_secs(123),
        lock_timeout: Duration::from_secs(7),
    };
    let mut idempotency = MockIdempotencyStore::new();
    idempotency
        .expect_claim()
        .withf(move |scope, key, _, p| {
            *scope == Principal::Platform && key.as_str() == "k" && *p == policy
        })
        .times(1)
        .returning(|_, _, _, _| Ok(ClaimOutcome::InProgress));
    let ports = with_store(memory_ports(), |store| {
        store.with_idempotency(Arc::new(idempotency))
    });
    let services = Services::start(
        ports,
        CoreConfig {
            idempotency: policy,
            ..CoreConfig::default()
        },
    )
    .await
    .expect("start");

    let outcome = services
        .claim_idempotency_key(
            Principal::Platform,
            &IdempotencyKey::parse("k").expect("a valid key"),
            Fingerprint::of("POST", "/p", b""),
        )
        .await
        .expect("claim");

    assert_eq!(outcome, ClaimOutcome::InProgress);
}

// ---------------------------------------------------------------------------------------------
// Idempotency windows
// ---------------------------------------------------------------------------------------------

/// API.md: keys are kept 24 h "then purged"; TEST-MATRIX row 14: "25 h + reaped -> new
/// payment (1 new row)". A key past its window and purged makes a new payment: the store does
/// not keep `(caller, key)` unique on payments beyond the key's window.
#[tokio::test]
async fn a_key_can_be_used_again_after_its_window_is_purged() {
    let clock = clock();
    let services = Services::start(
        Ports::in_memory_with_clock(clock.clone()),
        CoreConfig::default(),
    )
    .await
    .expect("start");
    let account = open_usd_account(&services).await;
    let key = IdempotencyKey::parse("order-42").expect("a valid key");
    let fingerprint = Fingerprint::of("POST", "/api/v1/payments", b"{\"amount\":100}");
    let ttl = CoreConfig::default().idempotency.ttl;
    let mut created = Vec::new();
    for _ in 0..2 {
        let claim = match services
            .claim_idempotency_key(Principal::Platform, &key, fingerprint)
            .await
            .expect("claim")
        {
            ClaimOutcome::Acquired(claim) => claim,
            other => panic!("an expired key runs anew, got {other:?}"),
        };
        let payment = services
            .payments
            .prepare(
                Principal::Platform,
                atomic_core::PaymentRequest {
                    merchant_account: Some(account.id),
                    amount: Amount::for_payment(100).expect("a valid amount"),
                    currency: Currency::USD,
                    source: CardSource::parse("tok_visa").expect("a valid token"),
                    description: None,
                    capture_method: CaptureMethod::Automatic,
                    metadata: Metadata::default(),
                },
                Some(&claim),
            )
            .await
            .expect("prepare");
        let submitted = services
            .payments
            .submit(
                &payment,
                Some(Completion {
                    claim,
                    fingerprint,
                    policy: CoreConfig::default().idempotency,
                    response: StoredResponse {
                        status: 202,
                        body: bytes::Bytes::from(payment.id.to_string()),
                    },
                }),
            )
            .await;
        assert!(
            submitted.is_ok(),
            "after the window the key is new again: {submitted:?}"
        );
        created.push(payment.id);
        // Past the window, and purged by the sweep.
        clock.advance(ttl + Duration::from_secs(3600));
        let report = services
            .sweeper(SweepConfig::default())
            .tick()
            .await
            .expect("sweep");
        assert_eq!(report.purged_keys, 1);
    }
    for id in created {
        services
            .payments
            .get(Principal::Platform, id)
            .await
            .expect("both payments exist");
    }
}

// ---------------------------------------------------------------------------------------------
// Faults the worker and submit must contain
// ---------------------------------------------------------------------------------------------

/// A card processor with a bug: it panics on one token and approves every other.
struct PanickyCards;

#[async_trait::async_trait]
impl atomic_core::ports::CardProcessor for PanickyCards {
    async fn charge(&self, charge: &atomic_core::card::Charge) -> atomic_core::Result<CardOutcome> {
        assert!(
            charge.source.expose() != "tok_poison",
            "adapter bug on a poison token"
        );
        Ok(CardOutcome::Approved)
    }

    async fn authorize(
        &self,
        charge: &atomic_core::card::Charge,
    ) -> atomic_core::Result<CardOutcome> {
        self.charge(charge).await
    }

    async fn capture(&self, _: &atomic_core::card::Charge) -> atomic_core::Result<CardOutcome> {
        Ok(CardOutcome::Approved)
    }

    async fn refund(&self, _: &atomic_core::card::CardRefund) -> atomic_core::Result<CardOutcome> {
        Ok(CardOutcome::Approved)
    }

    async fn void(&self, _: &atomic_core::card::Charge) -> atomic_core::Result<()> {
        Ok(())
    }
}

async fn open_usd_account(services: &Services) -> atomic_core::Account {
    let account = services.accounts.prepare(
        Principal::Platform,
        atomic_core::account::AccountName::parse("shop").expect("a valid name"),
        Currency::USD,
    );
    services
        .accounts
        .submit(&account, None)
        .await
        .expect("account stored");
    account.into_inner()
}

fn pay(account: &atomic_core::Account, token: &str) -> atomic_core::PaymentRequest {
    atomic_core::PaymentRequest {
        merchant_account: Some(account.id),
        amount: Amount::for_payment(100).expect("a valid amount"),
        currency: Currency::USD,
        source: CardSource::parse(token).expect("a valid token"),
        description: None,
        capture_method: CaptureMethod::Automatic,
        metadata: Metadata::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_adapter_costs_one_job_not_the_workers() {
    let ports = Ports {
        cards: Arc::new(PanickyCards),
        ..Ports::in_memory()
    };
    let services = Services::start(ports, CoreConfig::default())
        .await
        .expect("start");
    let account = open_usd_account(&services).await;
    let stop = atomic_core::service::CancellationToken::new();
    let config = WorkerConfig {
        concurrency: 2,
        backoff: Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(50),
        },
        poll_wait: Duration::from_millis(50),
        ..WorkerConfig::default()
    };
    let worker = tokio::spawn(services.worker(config).run(stop.clone()));
    // More poison jobs than loops, ahead of a good one.
    for _ in 0..3 {
        services
            .payments
            .create(Principal::Platform, pay(&account, "tok_poison"), None)
            .await
            .expect("accepted");
    }
    let good = services
        .payments
        .create(Principal::Platform, pay(&account, "tok_visa"), None)
        .await
        .expect("accepted");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = services
            .payments
            .get(Principal::Platform, good.id)
            .await
            .expect("stored");
        if now.status() == PaymentStatus::Success {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the good payment was never settled: {:?}",
            now.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !worker.is_finished(),
        "the workers survive a panicking adapter"
    );
    stop.cancel();
    worker.await.expect("the worker stops on shutdown");
}

/// A queue that never answers (a stalled Redis).
struct StalledQueue;

#[async_trait::async_trait]
impl atomic_core::ports::JobQueue for StalledQueue {
    async fn ping(&self) -> atomic_core::Result<()> {
        std::future::pending().await
    }
    async fn enqueue(&self, _: &[Job]) -> atomic_core::Result<()> {
        std::future::pending().await
    }
    async fn reserve(
        &self,
        _: usize,
        _: Duration,
        _: Duration,
    ) -> atomic_core::Result<Vec<Delivery>> {
        std::future::pending().await
    }
    async fn ack(&self, _: &[Delivery]) -> atomic_core::Result<()> {
        std::future::pending().await
    }
    async fn retry(&self, _: &Delivery, _: Duration) -> atomic_core::Result<()> {
        std::future::pending().await
    }
    async fn dead_letter(&self, _: &Delivery, _: &str) -> atomic_core::Result<()> {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_stalled_queue_never_holds_up_an_accepted_payment() {
    let ports = Ports {
        queue: Arc::new(StalledQueue),
        ..Ports::in_memory()
    };
    let services = Services::start(ports, CoreConfig::default())
        .await
        .expect("start");
    let account = open_usd_account(&services).await;
    let payment = services
        .payments
        .prepare(Principal::Platform, pay(&account, "tok_visa"), None)
        .await
        .expect("prepared");
    let started = tokio::time::Instant::now();
    // In paused time a hang would surface as this outer timeout, not as a stuck test.
    tokio::time::timeout(
        Duration::from_secs(600),
        services.payments.submit(&payment, None),
    )
    .await
    .expect("submit answers although the queue never does")
    .expect("the payment is accepted: the job is only a hint");
    assert!(
        started.elapsed() <= atomic_core::service::ENQUEUE_WAIT,
        "answered within the enqueue wait, not the queue's stall"
    );
    assert_eq!(
        services
            .payments
            .get(Principal::Platform, payment.id)
            .await
            .expect("stored")
            .status(),
        PaymentStatus::Pending,
        "stored for the sweep to enqueue"
    );
}

#[tokio::test]
async fn a_remembered_key_costs_no_lookup_until_its_time_and_revocation_forgets_it_at_once() {
    let merchant = MerchantId::generate();
    let (key, raw) = ApiKey::mint(merchant, Timestamp::now()).expect("mint");
    let mut revoked = key.clone();
    revoked.revoked_at = Some(Timestamp::now());
    let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut keys = MockApiKeyStore::new();
    let (active, counted) = (key.clone(), lookups.clone());
    let after_revoke = revoked.clone();
    keys.expect_key_by_hash().times(3).returning(move |_| {
        // The store's answer: active for the first two lookups, revoked afterwards.
        let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Some(if n < 2 {
            active.clone()
        } else {
            after_revoke.clone()
        }))
    });
    keys.expect_revoke_key()
        .times(1)
        .returning(move |_, _, _| Ok(Some(revoked.clone())));
    let clock = clock();
    let ttl = Duration::from_secs(2);
    let services = Services::start(
        with_store(Ports::in_memory_with_clock(clock.clone()), |store| {
            store.with_api_keys(Arc::new(keys))
        }),
        CoreConfig {
            api_key_cache_ttl: ttl,
            ..CoreConfig::default()
        },
    )
    .await
    .expect("start");
    let who = || services.api_keys.authenticate(raw.expose());

    for _ in 0..5 {
        assert_eq!(
            who().await.expect("auth"),
            Some(Principal::Merchant(merchant))
        );
    }
    assert_eq!(
        lookups.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "remembered"
    );
    clock.advance(ttl + Duration::from_millis(1));
    assert_eq!(
        who().await.expect("auth"),
        Some(Principal::Merchant(merchant))
    );
    assert_eq!(
        lookups.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "looked up again after the ttl"
    );

    services
        .api_keys
        .revoke(Principal::Merchant(merchant), key.id)
        .await
        .expect("revoke");
    assert_eq!(
        who().await.expect("auth"),
        None,
        "revoked from the next request on"
    );
}

/// A card processor that approves every charge and records each charge and void. It merges
/// nothing: each charge is an authorization of its own. Its first charge can run `first`
/// (advance the clock past the lease, then let another worker take the payment over) before
/// it answers.
#[derive(Default)]
struct CountingCards {
    charges: Mutex<Vec<atomic_core::card::Charge>>,
    voids: Mutex<Vec<atomic_core::card::Charge>>,
    first: Mutex<Option<(Arc<ManualClock>, Worker)>>,
}

#[async_trait::async_trait]
impl atomic_core::ports::CardProcessor for CountingCards {
    async fn charge(&self, charge: &atomic_core::card::Charge) -> atomic_core::Result<CardOutcome> {
        self.charges.lock().expect("lock").push(charge.clone());
        let takeover = self.first.lock().expect("lock").take();
        if let Some((clock, other)) = takeover {
            clock.advance(LEASE + Duration::from_secs(1));
            let taken = other.run_once().await.expect("the other worker");
            assert_eq!(taken, vec![Processed::Settled(PaymentStatus::Success)]);
        }
        Ok(CardOutcome::Approved)
    }

    async fn authorize(
        &self,
        charge: &atomic_core::card::Charge,
    ) -> atomic_core::Result<CardOutcome> {
        self.charge(charge).await
    }

    async fn capture(&self, _: &atomic_core::card::Charge) -> atomic_core::Result<CardOutcome> {
        Ok(CardOutcome::Approved)
    }

    async fn refund(&self, _: &atomic_core::card::CardRefund) -> atomic_core::Result<CardOutcome> {
        Ok(CardOutcome::Approved)
    }

    async fn void(&self, charge: &atomic_core::card::Charge) -> atomic_core::Result<()> {
        self.voids.lock().expect("lock").push(charge.clone());
        Ok(())
    }
}

impl CountingCards {
    fn attempts(list: &Mutex<Vec<atomic_core::card::Charge>>) -> Vec<LeaseId> {
        list.lock()
            .expect("lock")
            .iter()
            .map(|c| c.attempt)
            .collect()
    }
}

async fn balance_of(services: &Services, account: &atomic_core::Account) -> i64 {
    services
        .accounts
        .get(Principal::Platform, account.id)
        .await
        .expect("account")
        .balance
        .minor_units()
}

/// A worker began voiding a charge, then lost the write that fails its payment. The next
/// attempt finds the mark in its claim: it voids that charge again and fails the payment,
/// without charging the card again (a processor that does not merge attempts would take the
/// money twice).
#[tokio::test]
async fn a_payment_whose_void_began_is_voided_again_and_failed_without_a_new_charge() {
    let clock = clock();
    let ports = Ports::in_memory_with_clock(clock.clone());
    let (services, account, payment) = shop_with_a_payment(&ports).await;
    // The first worker: claimed, began the void, then died before voiding or failing it.
    let first = LeaseId::generate();
    assert!(matches!(
        ports
            .store
            .settlement()
            .begin_payments(&[payment.id], first, LEASE)
            .await
            .expect("claim")
            .as_slice(),
        [BeginOutcome::Claimed(_)]
    ));
    assert!(
        ports
            .store
            .settlement()
            .begin_void(payment.id, first, LEASE)
            .await
            .expect("begin void")
    );
    clock.advance(LEASE + Duration::from_secs(1));

    let cards = Arc::new(CountingCards::default());
    let worker = Worker::new(
        &Ports {
            cards: cards.clone(),
            ..ports.clone()
        },
        worker_config(),
    );
    let processed = worker.run_once().await.expect("worker");

    assert_eq!(processed, vec![Processed::Settled(PaymentStatus::Failed)]);
    assert_eq!(
        CountingCards::attempts(&cards.charges),
        vec![],
        "never charged again"
    );
    assert_eq!(
        CountingCards::attempts(&cards.voids),
        vec![first],
        "the marked attempt is voided"
    );
    let settled = services
        .payments
        .get(Principal::Platform, payment.id)
        .await
        .expect("get");
    assert_eq!(
        settled.failure_reason(),
        Some(FailureReason::ProcessingError)
    );
    assert_eq!(balance_of(&services, &account).await, 0, "nothing posted");
}

/// A worker's charge is approved after its lease ran out, and another worker has taken the
/// payment over, charged it under its own attempt and settled it. The first attempt can never
/// be posted (only its lease could post it), so it is voided: the customer pays once.
#[tokio::test]
async fn an_approved_charge_whose_lease_was_taken_over_is_voided() {
    let clock = clock();
    let ports = Ports::in_memory_with_clock(clock.clone());
    let (services, account, payment) = shop_with_a_payment(&ports).await;
    let cards = Arc::new(CountingCards::default());
    let ports = Ports {
        cards: cards.clone(),
        ..ports
    };
    let slow = Worker::new(&ports, worker_config());
    let other = Worker::new(&ports, worker_config());
    *cards.first.lock().expect("lock") = Some((clock.clone(), other));

    let processed = slow.run_once().await.expect("worker");

    assert_eq!(processed, vec![Processed::AlreadyFinished]);
    let charged = CountingCards::attempts(&cards.charges);
    assert_eq!(charged.len(), 2, "one charge per attempt");
    assert_ne!(charged[0], charged[1]);
    assert_eq!(
        CountingCards::attempts(&cards.voids),
        vec![charged[0]],
        "the attempt that lost its lease is voided, the posted one is not"
    );
    let settled = services
        .payments
        .get(Principal::Platform, payment.id)
        .await
        .expect("get");
    assert_eq!(settled.status(), PaymentStatus::Success);
    assert_eq!(balance_of(&services, &account).await, 100, "posted once");
}

// ---------------------------------------------------------------------------------------------
// v1.1: authorize now, capture later; cancel; refunds; expiry
// ---------------------------------------------------------------------------------------------

/// The in-memory settlement store, watched: every `settle` call is recorded, and while
/// `refuse_refund_postings` is set every refund posting is refused as the books refuse one the
/// merchant's balance cannot cover (TEST-MATRIX row 35: the API alone cannot reach that state,
/// so the refusal is injected here; everything else is the in-memory store's own behaviour).
struct Watched {
    inner: MemoryStore,
    settle_calls: Mutex<Vec<Vec<Settlement>>>,
    refuse_refund_postings: AtomicBool,
}

impl Watched {
    fn new(inner: MemoryStore) -> Self {
        Self {
            inner,
            settle_calls: Mutex::new(Vec::new()),
            refuse_refund_postings: AtomicBool::new(false),
        }
    }

    fn settle_calls(&self) -> Vec<Vec<Settlement>> {
        self.settle_calls.lock().expect("lock").clone()
    }

    fn forget_calls(&self) {
        self.settle_calls.lock().expect("lock").clear();
    }

    fn refuse_refund_postings(&self, refuse: bool) {
        self.refuse_refund_postings.store(refuse, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl SettlementStore for Watched {
    async fn begin_payments(
        &self,
        ids: &[PaymentId],
        lease: LeaseId,
        duration: Duration,
    ) -> atomic_core::Result<Vec<BeginOutcome>> {
        self.inner.begin_payments(ids, lease, duration).await
    }

    async fn begin_refunds(
        &self,
        ids: &[RefundId],
        lease: LeaseId,
        duration: Duration,
    ) -> atomic_core::Result<Vec<RefundBegin>> {
        self.inner.begin_refunds(ids, lease, duration).await
    }

    async fn begin_void(
        &self,
        id: PaymentId,
        lease: LeaseId,
        duration: Duration,
    ) -> atomic_core::Result<bool> {
        self.inner.begin_void(id, lease, duration).await
    }

    async fn release(&self, job: Job, lease: LeaseId) -> atomic_core::Result<()> {
        self.inner.release(job, lease).await
    }

    async fn settle(&self, settlements: &[Settlement]) -> Vec<atomic_core::Result<SettleOutcome>> {
        self.settle_calls
            .lock()
            .expect("lock")
            .push(settlements.to_vec());
        if !self.refuse_refund_postings.load(Ordering::SeqCst) {
            return self.inner.settle(settlements).await;
        }
        let mut results = Vec::with_capacity(settlements.len());
        for settlement in settlements {
            if matches!(
                settlement,
                Settlement::Refund {
                    result: RefundResult::Posted(_),
                    ..
                }
            ) {
                results.push(Err(Error::Invariant(Invariant::InsufficientFunds)));
            } else {
                results.extend(self.inner.settle(std::slice::from_ref(settlement)).await);
            }
        }
        results
    }

    async fn sweep(&self, stale_after: Duration, limit: usize) -> atomic_core::Result<Vec<Job>> {
        self.inner.sweep(stale_after, limit).await
    }

    async fn expire_authorizations(
        &self,
        authorization_ttl: Duration,
        limit: usize,
    ) -> atomic_core::Result<Vec<Payment>> {
        self.inner
            .expire_authorizations(authorization_ttl, limit)
            .await
    }

    async fn open_payments(&self) -> atomic_core::Result<atomic_core::ports::OpenPayments> {
        self.inner.open_payments().await
    }
}

/// A horizon no payment of these tests reaches: the audit counts nothing as stuck.
const NEVER_STUCK: Duration = Duration::from_secs(365 * 24 * 3600);

/// One USD merchant account on the in-memory adapters, on a manual clock, with the
/// settlement store [`Watched`].
struct Shop {
    clock: Arc<ManualClock>,
    store: MemoryStore,
    queue: MemoryQueue,
    watched: Arc<Watched>,
    ports: Ports,
    services: Services,
    account: atomic_core::Account,
}

impl Shop {
    async fn open() -> Self {
        let clock = clock();
        let store = MemoryStore::new(clock.clone());
        let queue = MemoryQueue::new(clock.clone());
        let watched = Arc::new(Watched::new(store.clone()));
        let ports = Ports {
            store: Backend::new(Arc::new(store.clone())).with_settlement(watched.clone()),
            queue: Arc::new(queue.clone()),
            ..Ports::in_memory_with_clock(clock.clone())
        };
        let services = Services::start(ports.clone(), CoreConfig::default())
            .await
            .expect("start");
        let account = open_usd_account(&services).await;
        Self {
            clock,
            store,
            queue,
            watched,
            ports,
            services,
            account,
        }
    }

    /// A worker over the shop's ports, asking `cards`.
    fn worker(&self, cards: impl CardProcessor) -> Worker {
        Worker::new(
            &Ports {
                cards: Arc::new(cards),
                ..self.ports.clone()
            },
            worker_config(),
        )
    }

    fn sweeper(&self) -> Sweeper {
        self.services.sweeper(sweep_config())
    }

    /// An accepted payment of `amount` into the shop's account.
    async fn accepted(&self, capture_method: CaptureMethod, amount: i64, token: &str) -> Payment {
        self.services
            .payments
            .create(
                Principal::Platform,
                atomic_core::PaymentRequest {
                    amount: Amount::for_payment(amount).expect("a valid amount"),
                    capture_method,
                    ..pay(&self.account, token)
                },
                None,
            )
            .await
            .expect("accepted")
    }

    /// A manual payment of `amount`, authorized by a test-mode worker (its job the only one).
    async fn authorized(&self, amount: i64) -> Payment {
        let payment = self
            .accepted(CaptureMethod::Manual, amount, "tok_visa")
            .await;
        let processed = self.worker(TestModeCards).run_once().await.expect("worker");
        assert_eq!(
            processed,
            vec![Processed::Settled(PaymentStatus::Authorized)]
        );
        self.payment(payment.id).await
    }

    /// An automatic payment of `amount`, settled by a test-mode worker (its job the only one).
    async fn succeeded(&self, amount: i64) -> Payment {
        let payment = self
            .accepted(CaptureMethod::Automatic, amount, "tok_visa")
            .await;
        let processed = self.worker(TestModeCards).run_once().await.expect("worker");
        assert_eq!(processed, vec![Processed::Settled(PaymentStatus::Success)]);
        self.payment(payment.id).await
    }

    async fn capture(&self, id: PaymentId, amount: Option<i64>) -> atomic_core::Result<Payment> {
        let amount = amount.map(|a| Amount::new(a).expect("positive"));
        let prepared = self
            .services
            .payments
            .prepare_capture(Principal::Platform, id, amount)
            .await?;
        self.services.payments.submit_capture(&prepared, None).await
    }

    async fn refund(&self, id: PaymentId, amount: Option<i64>) -> atomic_core::Result<Refund> {
        let request = RefundRequest {
            amount: amount.map(|a| Amount::new(a).expect("positive")),
            ..RefundRequest::default()
        };
        self.services
            .refunds
            .create(Principal::Platform, id, request, None)
            .await
    }

    async fn payment(&self, id: PaymentId) -> Payment {
        self.services
            .payments
            .get(Principal::Platform, id)
            .await
            .expect("stored")
    }

    async fn stored_refund(&self, id: RefundId) -> Refund {
        self.services
            .refunds
            .get(Principal::Platform, id)
            .await
            .expect("stored")
    }

    async fn balance(&self) -> i64 {
        balance_of(&self.services, &self.account).await
    }

    /// The USD system account's balance.
    async fn world(&self) -> i64 {
        self.ports
            .store
            .accounts()
            .ensure_system_account(&atomic_core::Account::system(
                Currency::USD,
                Timestamp::now(),
            ))
            .await
            .expect("the system account")
            .balance
            .minor_units()
    }

    /// The shop account's entries, newest first.
    async fn entries(&self) -> Vec<atomic_core::Entry> {
        self.services
            .accounts
            .entries(
                Principal::Platform,
                self.account.id,
                CreatedRange::default(),
                PageRequest::default(),
            )
            .await
            .expect("entries")
            .items
    }

    async fn assert_books_clean(&self) {
        let report = self.store.audit(NEVER_STUCK).await.expect("audit");
        assert!(report.is_clean(), "the audit finds:\n{report}");
    }

    /// Runs `worker` once per attempt of a job the processor never answers: every attempt but
    /// the last is retried, the last one gives the job up to the sweep.
    async fn run_every_attempt(&self, worker: &Worker) {
        for attempt in 1..=MAX_ATTEMPTS {
            let processed = worker.run_once().await.expect("worker");
            if attempt < MAX_ATTEMPTS {
                assert!(
                    matches!(processed[..], [Processed::Retrying { .. }]),
                    "attempt {attempt}: {processed:?}"
                );
            } else {
                assert_eq!(processed, vec![Processed::GaveUp], "the last attempt");
            }
            self.clock.advance(PAST_ANY_BACKOFF);
        }
    }
}

fn amount(minor_units: i64) -> Amount {
    Amount::new(minor_units).expect("positive")
}

#[tokio::test]
async fn a_manual_payment_is_authorized_and_nothing_is_posted() {
    let shop = Shop::open().await;
    let payment = shop.accepted(CaptureMethod::Manual, 100, "tok_visa").await;
    let id = payment.id;
    let mut cards = MockCardProcessor::new();
    cards
        .expect_authorize()
        .withf(move |c| c.payment_id == id && c.amount.minor_units() == 100)
        .times(1)
        .returning(|_| Ok(CardOutcome::Approved));
    cards.expect_charge().times(0);
    cards.expect_capture().times(0);
    cards.expect_void().times(0);

    let processed = shop.worker(cards).run_once().await.expect("worker");

    assert_eq!(
        processed,
        vec![Processed::Settled(PaymentStatus::Authorized)]
    );
    let stored = shop.payment(id).await;
    assert_eq!(stored.state(), PaymentState::Authorized);
    assert_eq!(stored.amount_captured(), 0);
    assert_eq!(
        (shop.balance().await, shop.world().await),
        (0, 0),
        "an authorization posts nothing"
    );
    assert!(shop.entries().await.is_empty());
    shop.assert_books_clean().await;
}

#[tokio::test]
async fn a_declined_authorization_fails_and_posts_nothing() {
    let shop = Shop::open().await;
    let payment = shop
        .accepted(CaptureMethod::Manual, 100, "tok_chargeDeclined")
        .await;

    let processed = shop.worker(TestModeCards).run_once().await.expect("worker");

    assert_eq!(processed, vec![Processed::Settled(PaymentStatus::Failed)]);
    let stored = shop.payment(payment.id).await;
    assert_eq!(stored.failure_reason(), Some(FailureReason::CardDeclined));
    assert_eq!(shop.balance().await, 0);
    shop.assert_books_clean().await;
}

#[tokio::test]
async fn a_capture_posts_the_captured_amount() {
    let shop = Shop::open().await;
    let id = shop.authorized(100).await.id;
    let accepted = shop.capture(id, Some(60)).await.expect("capture accepted");
    assert_eq!(accepted.status(), PaymentStatus::Processing);
    assert_eq!(accepted.state(), PaymentState::Capturing(amount(60)));
    assert_eq!(shop.balance().await, 0, "a request moves no money");
    let mut cards = MockCardProcessor::new();
    cards
        .expect_capture()
        .withf(move |c| c.payment_id == id && c.amount.minor_units() == 60)
        .times(1)
        .returning(|_| Ok(CardOutcome::Approved));
    cards.expect_charge().times(0);
    cards.expect_authorize().times(0);
    cards.expect_void().times(0);

    let processed = shop.worker(cards).run_once().await.expect("worker");

    assert_eq!(processed, vec![Processed::Settled(PaymentStatus::Success)]);
    let stored = shop.payment(id).await;
    assert_eq!(stored.state(), PaymentState::Success(amount(60)));
    assert_eq!((stored.amount_captured(), stored.refundable()), (60, 60));
    assert_eq!((shop.balance().await, shop.world().await), (60, -60));
    let entries = shop.entries().await;
    assert_eq!(entries.len(), 1, "one charge posting: {entries:?}");
    assert_eq!(
        (
            entries[0].direction,
            entries[0].amount.minor_units(),
            entries[0].payment_id,
            entries[0].refund_id
        ),
        (Direction::Credit, 60, id, None)
    );
    shop.assert_books_clean().await;
}

#[tokio::test]
async fn a_capture_without_an_amount_takes_the_whole_authorization() {
    let shop = Shop::open().await;
    let id = shop.authorized(100).await.id;

    let accepted = shop.capture(id, None).await.expect("capture accepted");
    let processed = shop.worker(TestModeCards).run_once().await.expect("worker");

    assert_eq!(accepted.state(), PaymentState::Capturing(amount(100)));
    assert_eq!(processed, vec![Processed::Settled(PaymentStatus::Success)]);
    assert_eq!(shop.payment(id).await.amount_captured(), 100);
    assert_eq!(shop.balance().await, 100);
    shop.assert_books_clean().await;
}

#[tokio::test]
async fn a_capture_the_processor_cannot_answer_is_retried_and_never_voided() {
    let shop = Shop::open().await;
    let id = shop.authorized(100).await.id;
    shop.capture(id, None).await.expect("capture accepted");
    let mut cards = MockCardProcessor::new();
    cards
        .expect_capture()
        .withf(move |c| c.payment_id == id)
        .times(MAX_ATTEMPTS as usize)
        .returning(|_| Err(unavailable()));
    // A capture is once-only at the processor: never voided, never failed for an outage.
    cards.expect_void().times(0);
    cards.expect_charge().times(0);
    cards.expect_authorize().times(0);
    let worker = shop.worker(cards);

    shop.run_every_attempt(&worker).await;
    drop(worker); // checks the processor's expectations

    let stored = shop.payment(id).await;
    assert_eq!(
        stored.state(),
        PaymentState::Capturing(amount(100)),
        "still capturing, never failed"
    );
    assert_eq!(shop.balance().await, 0);
    assert_eq!(shop.queue.dead_letters().len(), 1);
    // The sweep brings it back, and a processor that answers captures it.
    shop.clock.advance(STALE_AFTER);
    assert_eq!(shop.sweeper().tick().await.expect("sweep").requeued, 1);
    let processed = shop.worker(TestModeCards).run_once().await.expect("worker");
    assert_eq!(processed, vec![Processed::Settled(PaymentStatus::Success)]);
    assert_eq!(shop.balance().await, 100);
    shop.assert_books_clean().await;
}

/// A worker mock claiming the capture of 3.00 of `payment`, for the capture tests below.
fn ledger_capturing(payment: &Payment) -> MockSettlementStore {
    let mut ledger = MockSettlementStore::new();
    let (claimed, id) = (payment.clone(), payment.id);
    ledger
        .expect_begin_payments()
        .withf(move |ids, _, _| ids == [id])
        .times(1)
        .returning(move |_, _, _| Ok(vec![BeginOutcome::Claimed(claimed.clone())]));
    ledger.expect_begin_void().times(0);
    ledger
}

#[tokio::test]
async fn worker_posts_exactly_the_requested_capture() {
    let payment = capturing(3_00);
    let id = payment.id;
    let mut ledger = ledger_capturing(&payment);
    let expected = payment.clone();
    let mut settled = payment.clone();
    settled
        .succeed(Timestamp::now())
        .expect("PROCESSING -> SUCCESS");
    ledger
        .expect_settle()
        .withf(move |s| {
            one_payment(s).is_some_and(|(pid, _, result)| {
                pid == id
                    && matches!(result, SettlementResult::Posted(t)
                        if t.matches(&expected) && t.amount().minor_units() == 3_00)
            })
        })
        .times(1)
        .returning(move |_| vec![Ok(SettleOutcome::Payment(settled.clone()))]);
    let mut cards = MockCardProcessor::new();
    cards
        .expect_capture()
        .withf(move |c| c.payment_id == id && c.amount.minor_units() == 3_00)
        .times(1)
        .returning(|_| Ok(CardOutcome::Approved));
    cards.expect_charge().times(0);
    cards.expect_authorize().times(0);
    let mut queue = MockJobQueue::new();
    queue.expect_ack().times(1).returning(|_| Ok(()));
    let worker = worker_with(ledger, queue, cards);

    let outcome = worker.process(&delivery(id, 1)).await;

    assert_eq!(outcome, Processed::Settled(PaymentStatus::Success));
}

#[tokio::test]
async fn worker_gives_an_unanswered_capture_to_the_sweep_on_its_last_attempt_without_voiding_it() {
    let payment = capturing(3_00);
    let id = payment.id;
    let mut ledger = ledger_capturing(&payment);
    ledger.expect_settle().times(0);
    ledger
        .expect_release()
        .withf(move |job, _| *job == Job::Payment(id))
        .times(1)
        .returning(|_, _| Ok(()));
    let mut cards = MockCardProcessor::new();
    cards
        .expect_capture()
        .times(1)
        .returning(|_| Err(unavailable()));
    cards.expect_void().times(0);
    let mut queue = MockJobQueue::new();
    queue.expect_dead_letter().times(1).returning(|_, _| Ok(()));
    queue.expect_ack().times(0);
    queue.expect_retry().times(0);
    let worker = worker_with(ledger, queue, cards);

    let outcome = worker.process(&delivery(id, MAX_ATTEMPTS)).await;

    assert_eq!(
        outcome,
        Processed::GaveUp,
        "a capture is never voided nor failed for an outage"
    );
}

#[tokio::test]
async fn a_refund_is_refunded_at_the_processor_and_posted() {
    let shop = Shop::open().await;
    let pid = shop.succeeded(100).await.id;
    let refund = shop.refund(pid, Some(30)).await.expect("refund accepted");
    assert_eq!(refund.status(), RefundStatus::Pending);
    let reserved = shop.payment(pid).await;
    assert_eq!(
        (
            reserved.amount_reserved(),
            reserved.refundable(),
            reserved.amount_refunded()
        ),
        (30, 70, 0)
    );
    assert_eq!(shop.balance().await, 100, "a request moves no money");
    let rid = refund.id;
    let mut cards = MockCardProcessor::new();
    cards
        .expect_refund()
        .withf(move |r| {
            r.refund_id == rid
                && r.payment_id == pid
                && r.amount.minor_units() == 30
                && r.currency == Currency::USD
        })
        .times(1)
        .returning(|_| Ok(CardOutcome::Approved));
    cards.expect_charge().times(0);
    cards.expect_capture().times(0);
    cards.expect_void().times(0);

    let processed = shop.worker(cards).run_once().await.expect("worker");

    assert_eq!(
        processed,
        vec![Processed::RefundSettled(RefundStatus::Success)]
    );
    assert_eq!(shop.stored_refund(rid).await.state(), RefundState::Success);
    let stored = shop.payment(pid).await;
    assert_eq!(
        stored.status(),
        PaymentStatus::Success,
        "a refund never changes the payment's status"
    );
    assert_eq!(
        (
            stored.amount_captured(),
            stored.amount_refunded(),
            stored.refundable()
        ),
        (100, 30, 70)
    );
    assert_eq!((shop.balance().await, shop.world().await), (70, -70));
    let entries = shop.entries().await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    let posting = entries
        .iter()
        .find(|e| e.refund_id == Some(rid))
        .expect("the refund's posting");
    assert_eq!(
        (
            posting.direction,
            posting.amount.minor_units(),
            posting.payment_id
        ),
        (Direction::Debit, 30, pid)
    );
    shop.assert_books_clean().await;
}

/// An account store whose every account has `balance`: the worker's cover check passes.
fn accounts_covering(balance: i64) -> MockAccountStore {
    let mut accounts = MockAccountStore::new();
    accounts.expect_account().returning(move |id, _| {
        let mut account = atomic_core::Account::open(
            atomic_core::account::AccountName::parse("covered").expect("name"),
            Currency::USD,
            atomic_core::Owner::Platform,
            Timestamp::now(),
        )
        .into_inner();
        account.id = id;
        account.balance = atomic_core::Balance::from_minor_units(balance);
        Ok(Some(account))
    });
    accounts
}

#[tokio::test]
async fn worker_retries_and_never_fails_a_refund_the_processor_paid_when_the_books_refuse_it() {
    let mut payment = succeeded();
    let refund = processing_refund(&mut payment, 4_50);
    let rid = refund.id;
    let mut ledger = MockSettlementStore::new();
    let claimed = refund.clone();
    ledger
        .expect_begin_refunds()
        .times(1)
        .returning(move |_, _, _| Ok(vec![RefundBegin::Claimed(claimed.clone())]));
    ledger.expect_begin_payments().times(0);
    ledger
        .expect_settle()
        .withf(move |s| {
            one_refund(s).is_some_and(|(id, _, result)| {
                id == rid && matches!(result, RefundResult::Posted(_))
            })
        })
        .times(1)
        .returning(|_| vec![Err(Error::Invariant(Invariant::InsufficientFunds))]);
    ledger
        .expect_release()
        .withf(move |job, _| *job == Job::Refund(rid))
        .times(1)
        .returning(|_, _| Ok(()));
    let mut cards = MockCardProcessor::new();
    cards
        .expect_refund()
        .times(1)
        .returning(|_| Ok(CardOutcome::Approved));
    let mut queue = MockJobQueue::new();
    queue.expect_ack().times(0);
    queue.expect_retry().times(1).returning(|_, _| Ok(()));
    queue.expect_dead_letter().times(0);
    let ports = Ports {
        queue: Arc::new(queue),
        cards: Arc::new(cards),
        ..with_store(memory_ports(), |store| {
            store
                .with_settlement(Arc::new(ledger))
                .with_accounts(Arc::new(accounts_covering(10_000)))
        })
    };
    let worker = Worker::new(&ports, worker_config());

    let outcome = worker
        .process(&Delivery {
            receipt: "receipt-1".to_owned(),
            job: Job::Refund(rid),
            attempt: 1,
        })
        .await;

    assert!(
        matches!(outcome, Processed::Retrying { .. }),
        "a refund the processor paid is owed, never failed: {outcome:?}"
    );
}

#[tokio::test]
async fn a_refund_the_balance_cannot_cover_fails_without_asking_the_processor() {
    let shop = Shop::open().await;
    let pid = shop.succeeded(100).await.id;
    let refund = shop.refund(pid, None).await.expect("refund accepted");
    assert_eq!(refund.amount.minor_units(), 100, "all that was captured");
    shop.store
        .testkit_drain(
            shop.account.id,
            atomic_core::Amount::new(1).expect("amount"),
        )
        .expect("drained");
    let mut cards = MockCardProcessor::new();
    cards.expect_refund().times(0);

    let processed = shop.worker(cards).run_once().await.expect("worker");

    assert_eq!(
        processed,
        vec![Processed::RefundSettled(RefundStatus::Failed)]
    );
    assert_eq!(
        shop.stored_refund(refund.id).await.state(),
        RefundState::Failed(RefundFailureReason::InsufficientBalance)
    );
    let stored = shop.payment(pid).await;
    assert_eq!(
        (
            stored.amount_refunded(),
            stored.amount_reserved(),
            stored.refundable()
        ),
        (0, 0, 100),
        "its amount is refundable again"
    );
    assert!(shop.entries().await.iter().all(|e| e.refund_id.is_none()));
}

#[tokio::test]
async fn a_refund_the_processor_paid_is_posted_once_the_books_take_it() {
    let shop = Shop::open().await;
    let pid = shop.succeeded(100).await.id;
    let refund = shop.refund(pid, None).await.expect("refund accepted");
    shop.watched.refuse_refund_postings(true);

    let processed = shop.worker(TestModeCards).run_once().await.expect("worker");

    assert!(
        matches!(processed.as_slice(), [Processed::Retrying { .. }]),
        "{processed:?}"
    );
    assert_eq!(shop.balance().await, 100, "nothing posted yet");
    shop.watched.refuse_refund_postings(false);
    shop.clock.advance(Duration::from_secs(60));
    let processed = shop.worker(TestModeCards).run_once().await.expect("worker");
    assert_eq!(
        processed,
        vec![Processed::RefundSettled(RefundStatus::Success)]
    );
    assert_eq!(
        shop.stored_refund(refund.id).await.status(),
        RefundStatus::Success
    );
    assert_eq!(shop.balance().await, 0);
    shop.assert_books_clean().await;
}

#[tokio::test]
async fn a_refund_the_processor_cannot_answer_is_retried_and_never_failed() {
    let shop = Shop::open().await;
    let pid = shop.succeeded(100).await.id;
    let rid = shop.refund(pid, Some(40)).await.expect("accepted").id;
    shop.watched.forget_calls();
    let mut cards = MockCardProcessor::new();
    cards
        .expect_refund()
        .withf(move |r| r.refund_id == rid)
        .times(MAX_ATTEMPTS as usize)
        .returning(|_| Err(unavailable()));
    cards.expect_void().times(0);
    cards.expect_charge().times(0);
    let worker = shop.worker(cards);

    shop.run_every_attempt(&worker).await;
    drop(worker); // checks the processor's expectations

    assert!(
        shop.watched.settle_calls().is_empty(),
        "never settled, so never failed"
    );
    assert_eq!(
        shop.stored_refund(rid).await.status(),
        RefundStatus::Processing
    );
    let stored = shop.payment(pid).await;
    assert_eq!(
        (stored.amount_reserved(), stored.refundable()),
        (40, 60),
        "still reserved"
    );
    assert_eq!(shop.balance().await, 100);
    // The sweep brings it back, and a processor that answers refunds it.
    shop.clock.advance(STALE_AFTER);
    assert_eq!(shop.sweeper().tick().await.expect("sweep").requeued, 1);
    let processed = shop.worker(TestModeCards).run_once().await.expect("worker");
    assert_eq!(
        processed,
        vec![Processed::RefundSettled(RefundStatus::Success)]
    );
    assert_eq!(shop.balance().await, 60);
    shop.assert_books_clean().await;
}

#[tokio::test]
async fn the_sweep_requeues_stale_refunds_and_captures_but_not_authorizations() {
    let shop = Shop::open().await;
    let paid = shop.succeeded(100).await.id;
    let captured = shop.authorized(100).await.id;
    let waiting = shop.authorized(100).await.id;
    let refund = shop.refund(paid, Some(25)).await.expect("accepted").id;
    shop.capture(captured, Some(50)).await.expect("accepted");
    // Their jobs are lost (a flushed queue).
    shop.queue.flush();
    let sweeper = shop.sweeper();
    assert_eq!(
        sweeper.tick().await.expect("sweep").requeued,
        0,
        "not stale yet"
    );
    shop.clock.advance(STALE_AFTER);

    let report = sweeper.tick().await.expect("sweep");

    assert_eq!(
        report,
        SweepReport {
            requeued: 2,
            expired: 0,
            purged_keys: 0,
            purged_events: 0
        }
    );
    assert_eq!(
        sweeper.tick().await.expect("sweep").requeued,
        0,
        "re-enqueued once per stale_after"
    );
    let processed = shop.worker(TestModeCards).run_once().await.expect("worker");
    assert_eq!(processed.len(), 2, "{processed:?}");
    assert!(processed.contains(&Processed::Settled(PaymentStatus::Success)));
    assert!(processed.contains(&Processed::RefundSettled(RefundStatus::Success)));
    assert_eq!(shop.payment(captured).await.amount_captured(), 50);
    assert_eq!(
        shop.stored_refund(refund).await.status(),
        RefundStatus::Success
    );
    assert_eq!(
        shop.payment(waiting).await.status(),
        PaymentStatus::Authorized
    );
    assert_eq!(shop.balance().await, 100 - 25 + 50);
    shop.assert_books_clean().await;
}

#[tokio::test]
async fn the_sweep_expires_an_authorization_exactly_once() {
    let shop = Shop::open().await;
    let ttl = CoreConfig::default().authorization_ttl;
    let hour = Duration::from_secs(3600);
    let early = shop.authorized(100).await.id;
    shop.clock.advance(hour);
    let late = shop.authorized(100).await.id;
    shop.clock.advance(ttl - hour - Duration::from_secs(1));
    let sweeper = shop.sweeper();
    assert_eq!(
        sweeper.tick().await.expect("sweep").expired,
        0,
        "one second before its time"
    );
    shop.clock.advance(Duration::from_secs(1));

    // Two sweepers at once: exactly one cancels it.
    let other = shop.sweeper();
    let (a, b) = tokio::join!(sweeper.tick(), other.tick());

    assert_eq!(a.expect("sweep").expired + b.expect("sweep").expired, 1);
    assert_eq!(
        sweeper.tick().await.expect("sweep").expired,
        0,
        "exactly once"
    );
    assert_eq!(
        shop.payment(early).await.state(),
        PaymentState::Canceled(CancellationReason::Expired)
    );
    assert_eq!(
        shop.payment(late).await.status(),
        PaymentStatus::Authorized,
        "authorized later: not yet expired"
    );
    // Nothing was posted, and a job for it finds nothing to do (the processor is not asked).
    shop.queue
        .enqueue(&[Job::Payment(early)])
        .await
        .expect("enqueue");
    let processed = shop
        .worker(MockCardProcessor::new())
        .run_once()
        .await
        .expect("worker");
    assert_eq!(processed, vec![Processed::AlreadyFinished]);
    assert_eq!(shop.balance().await, 0);
    shop.assert_books_clean().await;
}

#[tokio::test]
async fn sweep_expires_authorizations_in_full_batches_with_the_configured_ttl() {
    let ttl = Duration::from_secs(120);
    let expired = |n: usize| -> Vec<Payment> {
        (0..n)
            .map(|_| {
                let mut p = finished(
                    &new_payment("tok_visa", CaptureMethod::Manual),
                    &SettlementResult::Authorized,
                );
                p.cancel(CancellationReason::Expired, Timestamp::now())
                    .expect("AUTHORIZED -> CANCELED");
                p
            })
            .collect()
    };
    let mut ledger = MockSettlementStore::new();
    ledger.expect_sweep().returning(|_, _| Ok(Vec::new()));
    ledger
        .expect_open_payments()
        .returning(|| Ok(atomic_core::ports::OpenPayments::default()));
    let mut seq = mockall::Sequence::new();
    let full = expired(2);
    ledger
        .expect_expire_authorizations()
        .withf(move |t, batch| *t == ttl && *batch == 2)
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _| Ok(full.clone()));
    let short = expired(1);
    ledger
        .expect_expire_authorizations()
        .withf(move |t, batch| *t == ttl && *batch == 2)
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |_, _| Ok(short.clone()));
    let mut queue = MockJobQueue::new();
    queue.expect_enqueue().times(0);
    let mut idempotency = MockIdempotencyStore::new();
    idempotency.expect_purge_expired().returning(|_| Ok(0));
    let ports = Ports {
        queue: Arc::new(queue),
        ..with_store(memory_ports(), |store| {
            store
                .with_settlement(Arc::new(ledger))
                .with_idempotency(Arc::new(idempotency))
        })
    };
    let sweeper = Sweeper::new(
        &ports,
        SweepConfig {
            batch: 2,
            ..sweep_config()
        },
        ttl,
        atomic_core::service::DEFAULT_EVENT_RETENTION,
    );

    let report = sweeper.tick().await.expect("tick");

    assert_eq!(report.expired, 3);
}

#[tokio::test]
async fn capture_checks_the_payment_then_its_state_then_the_amount() {
    let shop = Shop::open().await;
    let ttl = CoreConfig::default().authorization_ttl;
    let stranger = Principal::Merchant(MerchantId::generate());
    let too_much = Some(amount(101));
    let paid = shop.succeeded(100).await.id;
    let authorized = shop.authorized(100).await.id;
    let pending = shop
        .accepted(CaptureMethod::Manual, 100, "tok_visa")
        .await
        .id;
    let capture = |caller, id, amount| shop.services.payments.prepare_capture(caller, id, amount);

    // 404: no such payment, or one the caller may not see, whatever the amount.
    let unknown = capture(Principal::Platform, PaymentId::generate(), too_much).await;
    assert!(matches!(unknown, Err(Error::NotFound)), "{unknown:?}");
    let foreign = capture(stranger, authorized, too_much).await;
    assert!(matches!(foreign, Err(Error::NotFound)), "{foreign:?}");
    // 409 before 422: a payment that is not AUTHORIZED, even with too large an amount.
    for (id, status) in [
        (pending, PaymentStatus::Pending),
        (paid, PaymentStatus::Success),
    ] {
        let refused = capture(Principal::Platform, id, too_much).await;
        assert!(
            matches!(refused, Err(Error::InvalidState { status: s }) if s == status),
            "{refused:?}"
        );
    }
    // 422 once AUTHORIZED; the whole authorization is capturable.
    let over = capture(Principal::Platform, authorized, too_much).await;
    assert!(
        matches!(over, Err(Error::AmountExceedsCapturable)),
        "{over:?}"
    );
    let whole = capture(Principal::Platform, authorized, Some(amount(100)))
        .await
        .expect("the whole authorization");
    assert_eq!(whole.state(), PaymentState::Capturing(amount(100)));
    assert_eq!(
        shop.payment(authorized).await.status(),
        PaymentStatus::Authorized,
        "prepare writes nothing"
    );

    // Up to AUTHORIZATION_TTL a capture is accepted; from then on it is 409, before the sweep
    // has run, and the store refuses a capture prepared in time but submitted too late.
    shop.clock.advance(ttl - Duration::from_secs(1));
    let in_time = capture(Principal::Platform, authorized, Some(amount(50)))
        .await
        .expect("one second before the TTL");
    shop.clock.advance(Duration::from_secs(1));
    for amount in [None, too_much] {
        let late = capture(Principal::Platform, authorized, amount).await;
        assert!(
            matches!(
                late,
                Err(Error::InvalidState {
                    status: PaymentStatus::Authorized
                })
            ),
            "{late:?}"
        );
    }
    let submitted = shop.services.payments.submit_capture(&in_time, None).await;
    assert!(
        matches!(
            submitted,
            Err(Error::InvalidState {
                status: PaymentStatus::Authorized
            })
        ),
        "{submitted:?}"
    );
    assert_eq!(
        shop.payment(authorized).await.status(),
        PaymentStatus::Authorized,
        "not swept yet"
    );
    assert_eq!(shop.sweeper().tick().await.expect("sweep").expired, 1);
    let canceled = capture(Principal::Platform, authorized, None).await;
    assert!(
        matches!(
            canceled,
            Err(Error::InvalidState {
                status: PaymentStatus::Canceled
            })
        ),
        "{canceled:?}"
    );
    shop.assert_books_clean().await;
}

#[tokio::test]
async fn cancel_checks_the_payment_then_its_state_and_moves_no_money() {
    let shop = Shop::open().await;
    let stranger = Principal::Merchant(MerchantId::generate());
    let paid = shop.succeeded(100).await.id;
    let capturing = shop.authorized(100).await.id;
    let authorized = shop.authorized(100).await.id;
    shop.capture(capturing, None).await.expect("accepted");
    let pending = shop
        .accepted(CaptureMethod::Manual, 100, "tok_visa")
        .await
        .id;
    let cancel = |caller, id| shop.services.payments.prepare_cancel(caller, id);

    let unknown = cancel(Principal::Platform, PaymentId::generate()).await;
    assert!(matches!(unknown, Err(Error::NotFound)), "{unknown:?}");
    let foreign = cancel(stranger, authorized).await;
    assert!(matches!(foreign, Err(Error::NotFound)), "{foreign:?}");
    for (id, status) in [
        (pending, PaymentStatus::Pending),
        (paid, PaymentStatus::Success),
        (capturing, PaymentStatus::Processing),
    ] {
        let refused = cancel(Principal::Platform, id).await;
        assert!(
            matches!(refused, Err(Error::InvalidState { status: s }) if s == status),
            "{refused:?}"
        );
    }
    let prepared = cancel(Principal::Platform, authorized)
        .await
        .expect("an authorization is canceled");
    assert_eq!(
        shop.payment(authorized).await.status(),
        PaymentStatus::Authorized,
        "prepare writes nothing"
    );
    let canceled = shop
        .services
        .payments
        .submit_cancel(&prepared, None)
        .await
        .expect("canceled");

    assert_eq!(
        canceled.state(),
        PaymentState::Canceled(CancellationReason::Requested)
    );
    assert_eq!(shop.payment(authorized).await, canceled);
    let again = cancel(Principal::Platform, authorized).await;
    assert!(
        matches!(
            again,
            Err(Error::InvalidState {
                status: PaymentStatus::Canceled
            })
        ),
        "{again:?}"
    );
    let late = shop.services.payments.submit_cancel(&prepared, None).await;
    assert!(
        matches!(
            late,
            Err(Error::InvalidState {
                status: PaymentStatus::Canceled
            })
        ),
        "a second cancel is refused by the store: {late:?}"
    );
    assert_eq!(shop.balance().await, 100, "only the charge of `paid`");
    shop.assert_books_clean().await;
}

#[tokio::test]
async fn refund_checks_the_payment_then_its_state_then_the_amount() {
    let shop = Shop::open().await;
    let stranger = Principal::Merchant(MerchantId::generate());
    let paid = shop.succeeded(100).await.id;
    let authorized = shop.authorized(100).await.id;
    let pending = shop
        .accepted(CaptureMethod::Automatic, 100, "tok_visa")
        .await
        .id;
    let check = |caller, id, amount: Option<i64>| {
        shop.services.refunds.prepare(
            caller,
            id,
            RefundRequest {
                amount: amount.map(|a| Amount::new(a).expect("positive")),
                ..RefundRequest::default()
            },
            None,
        )
    };

    let unknown = check(Principal::Platform, PaymentId::generate(), Some(1_000)).await;
    assert!(matches!(unknown, Err(Error::NotFound)), "{unknown:?}");
    let foreign = check(stranger, paid, Some(1_000)).await;
    assert!(matches!(foreign, Err(Error::NotFound)), "{foreign:?}");
    for (id, status) in [
        (pending, PaymentStatus::Pending),
        (authorized, PaymentStatus::Authorized),
    ] {
        for amount in [None, Some(1_000)] {
            let refused = check(Principal::Platform, id, amount).await;
            assert!(
                matches!(refused, Err(Error::InvalidState { status: s }) if s == status),
                "{refused:?}"
            );
        }
    }
    let over = check(Principal::Platform, paid, Some(101)).await;
    assert!(
        matches!(over, Err(Error::AmountExceedsRefundable)),
        "{over:?}"
    );

    shop.refund(paid, Some(60)).await.expect("a partial refund");
    let over = check(Principal::Platform, paid, Some(41)).await;
    assert!(
        matches!(over, Err(Error::AmountExceedsRefundable)),
        "a pending refund is reserved: {over:?}"
    );
    let rest = shop.refund(paid, None).await.expect("the rest");
    assert_eq!(rest.amount.minor_units(), 40, "the default is what is left");
    for amount in [None, Some(1)] {
        let nothing_left = check(Principal::Platform, paid, amount).await;
        assert!(
            matches!(nothing_left, Err(Error::AmountExceedsRefundable)),
            "{nothing_left:?}"
        );
    }
    let settled = shop.worker(TestModeCards).run_once().await.expect("worker");
    assert_eq!(settled.len(), 3, "two refunds and the pending payment");
    let stored = shop.payment(paid).await;
    assert_eq!((stored.amount_refunded(), stored.refundable()), (100, 0));
    assert_eq!(
        shop.balance().await,
        100,
        "paid, refunded; pending captured"
    );
    shop.assert_books_clean().await;
}

#[tokio::test]
async fn a_mixed_batch_of_charges_captures_and_refunds_settles_in_one_store_call() {
    let shop = Shop::open().await;
    let paid = shop.succeeded(100).await.id;
    let held = shop.authorized(100).await.id;
    shop.watched.forget_calls();
    let charged = shop
        .accepted(CaptureMethod::Automatic, 70, "tok_visa")
        .await
        .id;
    shop.capture(held, Some(40)).await.expect("accepted");
    let refund = shop.refund(paid, Some(30)).await.expect("accepted").id;

    let processed = shop.worker(TestModeCards).run_once().await.expect("worker");

    assert_eq!(
        processed,
        vec![
            Processed::Settled(PaymentStatus::Success),
            Processed::Settled(PaymentStatus::Success),
            Processed::RefundSettled(RefundStatus::Success),
        ]
    );
    let calls = shop.watched.settle_calls();
    assert_eq!(calls.len(), 1, "one settle call for the batch: {calls:?}");
    let posted: Vec<(Option<PaymentId>, Option<RefundId>, i64)> = calls[0]
        .iter()
        .map(|s| match s {
            Settlement::Payment {
                payment_id,
                result: SettlementResult::Posted(t),
                ..
            } => (Some(*payment_id), None, t.amount().minor_units()),
            Settlement::Refund {
                refund_id,
                result: RefundResult::Posted(t),
                ..
            } => (None, Some(*refund_id), t.amount().minor_units()),
            other => panic!("not a posting: {other:?}"),
        })
        .collect();
    assert_eq!(
        posted,
        vec![
            (Some(charged), None, 70),
            (Some(held), None, 40),
            (None, Some(refund), 30)
        ]
    );
    assert_eq!(
        (shop.balance().await, shop.world().await),
        (100 + 70 + 40 - 30, -(100 + 70 + 40 - 30))
    );
    shop.assert_books_clean().await;
}

#[tokio::test]
async fn a_queue_outage_does_not_hold_back_the_expiry_of_authorizations() {
    let shop = Shop::open().await;
    let ttl = CoreConfig::default().authorization_ttl;
    let held = shop.authorized(100).await.id;
    // A payment whose job is lost, stale by the time the authorization expires: the sweep has
    // a job to enqueue, and the queue is down.
    shop.accepted(CaptureMethod::Automatic, 100, "tok_visa")
        .await;
    shop.queue.flush();
    shop.clock.advance(ttl);
    let mut queue = MockJobQueue::new();
    queue
        .expect_enqueue()
        .times(1)
        .returning(|_| Err(unavailable()));
    let sweeper = Sweeper::new(
        &Ports {
            queue: Arc::new(queue),
            ..shop.ports.clone()
        },
        sweep_config(),
        ttl,
        atomic_core::service::DEFAULT_EVENT_RETENTION,
    );

    let swept = sweeper.tick().await;

    assert!(matches!(swept, Err(Error::Unavailable(_))), "{swept:?}");
    assert_eq!(
        shop.payment(held).await.state(),
        PaymentState::Canceled(CancellationReason::Expired),
        "expiry needs only the store"
    );
    shop.assert_books_clean().await;
}

// ---------------------------------------------------------------------------------------------
// Races on one payment (TEST-MATRIX rows 33 and 34, in memory)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_refunds_of_thirty_percent_reserve_no_more_than_was_captured() {
    let shop = Shop::open().await;
    let pid = shop.succeeded(10_000).await.id;
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (services, barrier) = (shop.services.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            let request = RefundRequest {
                amount: Some(amount(3_000)),
                ..RefundRequest::default()
            };
            services
                .refunds
                .create(Principal::Platform, pid, request, None)
                .await
        });
    }
    let mut accepted = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("a refund task") {
            Ok(_) => accepted += 1,
            Err(Error::AmountExceedsRefundable) => {}
            Err(other) => panic!("a refund answered {other:?}"),
        }
    }

    assert_eq!(accepted, 3, "three refunds of 30% fit, a fourth never");
    assert_eq!(shop.payment(pid).await.amount_reserved(), 9_000);
    let processed = shop.worker(TestModeCards).run_once().await.expect("worker");
    assert_eq!(
        processed,
        vec![Processed::RefundSettled(RefundStatus::Success); 3]
    );
    let stored = shop.payment(pid).await;
    assert_eq!(
        (stored.amount_refunded(), stored.refundable()),
        (9_000, 1_000)
    );
    assert_eq!(shop.balance().await, 1_000);
    shop.assert_books_clean().await;
}

/// Asks for a capture and a cancel of `id` at once; the results, capture first.
async fn capture_and_cancel_at_once(
    shop: &Shop,
    id: PaymentId,
) -> (atomic_core::Result<Payment>, atomic_core::Result<Payment>) {
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let (services, at) = (shop.services.clone(), barrier.clone());
    let capture = tokio::spawn(async move {
        at.wait().await;
        let prepared = services
            .payments
            .prepare_capture(Principal::Platform, id, None)
            .await?;
        services.payments.submit_capture(&prepared, None).await
    });
    let (services, at) = (shop.services.clone(), barrier);
    let cancel = tokio::spawn(async move {
        at.wait().await;
        let prepared = services
            .payments
            .prepare_cancel(Principal::Platform, id)
            .await?;
        services.payments.submit_cancel(&prepared, None).await
    });
    (
        capture.await.expect("the capture task"),
        cancel.await.expect("the cancel task"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_racing_a_cancel_has_exactly_one_winner() {
    let shop = Shop::open().await;
    let (mut captures, mut cancels) = (0, 0);
    for round in 0..20 {
        let id = shop.authorized(100).await.id;

        let (capture, cancel) = capture_and_cancel_at_once(&shop, id).await;

        let processed = shop.worker(TestModeCards).run_once().await.expect("worker");
        let stored = shop.payment(id).await;
        match (capture, cancel) {
            (Ok(_), Err(Error::InvalidState { status })) => {
                assert_eq!(status, PaymentStatus::Processing, "round {round}");
                assert_eq!(processed, vec![Processed::Settled(PaymentStatus::Success)]);
                assert_eq!(stored.amount_captured(), 100, "round {round}");
                captures += 1;
            }
            (Err(Error::InvalidState { status }), Ok(_)) => {
                assert_eq!(status, PaymentStatus::Canceled, "round {round}");
                assert!(processed.is_empty(), "round {round}: {processed:?}");
                assert_eq!(
                    stored.state(),
                    PaymentState::Canceled(CancellationReason::Requested)
                );
                cancels += 1;
            }
            other => panic!("round {round}: not exactly one winner: {other:?}"),
        }
    }
    assert_eq!(shop.balance().await, 100 * captures);
    assert_eq!(captures + cancels, 20);
    shop.assert_books_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_captures_at_once_post_once_and_a_refund_waits_for_success() {
    let shop = Shop::open().await;
    let id = shop.authorized(100).await.id;
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let mut tasks = tokio::task::JoinSet::new();
    for part in [40, 60] {
        let (services, barrier) = (shop.services.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            let prepared = services
                .payments
                .prepare_capture(Principal::Platform, id, Some(amount(part)))
                .await?;
            services.payments.submit_capture(&prepared, None).await
        });
    }
    let mut won = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("a capture task") {
            Ok(payment) => won.push(payment.state()),
            Err(Error::InvalidState {
                status: PaymentStatus::Processing,
            }) => {}
            Err(other) => panic!("a capture answered {other:?}"),
        }
    }
    assert_eq!(won.len(), 1, "one capture wins: {won:?}");
    let PaymentState::Capturing(captured) = won[0] else {
        panic!("the winner is capturing: {won:?}");
    };
    let early = shop.refund(id, Some(1)).await;
    assert!(
        matches!(
            early,
            Err(Error::InvalidState {
                status: PaymentStatus::Processing
            })
        ),
        "no refund before SUCCESS: {early:?}"
    );

    let processed = shop.worker(TestModeCards).run_once().await.expect("worker");

    assert_eq!(processed, vec![Processed::Settled(PaymentStatus::Success)]);
    assert_eq!(shop.balance().await, captured.minor_units(), "posted once");
    assert_eq!(shop.entries().await.len(), 1);
    shop.assert_books_clean().await;
}

// ---------------------------------------------------------------------------------------------
// Idempotency of captures, cancels and refunds
// ---------------------------------------------------------------------------------------------

impl Shop {
    /// A claim of a fresh key by the platform.
    async fn claim(&self, key: &str) -> atomic_core::idempotency::Claim {
        match self
            .services
            .claim_idempotency_key(
                Principal::Platform,
                &IdempotencyKey::parse(key).expect("a valid key"),
                Fingerprint::of("POST", "/test", key.as_bytes()),
            )
            .await
            .expect("claim")
        {
            ClaimOutcome::Acquired(claim) => claim,
            other => panic!("a fresh key is acquired, got {other:?}"),
        }
    }

    /// Lets `claim` run past its lock timeout and takes its key over, so `claim` is lost.
    async fn lose(&self, claim: &atomic_core::idempotency::Claim) {
        self.clock
            .advance(CoreConfig::default().idempotency.lock_timeout);
        let taken = self
            .services
            .claim_idempotency_key(
                Principal::Platform,
                &claim.key,
                Fingerprint::of("POST", "/test", b"another body"),
            )
            .await
            .expect("claim");
        assert!(matches!(taken, ClaimOutcome::Acquired(_)), "{taken:?}");
    }
}

fn completion_of(claim: atomic_core::idempotency::Claim) -> Completion {
    Completion {
        claim,
        fingerprint: Fingerprint::of("POST", "/test", b"{}"),
        policy: CoreConfig::default().idempotency,
        response: StoredResponse {
            status: 202,
            body: bytes::Bytes::from_static(b"{}"),
        },
    }
}

#[tokio::test]
async fn a_refund_carries_its_key_and_one_whose_claim_was_lost_reserves_nothing() {
    let shop = Shop::open().await;
    let pid = shop.succeeded(100).await.id;
    let claim = shop.claim("refund-1").await;
    let refund = shop
        .services
        .refunds
        .prepare(
            Principal::Platform,
            pid,
            RefundRequest::default(),
            Some(&claim),
        )
        .await
        .expect("prepared");
    assert_eq!(refund.idempotency_key.as_ref(), Some(&claim.key));
    let stranger = Principal::Merchant(MerchantId::generate());
    let foreign = shop
        .services
        .refunds
        .prepare(stranger, pid, RefundRequest::default(), Some(&claim))
        .await;
    assert!(
        matches!(foreign, Err(Error::IdempotencyClaimLost)),
        "a claim is used only by its scope: {foreign:?}"
    );
    shop.lose(&claim).await;

    let submitted = shop
        .services
        .refunds
        .submit(&refund, Some(completion_of(claim)))
        .await;

    assert!(
        matches!(submitted, Err(Error::IdempotencyClaimLost)),
        "{submitted:?}"
    );
    let stored = shop.payment(pid).await;
    assert_eq!(
        (stored.amount_reserved(), stored.refundable()),
        (0, 100),
        "nothing reserved"
    );
    assert!(
        shop.services
            .refunds
            .get(Principal::Platform, refund.id)
            .await
            .is_err(),
        "nothing stored"
    );
    assert_eq!(shop.queue.waiting(), 0, "nothing enqueued");
}

#[tokio::test]
async fn a_capture_or_cancel_whose_claim_was_lost_changes_nothing() {
    let shop = Shop::open().await;
    let id = shop.authorized(100).await.id;
    let payments = &shop.services.payments;
    let capture = payments
        .prepare_capture(Principal::Platform, id, None)
        .await
        .expect("prepared");
    let cancel = payments
        .prepare_cancel(Principal::Platform, id)
        .await
        .expect("prepared");
    let (first, second) = (shop.claim("capture-1").await, shop.claim("cancel-1").await);
    // Each is lost just before its write: a taker's own claim is presumed dead one lock
    // timeout later.
    shop.lose(&first).await;
    let captured = payments
        .submit_capture(&capture, Some(completion_of(first)))
        .await;
    shop.lose(&second).await;
    let canceled = payments
        .submit_cancel(&cancel, Some(completion_of(second)))
        .await;

    assert!(
        matches!(captured, Err(Error::IdempotencyClaimLost)),
        "{captured:?}"
    );
    assert!(
        matches!(canceled, Err(Error::IdempotencyClaimLost)),
        "{canceled:?}"
    );
    assert_eq!(shop.payment(id).await.state(), PaymentState::Authorized);
    assert_eq!(shop.queue.waiting(), 0, "nothing enqueued");
}

fn key(text: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey::parse(text).expect("a valid key"))
}

#[tokio::test]
async fn capturing_twice_under_one_key_captures_once() {
    let shop = Shop::open().await;
    let id = shop.authorized(100).await.id;
    let payments = &shop.services.payments;

    let first = payments
        .capture(Principal::Platform, id, Some(amount(60)), key("cap-1"))
        .await
        .expect("captured");
    let again = payments
        .capture(Principal::Platform, id, Some(amount(60)), key("cap-1"))
        .await
        .expect("replayed, not refused");
    let other = payments
        .capture(Principal::Platform, id, Some(amount(70)), key("cap-1"))
        .await;
    let unkeyed = payments
        .capture(Principal::Platform, id, Some(amount(60)), None)
        .await;

    assert_eq!(first.state(), PaymentState::Capturing(amount(60)));
    assert_eq!(again, shop.payment(id).await, "the payment as it stands");
    assert!(
        matches!(other, Err(Error::IdempotencyKeyReused)),
        "{other:?}"
    );
    assert!(
        matches!(
            unkeyed,
            Err(Error::InvalidState {
                status: PaymentStatus::Processing
            })
        ),
        "{unkeyed:?}"
    );
    let processed = shop.worker(TestModeCards).run_once().await.expect("worker");
    assert_eq!(processed, vec![Processed::Settled(PaymentStatus::Success)]);
    assert_eq!(shop.balance().await, 60, "posted once");
    let replayed = payments
        .capture(Principal::Platform, id, Some(amount(60)), key("cap-1"))
        .await
        .expect("still replayed");
    assert_eq!(replayed.state(), PaymentState::Success(amount(60)));
    shop.assert_books_clean().await;
}

#[tokio::test]
async fn a_refused_capture_frees_its_key_for_a_retry() {
    let shop = Shop::open().await;
    let payment = shop.accepted(CaptureMethod::Manual, 100, "tok_visa").await;
    let payments = &shop.services.payments;

    let early = payments
        .capture(Principal::Platform, payment.id, None, key("cap-2"))
        .await;
    assert!(
        matches!(
            early,
            Err(Error::InvalidState {
                status: PaymentStatus::Pending
            })
        ),
        "{early:?}"
    );
    let processed = shop.worker(TestModeCards).run_once().await.expect("worker");
    assert_eq!(
        processed,
        vec![Processed::Settled(PaymentStatus::Authorized)]
    );
    let retried = payments
        .capture(Principal::Platform, payment.id, None, key("cap-2"))
        .await
        .expect("the key runs anew");

    assert_eq!(retried.state(), PaymentState::Capturing(amount(100)));
}

#[tokio::test]
async fn canceling_twice_under_one_key_answers_the_cancel() {
    let shop = Shop::open().await;
    let id = shop.authorized(100).await.id;
    let payments = &shop.services.payments;

    let first = payments
        .cancel(Principal::Platform, id, key("cancel-1"))
        .await
        .expect("canceled");
    let again = payments
        .cancel(Principal::Platform, id, key("cancel-1"))
        .await
        .expect("replayed, not refused");
    let unkeyed = payments.cancel(Principal::Platform, id, None).await;

    assert_eq!(
        first.state(),
        PaymentState::Canceled(CancellationReason::Requested)
    );
    assert_eq!(again, first);
    assert!(
        matches!(
            unkeyed,
            Err(Error::InvalidState {
                status: PaymentStatus::Canceled
            })
        ),
        "{unkeyed:?}"
    );
}

#[tokio::test]
async fn refunding_twice_under_one_key_creates_one_refund() {
    let shop = Shop::open().await;
    let pid = shop.succeeded(100).await.id;
    let refunds = &shop.services.refunds;
    let thirty = || RefundRequest {
        amount: Some(amount(30)),
        ..RefundRequest::default()
    };

    let first = refunds
        .create(Principal::Platform, pid, thirty(), key("refund-1"))
        .await
        .expect("refund accepted");
    let again = refunds
        .create(Principal::Platform, pid, thirty(), key("refund-1"))
        .await
        .expect("replayed");
    let other = refunds
        .create(
            Principal::Platform,
            pid,
            RefundRequest::default(),
            key("refund-1"),
        )
        .await;

    assert_eq!(again.id, first.id, "one refund");
    assert_eq!(first.idempotency_key.as_ref(), key("refund-1").as_ref());
    assert!(
        matches!(other, Err(Error::IdempotencyKeyReused)),
        "{other:?}"
    );
    assert_eq!(
        shop.payment(pid).await.amount_reserved(),
        30,
        "reserved once"
    );
    let processed = shop.worker(TestModeCards).run_once().await.expect("worker");
    assert_eq!(
        processed,
        vec![Processed::RefundSettled(RefundStatus::Success)]
    );
    assert_eq!(shop.balance().await, 70);
    shop.assert_books_clean().await;
}

// ---------------------------------------------------------------------------------------------
// Idempotent creates of accounts, merchants and keys through the Rust API
// ---------------------------------------------------------------------------------------------

fn idem(text: &str) -> IdempotencyKey {
    IdempotencyKey::parse(text).expect("a valid key")
}

fn name(text: &str) -> atomic_core::account::AccountName {
    atomic_core::account::AccountName::parse(text).expect("a valid name")
}

#[tokio::test]
async fn an_account_opened_twice_under_one_key_is_opened_once() {
    let services = Services::start(memory_ports(), CoreConfig::default())
        .await
        .expect("start");
    let accounts = &services.accounts;
    let open = |currency| {
        accounts.create(
            Principal::Platform,
            name("till"),
            currency,
            Some(idem("a-1")),
        )
    };
    let first = open(Currency::USD).await.expect("opened");
    let again = open(Currency::USD).await.expect("replayed");
    assert_eq!(again, first);
    assert!(matches!(
        open(Currency::EUR).await,
        Err(Error::IdempotencyKeyReused)
    ));
    let unkeyed = accounts
        .create(Principal::Platform, name("till"), Currency::USD, None)
        .await
        .expect("opened");
    assert_ne!(unkeyed.id, first.id, "without a key every call opens one");
}

#[tokio::test]
async fn a_merchant_onboarded_twice_under_one_key_is_onboarded_once() {
    let services = Services::start(memory_ports(), CoreConfig::default())
        .await
        .expect("start");
    let merchants = &services.merchants;
    let onboard = |text: &'static str| {
        merchants.create(
            Principal::Platform,
            name(text),
            Currency::USD,
            Some(idem("m-1")),
        )
    };
    let first = onboard("Shop").await.expect("onboarded");
    let raw = first.raw_key.clone().expect("the key, shown once");
    let again = onboard("Shop").await.expect("replayed");
    assert_eq!(again.merchant, first.merchant);
    assert!(again.raw_key.is_none(), "a replay never shows the secret");
    assert_eq!(
        services
            .api_keys
            .authenticate(raw.expose())
            .await
            .expect("auth"),
        Some(Principal::Merchant(first.merchant.id))
    );
    assert!(matches!(
        onboard("Other shop").await,
        Err(Error::IdempotencyKeyReused)
    ));
    assert!(matches!(
        merchants
            .create(
                Principal::Merchant(first.merchant.id),
                name("Sub"),
                Currency::USD,
                None
            )
            .await,
        Err(Error::Forbidden)
    ));
}

#[tokio::test]
async fn a_key_minted_twice_under_one_idempotency_key_is_minted_once() {
    let services = Services::start(memory_ports(), CoreConfig::default())
        .await
        .expect("start");
    let shop = services
        .merchants
        .create(Principal::Platform, name("Shop"), Currency::USD, None)
        .await
        .expect("onboarded");
    let caller = Principal::Merchant(shop.merchant.id);
    let first = services
        .api_keys
        .create(caller, Some(idem("k-1")))
        .await
        .expect("minted");
    assert!(first.raw_key.is_some());
    let again = services
        .api_keys
        .create(caller, Some(idem("k-1")))
        .await
        .expect("replayed");
    assert_eq!(again.key, first.key);
    assert!(again.raw_key.is_none(), "a replay never shows the secret");
    let listed = services
        .api_keys
        .list(caller, Default::default(), Default::default())
        .await
        .expect("listed");
    assert_eq!(
        listed.items.len(),
        2,
        "the onboarding key and one minted key"
    );
    assert!(matches!(
        services.api_keys.create(Principal::Platform, None).await,
        Err(Error::Forbidden)
    ));
}

/// The payment a capture or cancel answers (prepared, and rendered before it is stored) is the
/// payment as stored: same state, same `updatedAt`, however long the store takes to write it.
#[tokio::test]
async fn a_capture_and_a_cancel_answer_the_payment_as_stored() {
    let shop = Shop::open().await;
    let payments = &shop.services.payments;
    let to_capture = shop.authorized(100).await.id;
    let to_cancel = shop.authorized(100).await.id;

    let prepared = payments
        .prepare_capture(Principal::Platform, to_capture, Some(amount(60)))
        .await
        .expect("capturable");
    shop.clock.advance(Duration::from_millis(5));
    payments
        .submit_capture(&prepared, None)
        .await
        .expect("accepted");
    let stored = payments.get(Principal::Platform, to_capture).await.unwrap();
    assert_eq!(
        (stored.state(), stored.updated_at()),
        (prepared.state(), prepared.updated_at())
    );

    let prepared = payments
        .prepare_cancel(Principal::Platform, to_cancel)
        .await
        .expect("cancelable");
    shop.clock.advance(Duration::from_millis(5));
    payments
        .submit_cancel(&prepared, None)
        .await
        .expect("canceled");
    let stored = payments.get(Principal::Platform, to_cancel).await.unwrap();
    assert_eq!(
        (stored.state(), stored.updated_at()),
        (prepared.state(), prepared.updated_at())
    );
}
