//! The worker: takes settlement jobs (charges, authorizations, captures and refunds) and
//! settles them. Each step is a compare-and-set in the store, so any number of workers can
//! run, any job can be delivered twice, and a worker can die at any line: a job is claimed
//! under a lease, the processor is asked, and [`SettlementStore::settle`] posts the money and
//! sets the status in one transaction, only for the lease holder, for the whole batch at once.
//! A lost worker's lease runs out and the job comes back.
//!
//! What a claimed payment asks of the processor depends on its state: an automatic payment is
//! charged (and posted), a manual one authorized (nothing posted), a capture captured (and
//! posted). A refund the merchant's balance covers is refunded at the processor, then posted
//! from the merchant account; one it does not cover fails with `insufficient_balance` without
//! asking the processor, and one the processor paid is never failed (if the balance fell in
//! between, it is posted once the balance covers it).
//!
//! A payment ends only on a definitive answer: the card network approved (and the books took
//! the posting) or declined. An outage never fails a payment: a failed step is retried with
//! backoff, and when a job runs out of attempts it is dead-lettered while the payment, still
//! unfinished, comes back through the recovery sweep. The one exception is a charge that cannot
//! be settled for good (no answer from the card network by the last attempt, or a posting the
//! books refuse): it is voided first, and only then does the payment fail with
//! `processing_error`, so no customer pays for a failed payment.
//!
//! A charge is one attempt, named by the claim's lease, and the worker never relies on the
//! processor merging two attempts at one payment: a payment whose void has begun is never
//! charged again (its claim says so, and the worker voids and fails it), and an attempt that
//! will not be posted (its lease lost after approval, or its answer lost before a retry) is
//! voided, as only the lease that charged could ever post it.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::card::{CardOutcome, CardRefund, Charge};
use crate::error::{Error, Invariant, Result};
use crate::failpoint;
use crate::ledger::Transfer;
use crate::payment::{CaptureMethod, FailureReason, Payment, PaymentState, PaymentStatus};
use crate::ports::{
    AccountStore, BeginOutcome, CardProcessor, Delivery, Job, JobQueue, LeaseId, Ports,
    RefundBegin, RefundResult, SettleOutcome, Settlement, SettlementResult, SettlementStore,
};
use crate::principal::Principal;
use crate::refund::{Refund, RefundFailureReason, RefundStatus};
use crate::telemetry;
use crate::time::Clock;

/// Exponential backoff with jitter: `base * 2^(attempt-1)`, capped at `max`, then between half
/// and all of that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay after failed attempt `attempt` (1-based); `seed` spreads equal attempts apart.
    pub fn delay(&self, attempt: u32, seed: u64) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let full = self.base.saturating_mul(1u32 << exp).min(self.max);
        let half = full / 2;
        let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_micros(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) % spread)
    }
}

/// How a worker runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Job loops run at once.
    pub concurrency: usize,
    /// Jobs a loop reserves at a time, and settles together in one store call.
    pub batch: usize,
    /// How long a claim on a payment (and a reserved job) lasts before others may take it.
    pub lease: Duration,
    /// Deliveries of one job before it is dead-lettered (its payment then comes back through
    /// the sweep); on the last one, a charge the card network gives no answer for is voided and
    /// the payment fails.
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// How long one reserve call waits for jobs.
    pub poll_wait: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            batch: 16,
            lease: Duration::from_secs(30),
            max_attempts: 5,
            backoff: Backoff {
                base: Duration::from_millis(250),
                max: Duration::from_secs(30),
            },
            poll_wait: Duration::from_secs(1),
        }
    }
}

/// What processing one delivery did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Processed {
    /// This worker settled the payment: it is now in this status (`AUTHORIZED` for a manual
    /// capture's authorization, else final).
    Settled(PaymentStatus),
    /// This worker settled the refund with this final status.
    RefundSettled(RefundStatus),
    /// It was already terminal, or another worker settled it first.
    AlreadyFinished,
    /// Another worker holds it under a live lease.
    Busy,
    /// No such payment.
    Missing,
    /// A step failed transiently; the job comes back after the delay.
    Retrying {
        /// When it comes back.
        delay: Duration,
    },
    /// Attempts ran out before a definitive end: the job was dead-lettered and the payment,
    /// still unfinished, comes back through the recovery sweep.
    GaveUp,
}

/// Settles jobs. Clones share the ports.
#[derive(Clone)]
pub struct Worker {
    settlement: Arc<dyn SettlementStore>,
    accounts: Arc<dyn AccountStore>,
    queue: Arc<dyn JobQueue>,
    cards: Arc<dyn CardProcessor>,
    clock: Arc<dyn Clock>,
    config: WorkerConfig,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What claiming one delivery's job gave.
enum Claimed {
    /// A payment to charge, authorize or capture.
    Payment(Payment),
    /// A refund to refund.
    Refund(Refund),
    /// A payment whose earlier attempt is being voided.
    Voiding { payment: Payment, attempt: LeaseId },
    /// Nothing to do; the job is acked.
    Nothing(Processed),
}

/// What the processor is asked for a claimed payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Charge,
    Authorize,
    Capture,
}

/// The processor's answer for one claimed job.
enum Asked {
    Payment {
        payment: Payment,
        call: Call,
        charge: Charge,
        answer: Result<CardOutcome>,
    },
    Refund {
        refund: Refund,
        answer: Result<CardOutcome>,
    },
    /// The merchant's balance cannot cover the refund: the processor was not asked.
    Uncovered { refund: Refund },
}

/// A settlement decided for one job, with what undoing it at the processor needs.
struct Decided {
    settlement: Settlement,
    /// The charge or authorization to void if it is never posted (`None` for captures and
    /// refunds, which the next holder repeats idempotently instead).
    voidable: Option<Charge>,
}

impl Worker {
    /// A worker over `ports`.
    pub fn new(ports: &Ports, config: WorkerConfig) -> Self {
        Self {
            settlement: ports.store.settlement().clone(),
            accounts: ports.store.accounts().clone(),
            queue: ports.queue.clone(),
            cards: ports.cards.clone(),
            clock: ports.clock.clone(),
            config,
        }
    }

    /// Runs `concurrency` job loops until shutdown, then lets each finish the jobs it holds.
    /// A loop that dies (a panicking adapter) is started again.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut loops = JoinSet::new();
        let spawn = |loops: &mut JoinSet<()>| {
            let worker = self.clone();
            let shutdown = shutdown.clone();
            loops.spawn(async move { worker.run_loop(shutdown).await });
        };
        for _ in 0..self.config.concurrency.max(1) {
            spawn(&mut loops);
        }
        while let Some(ended) = loops.join_next().await {
            if let Err(error) = ended
                && !shutdown.is_cancelled()
            {
                tracing::error!(?error, "a worker loop died; starting another");
                spawn(&mut loops);
            }
        }
        tracing::info!("worker stopped");
    }

    async fn run_loop(&self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        while !shutdown.is_cancelled() {
            let reserved = tokio::select! {
                reserved = self.queue.reserve(self.config.batch, self.config.lease, self.config.poll_wait) => reserved,
                () = shutdown.cancelled() => break,
            };
            match reserved {
                Ok(deliveries) => {
                    failures = 0;
                    if !deliveries.is_empty() {
                        self.process_isolated(deliveries).await;
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = self.config.backoff.delay(failures, u64::from(failures));
                    tracing::warn!(?error, ?delay, "reserving jobs failed");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
            }
        }
    }

    /// Reserves what is ready now (up to `batch` jobs) and processes it; for tests and tools.
    pub async fn run_once(&self) -> Result<Vec<Processed>> {
        let deliveries = self
            .queue
            .reserve(self.config.batch, self.config.lease, Duration::ZERO)
            .await?;
        Ok(self.process_batch(&deliveries).await)
    }

    /// Processes reserved deliveries in a task of their own, so a panic in an adapter costs
    /// one attempt of those jobs, not the loop: they are retried like any failed step.
    async fn process_isolated(&self, deliveries: Vec<Delivery>) {
        let worker = self.clone();
        let jobs = deliveries.clone();
        if let Err(join_error) =
            tokio::spawn(async move { worker.process_batch(&jobs).await }).await
        {
            tracing::error!(
                ?join_error,
                jobs = deliveries.len(),
                "processing jobs panicked"
            );
            // A lease taken before the panic runs out by itself.
            let error = Error::backend("processing the job panicked");
            for delivery in &deliveries {
                self.retry(delivery, None, &error).await;
            }
        }
    }

    /// Processes one delivery to its end: settled, acked, retried or dead-lettered.
    pub async fn process(&self, delivery: &Delivery) -> Processed {
        match self
            .process_batch(std::slice::from_ref(delivery))
            .await
            .pop()
        {
            Some(processed) => processed,
            None => Processed::Missing,
        }
    }

    /// Processes reserved deliveries to their end, together: their jobs are claimed under one
    /// lease, the processor is asked for each concurrently, and everything decided is settled
    /// in one store call ([`SettlementStore::settle`]); each delivery then ends as
    /// [`Self::process`] would have ended it alone. One outcome per delivery, in order.
    pub async fn process_batch(&self, deliveries: &[Delivery]) -> Vec<Processed> {
        let started = std::time::Instant::now();
        let processed = self.process_batch_leased(deliveries).await;
        if !deliveries.is_empty() {
            telemetry::settlement_batch(deliveries.len(), started.elapsed());
        }
        processed
    }

    async fn process_batch_leased(&self, deliveries: &[Delivery]) -> Vec<Processed> {
        let lease = LeaseId::generate();
        let claimed = match self.claim_all(deliveries, lease).await {
            Ok(claimed) => claimed,
            Err(error) => return self.retry_all(deliveries, &error).await,
        };
        failpoint::hit(failpoint::WORKER_AFTER_CLAIM).await;
        let mut outcomes: Vec<Option<Processed>> = vec![None; deliveries.len()];
        let (asking, done) = self
            .start_asking(deliveries, claimed, lease, &mut outcomes)
            .await;
        let decided = self
            .collect_decisions(deliveries, lease, asking, &mut outcomes)
            .await;
        self.settle_decided(deliveries, lease, decided, &mut outcomes)
            .await;
        self.ack_all(&done).await;
        gave_up_where_missing(deliveries, outcomes)
    }

    /// A batch whose claim failed as a whole: every delivery is retried (nothing is held).
    async fn retry_all(&self, deliveries: &[Delivery], error: &Error) -> Vec<Processed> {
        let mut retried = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            retried.push(self.retry(delivery, None, error).await);
        }
        retried
    }

    /// Ends what the claim already settled (nothing to do; a void begun earlier, which is
    /// finished and never charged again) and starts asking the processor about the rest,
    /// concurrently. Returns the asks in flight and the deliveries to acknowledge.
    async fn start_asking(
        &self,
        deliveries: &[Delivery],
        claimed: Vec<Claimed>,
        lease: LeaseId,
        outcomes: &mut [Option<Processed>],
    ) -> (JoinSet<(usize, Asked)>, Vec<Delivery>) {
        let mut done: Vec<Delivery> = Vec::new();
        let mut asking = JoinSet::new();
        for (index, claimed) in claimed.into_iter().enumerate() {
            let delivery = &deliveries[index];
            match claimed {
                Claimed::Nothing(processed) => {
                    outcomes[index] = Some(processed);
                    done.push(delivery.clone());
                }
                Claimed::Voiding { payment, attempt } => {
                    // An earlier attempt's void began: it is voided (again) and the payment
                    // fails; a payment being voided is never charged again.
                    let charge = charge_of(&payment, attempt);
                    outcomes[index] = Some(self.void_and_fail(delivery, lease, &charge).await);
                }
                Claimed::Payment(payment) => {
                    let cards = self.cards.clone();
                    asking
                        .spawn(async move { (index, ask_payment(&*cards, payment, lease).await) });
                }
                Claimed::Refund(refund) => {
                    let (cards, accounts) = (self.cards.clone(), self.accounts.clone());
                    asking.spawn(
                        async move { (index, ask_refund(&*cards, &*accounts, refund).await) },
                    );
                }
            }
        }
        (asking, done)
    }

    /// Decides each processor answer as it arrives: a decision to settle, or an outcome
    /// already reached (written into `outcomes`).
    async fn collect_decisions(
        &self,
        deliveries: &[Delivery],
        lease: LeaseId,
        mut asking: JoinSet<(usize, Asked)>,
        outcomes: &mut [Option<Processed>],
    ) -> Vec<(usize, Decided)> {
        let mut decided = Vec::new();
        while let Some(joined) = asking.join_next().await {
            // A panicking card adapter: its job's lease runs out and the job comes back.
            let Ok((index, asked)) = joined else { continue };
            match self.decide(&deliveries[index], lease, asked).await {
                Ok(decision) => decided.push((index, decision)),
                Err(processed) => outcomes[index] = Some(processed),
            }
        }
        decided
    }

    /// Settles every decided job in one store call and ends each delivery by its result.
    async fn settle_decided(
        &self,
        deliveries: &[Delivery],
        lease: LeaseId,
        decided: Vec<(usize, Decided)>,
        outcomes: &mut [Option<Processed>],
    ) {
        if decided.is_empty() {
            return;
        }
        let settlements: Vec<Settlement> =
            decided.iter().map(|(_, d)| d.settlement.clone()).collect();
        let results = self.settlement.settle(&settlements).await;
        if results.iter().any(Result::is_ok) {
            failpoint::hit(failpoint::WORKER_AFTER_SETTLE_COMMIT).await;
        }
        if results.len() != decided.len() {
            let error = Error::backend("the store answered a settlement of the wrong length");
            for (index, _) in decided {
                outcomes[index] = Some(self.retry(&deliveries[index], Some(lease), &error).await);
            }
            return;
        }
        for ((index, decision), result) in decided.into_iter().zip(results) {
            let delivery = &deliveries[index];
            outcomes[index] = Some(self.finish(delivery, lease, decision, result).await);
        }
    }

    /// Claims every delivery's job under `lease`, payments and refunds each in one store call:
    /// one result per delivery, in order.
    async fn claim_all(&self, deliveries: &[Delivery], lease: LeaseId) -> Result<Vec<Claimed>> {
        let payment_ids: Vec<_> = deliveries
            .iter()
            .filter_map(|d| match d.job {
                Job::Payment(id) => Some(id),
                Job::Refund(_) => None,
            })
            .collect();
        let refund_ids: Vec<_> = deliveries
            .iter()
            .filter_map(|d| match d.job {
                Job::Refund(id) => Some(id),
                Job::Payment(_) => None,
            })
            .collect();
        let duration = self.config.lease;
        let mut payments = if payment_ids.is_empty() {
            Vec::new()
        } else {
            self.settlement
                .begin_payments(&payment_ids, lease, duration)
                .await?
        };
        let mut refunds = if refund_ids.is_empty() {
            Vec::new()
        } else {
            self.settlement
                .begin_refunds(&refund_ids, lease, duration)
                .await?
        };
        if payments.len() != payment_ids.len() || refunds.len() != refund_ids.len() {
            return Err(Error::backend(
                "the store answered a claim of the wrong length",
            ));
        }
        // Outcomes come back in the order asked; hand them out in delivery order.
        payments.reverse();
        refunds.reverse();
        let mut claimed = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            claimed.push(
                match delivery.job {
                    Job::Payment(_) => payments.pop().map(claimed_payment),
                    Job::Refund(_) => refunds.pop().map(claimed_refund),
                }
                .ok_or_else(|| Error::backend("the store answered a claim of the wrong length"))?,
            );
        }
        Ok(claimed)
    }

    /// Turns the processor's answer into a settlement, or ends the delivery at once (a retry,
    /// a void) when there is nothing to settle.
    async fn decide(
        &self,
        delivery: &Delivery,
        lease: LeaseId,
        asked: Asked,
    ) -> std::result::Result<Decided, Processed> {
        match asked {
            Asked::Payment {
                payment,
                call,
                charge,
                answer,
            } => {
                self.decide_payment(delivery, lease, payment, call, charge, answer)
                    .await
            }
            Asked::Uncovered { refund } => {
                tracing::warn!(refund_id = %refund.id, "the merchant balance cannot cover the refund; it fails");
                Ok(Decided {
                    settlement: Settlement::Refund {
                        refund_id: refund.id,
                        lease,
                        result: RefundResult::Failed(RefundFailureReason::InsufficientBalance),
                    },
                    voidable: None,
                })
            }
            Asked::Refund { refund, answer } => {
                let result = match answer {
                    Ok(CardOutcome::Approved) => {
                        match Transfer::for_refund(&refund, self.clock.now()) {
                            Ok(transfer) => RefundResult::Posted(transfer),
                            Err(_) => RefundResult::Failed(RefundFailureReason::ProcessingError),
                        }
                    }
                    Ok(CardOutcome::Declined(_)) => {
                        RefundResult::Failed(RefundFailureReason::ProcessingError)
                    }
                    // A refund is never failed for an outage: it is retried, and past its
                    // attempts the sweep brings it back.
                    Err(error) => return Err(self.retry(delivery, Some(lease), &error).await),
                };
                Ok(Decided {
                    settlement: Settlement::Refund {
                        refund_id: refund.id,
                        lease,
                        result,
                    },
                    voidable: None,
                })
            }
        }
    }

    async fn decide_payment(
        &self,
        delivery: &Delivery,
        lease: LeaseId,
        payment: Payment,
        call: Call,
        charge: Charge,
        answer: Result<CardOutcome>,
    ) -> std::result::Result<Decided, Processed> {
        let last_attempt = delivery.attempt >= self.config.max_attempts;
        let voidable = (call != Call::Capture).then(|| charge.clone());
        let result = match answer {
            Ok(CardOutcome::Approved) if call == Call::Authorize => SettlementResult::Authorized,
            Ok(CardOutcome::Approved) => match Transfer::for_payment(&payment, self.clock.now()) {
                Ok(transfer) => SettlementResult::Posted(transfer),
                Err(_) => return Err(self.void_and_fail(delivery, lease, &charge).await),
            },
            Ok(CardOutcome::Declined(reason)) => SettlementResult::Failed(reason),
            // A capture is once-only at the processor: it is retried, never voided, and past
            // its attempts the sweep brings it back.
            Err(error) if call == Call::Capture => {
                return Err(self.retry(delivery, Some(lease), &error).await);
            }
            Err(error) if last_attempt => {
                tracing::error!(payment_id = %payment.id, ?error, "no answer from the card network by the last attempt");
                return Err(self.void_and_fail(delivery, lease, &charge).await);
            }
            Err(error) => {
                // The next attempt charges anew, so this one, perhaps approved unanswered,
                // is voided first.
                if let Err(void_error) = self.cards.void(&charge).await {
                    tracing::error!(payment_id = %payment.id, ?void_error, "an unanswered charge could not be voided before the retry");
                }
                return Err(self.retry(delivery, Some(lease), &error).await);
            }
        };
        Ok(Decided {
            settlement: Settlement::Payment {
                payment_id: payment.id,
                lease,
                result,
            },
            voidable,
        })
    }

    /// Ends a delivery by the store's answer to its settlement.
    async fn finish(
        &self,
        delivery: &Delivery,
        lease: LeaseId,
        decided: Decided,
        result: Result<SettleOutcome>,
    ) -> Processed {
        let money_moved = match &decided.settlement {
            Settlement::Payment { result, .. } => !matches!(result, SettlementResult::Failed(_)),
            Settlement::Refund { result, .. } => matches!(result, RefundResult::Posted(_)),
        };
        match (
            result.map(|outcome| log_settled(delivery, outcome)),
            decided.voidable,
        ) {
            // Approved, but the lease is lost: only the lease that charged may post this
            // attempt, so it is never posted; whoever holds the payment now charges an attempt
            // of its own.
            (Ok(Processed::AlreadyFinished), Some(charge)) if money_moved => {
                self.void_unposted(delivery, &charge).await
            }
            (Ok(outcome), _) => self.ack(delivery, outcome).await,
            (Err(Error::Invariant(Invariant::InsufficientFunds)), _)
                if money_moved && matches!(decided.settlement, Settlement::Refund { .. }) =>
            {
                // The processor has given the money back, so the refund is owed: it is posted
                // once the balance covers it (the balance fell between the check and the
                // posting), never failed, which would let it be refunded a second time.
                tracing::error!(job = ?delivery.job, "a refund the processor paid cannot be posted yet; retrying");
                let error = Error::Invariant(Invariant::InsufficientFunds);
                self.retry(delivery, Some(lease), &error).await
            }
            (Err(Error::Invariant(invariant)), Some(charge)) if money_moved => {
                // The books refused the posting (e.g. a balance would overflow): retrying
                // cannot help, so the charge is voided and the payment fails.
                tracing::error!(job = ?delivery.job, %invariant, "posting refused by the books");
                self.void_and_fail(delivery, lease, &charge).await
            }
            (Err(error), _) => self.retry(delivery, Some(lease), &error).await,
        }
    }

    /// Voids the charge, then fails the payment with `processing_error`. If either step cannot
    /// be done now the payment is left for a later attempt: a payment whose card may have been
    /// charged is never failed without a void.
    async fn void_and_fail(
        &self,
        delivery: &Delivery,
        lease: LeaseId,
        charge: &Charge,
    ) -> Processed {
        // Mark the payment first, under our lease, so that no later attempt charges or posts it
        // while (or after) this attempt is voided.
        match self
            .settlement
            .begin_void(charge.payment_id, lease, self.config.lease)
            .await
        {
            Ok(true) => {}
            // Another worker holds the payment and decides it; the charge is still voided, as
            // no lease but the one that charged could ever post it.
            Ok(false) => return self.void_unposted(delivery, charge).await,
            Err(error) => return self.retry(delivery, Some(lease), &error).await,
        }
        if let Err(error) = self.cards.void(charge).await {
            return self.retry(delivery, Some(lease), &error).await;
        }
        let failed = Settlement::Payment {
            payment_id: charge.payment_id,
            lease,
            result: SettlementResult::Failed(FailureReason::ProcessingError),
        };
        match self.settle_one(delivery, failed).await {
            Ok(outcome) => self.ack(delivery, outcome).await,
            Err(error) => self.retry(delivery, Some(lease), &error).await,
        }
    }

    /// Voids a charge that can never be posted (its lease is lost) and acks the job: the
    /// payment is another worker's to decide.
    async fn void_unposted(&self, delivery: &Delivery, charge: &Charge) -> Processed {
        tracing::warn!(payment_id = %charge.payment_id, "lease lost after charging; voiding this attempt");
        if let Err(error) = self.cards.void(charge).await {
            tracing::error!(payment_id = %charge.payment_id, ?error, "a charge that will not be posted could not be voided");
        }
        self.ack(delivery, Processed::AlreadyFinished).await
    }

    async fn settle_one(&self, delivery: &Delivery, settlement: Settlement) -> Result<Processed> {
        self.settlement
            .settle(std::slice::from_ref(&settlement))
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::backend("the store answered no settlement")))
            .map(|outcome| log_settled(delivery, outcome))
    }

    async fn ack(&self, delivery: &Delivery, outcome: Processed) -> Processed {
        self.ack_all(std::slice::from_ref(delivery)).await;
        outcome
    }

    async fn ack_all(&self, deliveries: &[Delivery]) {
        if deliveries.is_empty() {
            return;
        }
        if let Err(error) = self.queue.ack(deliveries).await {
            // The jobs will come back and find their work finished: harmless.
            tracing::warn!(?error, jobs = deliveries.len(), "ack failed");
        }
    }

    /// Releases the lease and brings the job back after a backoff. After the last attempt
    /// the job is dead-lettered instead; its payment or refund, still unfinished, comes back
    /// through the recovery sweep with fresh attempts. A step that failed never fails a job.
    async fn retry(&self, delivery: &Delivery, lease: Option<LeaseId>, error: &Error) -> Processed {
        let job = delivery.job;
        if let Some(lease) = lease
            && let Err(release_error) = self.settlement.release(job, lease).await
        {
            tracing::warn!(
                ?job,
                ?release_error,
                "release failed; the lease will run out"
            );
        }
        if delivery.attempt >= self.config.max_attempts {
            tracing::error!(
                ?job,
                attempt = delivery.attempt,
                ?error,
                "attempts exhausted; the job is dead-lettered and the sweep will bring it back"
            );
            if let Err(queue_error) = self.queue.dead_letter(delivery, "attempts exhausted").await {
                tracing::warn!(?job, ?queue_error, "dead-lettering failed");
            }
            return Processed::GaveUp;
        }
        let delay = self.config.backoff.delay(delivery.attempt, job_seed(job));
        tracing::warn!(
            ?job,
            attempt = delivery.attempt,
            ?delay,
            ?error,
            "will retry"
        );
        if let Err(queue_error) = self.queue.retry(delivery, delay).await {
            tracing::warn!(
                ?job,
                ?queue_error,
                "retry not scheduled; the job comes back when its visibility runs out"
            );
        }
        Processed::Retrying { delay }
    }
}

/// Spreads the retries of different jobs apart.
fn job_seed(job: Job) -> u64 {
    match job {
        Job::Payment(id) => id.as_uuid().as_u64_pair().1,
        Job::Refund(id) => id.as_uuid().as_u64_pair().1,
    }
}

fn claimed_payment(begun: BeginOutcome) -> Claimed {
    match begun {
        BeginOutcome::Claimed(payment) => Claimed::Payment(payment),
        BeginOutcome::Voiding { payment, attempt } => Claimed::Voiding { payment, attempt },
        BeginOutcome::Finished(_) => Claimed::Nothing(Processed::AlreadyFinished),
        BeginOutcome::Busy => Claimed::Nothing(Processed::Busy),
        BeginOutcome::Missing => {
            tracing::warn!("job for an unknown payment");
            Claimed::Nothing(Processed::Missing)
        }
    }
}

fn claimed_refund(begun: RefundBegin) -> Claimed {
    match begun {
        RefundBegin::Claimed(refund) => Claimed::Refund(refund),
        RefundBegin::Finished(_) => Claimed::Nothing(Processed::AlreadyFinished),
        RefundBegin::Busy => Claimed::Nothing(Processed::Busy),
        RefundBegin::Missing => {
            tracing::warn!("job for an unknown refund");
            Claimed::Nothing(Processed::Missing)
        }
    }
}

/// One outcome per delivery, in order; a delivery with none had its processor call panic,
/// and its lease will run out.
fn gave_up_where_missing(
    deliveries: &[Delivery],
    outcomes: Vec<Option<Processed>>,
) -> Vec<Processed> {
    deliveries
        .iter()
        .zip(outcomes)
        .map(|(delivery, outcome)| {
            outcome.unwrap_or_else(|| {
                tracing::error!(job = ?delivery.job, "asking the processor panicked; the lease will run out");
                Processed::GaveUp
            })
        })
        .collect()
}

/// Asks the processor what a claimed payment's state calls for.
async fn ask_payment(cards: &dyn CardProcessor, payment: Payment, lease: LeaseId) -> Asked {
    let call = match (payment.state(), payment.capture_method) {
        (PaymentState::Capturing(_), _) => Call::Capture,
        (_, CaptureMethod::Manual) => Call::Authorize,
        (_, CaptureMethod::Automatic) => Call::Charge,
    };
    let charge = charge_of(&payment, lease);
    let answer = match call {
        Call::Charge => cards.charge(&charge).await,
        Call::Authorize => cards.authorize(&charge).await,
        Call::Capture => cards.capture(&charge).await,
    };
    Asked::Payment {
        payment,
        call,
        charge,
        answer,
    }
}

/// Asks the processor to give a refund back, only once the merchant's balance covers it: a
/// refund the books could not post must never have been paid out.
async fn ask_refund(
    cards: &dyn CardProcessor,
    accounts: &dyn AccountStore,
    refund: Refund,
) -> Asked {
    let covered = accounts
        .account(refund.merchant_account, Principal::Platform)
        .await
        .map(|account| {
            account.is_some_and(|a| a.balance.minor_units() >= refund.amount.minor_units())
        });
    match covered {
        Ok(true) => {
            let answer = cards.refund(&refund_of(&refund)).await;
            Asked::Refund { refund, answer }
        }
        Ok(false) => Asked::Uncovered { refund },
        Err(error) => Asked::Refund {
            refund,
            answer: Err(error),
        },
    }
}

/// What a settlement did, logged.
fn log_settled(delivery: &Delivery, outcome: SettleOutcome) -> Processed {
    match outcome {
        SettleOutcome::Payment(payment) => {
            telemetry::payment_written(&payment);
            tracing::info!(
                payment_id = %payment.id,
                status = %payment.status(),
                failure_reason = payment.failure_reason().map(|r| r.as_str()),
                "payment settled"
            );
            Processed::Settled(payment.status())
        }
        SettleOutcome::Refund(refund) => {
            telemetry::refund_written(refund.status());
            tracing::info!(
                refund_id = %refund.id,
                payment_id = %refund.payment_id,
                status = %refund.status(),
                failure_reason = refund.failure_reason().map(|r| r.as_str()),
                "refund settled"
            );
            Processed::RefundSettled(refund.status())
        }
        SettleOutcome::NotHeld => {
            tracing::info!(job = ?delivery.job, "lease lost before settling; nothing written");
            Processed::AlreadyFinished
        }
    }
}

/// The processor call of `payment` made by the claim `attempt`: the requested capture while
/// capturing, else the whole amount.
fn charge_of(payment: &Payment, attempt: LeaseId) -> Charge {
    Charge {
        payment_id: payment.id,
        attempt,
        amount: payment
            .state()
            .capture_requested()
            .unwrap_or(payment.amount),
        currency: payment.currency,
        source: payment.source.clone(),
    }
}

fn refund_of(refund: &Refund) -> CardRefund {
    CardRefund {
        refund_id: refund.id,
        payment_id: refund.payment_id,
        amount: refund.amount,
        currency: refund.currency,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_half() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for seed in [0, 1, 99, u64::MAX] {
            for attempt in 1..=10 {
                let full = (Duration::from_millis(100) * 2u32.pow(attempt - 1))
                    .min(Duration::from_secs(1));
                let d = b.delay(attempt, seed);
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}: {d:?} vs {full:?}"
                );
            }
        }
        assert!(b.delay(u32::MAX, 7) <= Duration::from_secs(1));
    }
}
