//! The worker: takes payment jobs and settles them. Each step is a compare-and-set in the
//! store, so any number of workers can run, any job can be delivered twice, and a worker can
//! die at any line: a payment is claimed under a lease (`PENDING -> PROCESSING`), the card is
//! charged, and [`LedgerStore::settle`] posts the money and sets the final status in one
//! transaction, only for the lease holder. A lost worker's lease runs out and the job comes
//! back.
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

use crate::card::{CardOutcome, Charge};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::ledger::Transfer;
use crate::payment::{FailureReason, Payment, PaymentStatus};
use crate::ports::{
    BeginOutcome, CardProcessor, Delivery, JobQueue, LeaseId, LedgerStore, Ports, SettleOutcome,
    Settlement, SettlementResult,
};
use crate::service::Shutdown;
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
    /// This worker settled the payment with this final status.
    Settled(PaymentStatus),
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

/// Settles payment jobs. Clones share the ports.
#[derive(Clone)]
pub struct Worker {
    ledger: Arc<dyn LedgerStore>,
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

impl Worker {
    /// A worker over `ports`.
    pub fn new(ports: &Ports, config: WorkerConfig) -> Self {
        Self {
            ledger: ports.ledger.clone(),
            queue: ports.queue.clone(),
            cards: ports.cards.clone(),
            clock: ports.clock.clone(),
            config,
        }
    }

    /// Runs `concurrency` job loops until shutdown, then lets each finish the jobs it holds.
    /// A loop that dies (a panicking adapter) is started again.
    pub async fn run(self, shutdown: Shutdown) {
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
                && !shutdown.is_triggered()
            {
                tracing::error!(?error, "a worker loop died; starting another");
                spawn(&mut loops);
            }
        }
        tracing::info!("worker stopped");
    }

    async fn run_loop(&self, mut shutdown: Shutdown) {
        let mut failures: u32 = 0;
        while !shutdown.is_triggered() {
            let reserved = tokio::select! {
                reserved = self.queue.reserve(self.config.batch, self.config.lease, self.config.poll_wait) => reserved,
                () = shutdown.wait() => break,
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
                        () = shutdown.wait() => break,
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

    /// Processes reserved deliveries to their end, together: the payments are claimed under
    /// one lease in one store call, charged concurrently, and settled in one store call
    /// ([`LedgerStore::settle_many`]); each delivery then ends as [`Self::process`] would
    /// have ended it alone. One outcome per delivery, in order.
    pub async fn process_batch(&self, deliveries: &[Delivery]) -> Vec<Processed> {
        let lease = LeaseId::generate();
        let mut outcomes: Vec<Option<Processed>> = vec![None; deliveries.len()];
        let begun = match self.begin_all(deliveries, lease).await {
            Ok(begun) => {
                failpoint::hit(failpoint::WORKER_AFTER_CLAIM).await;
                begun
            }
            Err(error) => {
                let mut retried = Vec::with_capacity(deliveries.len());
                for delivery in deliveries {
                    retried.push(self.retry(delivery, None, &error).await);
                }
                return retried;
            }
        };
        // Claimed payments, charged concurrently (a card network answers slowly).
        // Deliveries that end in an ack, acked together at the end.
        let mut done: Vec<usize> = Vec::new();
        let mut charging = JoinSet::new();
        for (index, (delivery, begun)) in deliveries.iter().zip(begun).enumerate() {
            let payment = match begun {
                BeginOutcome::Claimed(payment) => payment,
                BeginOutcome::Voiding { payment, attempt } => {
                    // An earlier attempt's void began: it is voided (again) and the payment
                    // fails; a payment being voided is never charged again.
                    let charge = charge_of(&payment, attempt);
                    outcomes[index] = Some(self.void_and_fail(delivery, lease, &charge).await);
                    continue;
                }
                BeginOutcome::Finished(_) => {
                    outcomes[index] = Some(Processed::AlreadyFinished);
                    done.push(index);
                    continue;
                }
                BeginOutcome::Busy => {
                    outcomes[index] = Some(Processed::Busy);
                    done.push(index);
                    continue;
                }
                BeginOutcome::Missing => {
                    tracing::warn!(payment_id = %delivery.payment_id, "job for an unknown payment");
                    outcomes[index] = Some(Processed::Missing);
                    done.push(index);
                    continue;
                }
            };
            let cards = self.cards.clone();
            charging.spawn(async move {
                let charge = charge_of(&payment, lease);
                let answer = cards.charge(&charge).await;
                (index, payment, charge, answer)
            });
        }
        let mut decided = Vec::new();
        while let Some(joined) = charging.join_next().await {
            let Ok((index, payment, charge, answer)) = joined else {
                // A panicking card adapter: its payment's lease runs out and the job comes back.
                continue;
            };
            let delivery = &deliveries[index];
            let last_attempt = delivery.attempt >= self.config.max_attempts;
            let result = match answer {
                Ok(CardOutcome::Approved) => {
                    match Transfer::for_payment(&payment, self.clock.now()) {
                        Ok(transfer) => SettlementResult::Posted(transfer),
                        Err(_) => {
                            outcomes[index] =
                                Some(self.void_and_fail(delivery, lease, &charge).await);
                            continue;
                        }
                    }
                }
                Ok(CardOutcome::Declined(reason)) => SettlementResult::Failed(reason),
                Err(error) if last_attempt => {
                    tracing::error!(payment_id = %payment.id, ?error, "no answer from the card network by the last attempt");
                    outcomes[index] = Some(self.void_and_fail(delivery, lease, &charge).await);
                    continue;
                }
                Err(error) => {
                    // The next attempt charges anew, so this one, perhaps approved unanswered,
                    // is voided first.
                    if let Err(void_error) = self.cards.void(&charge).await {
                        tracing::error!(payment_id = %payment.id, ?void_error, "an unanswered charge could not be voided before the retry");
                    }
                    outcomes[index] = Some(self.retry(delivery, Some(lease), &error).await);
                    continue;
                }
            };
            decided.push((index, charge, result));
        }
        // Settle what was decided, in one store call.
        let settlements: Vec<Settlement> = decided
            .iter()
            .map(|(index, _, result)| Settlement {
                payment_id: deliveries[*index].payment_id,
                lease,
                result: result.clone(),
            })
            .collect();
        let settled = match settlements.as_slice() {
            [] => Vec::new(),
            [one] => vec![self.ledger.settle(one).await],
            many => self.ledger.settle_many(many).await,
        };
        if settled.iter().any(Result::is_ok) {
            failpoint::hit(failpoint::WORKER_AFTER_SETTLE_COMMIT).await;
        }
        for ((index, charge, result), settled) in decided.into_iter().zip(settled) {
            let delivery = &deliveries[index];
            let posted = matches!(result, SettlementResult::Posted(_));
            outcomes[index] = Some(
                match settled.map(|outcome| log_settled(delivery, outcome)) {
                    // Approved, but the lease is lost: only the lease that charged may post
                    // this attempt, so it is never posted; whoever holds the payment now
                    // charges an attempt of its own.
                    Ok(Processed::AlreadyFinished) if posted => {
                        self.void_unposted(delivery, &charge).await
                    }
                    Ok(outcome) => self.ack(delivery, outcome).await,
                    Err(Error::Invariant(invariant)) if posted => {
                        // The books refused the posting (e.g. a balance would overflow): retrying
                        // cannot help, so the charge is voided and the payment fails.
                        tracing::error!(payment_id = %delivery.payment_id, %invariant, "posting refused by the books");
                        self.void_and_fail(delivery, lease, &charge).await
                    }
                    Err(error) => self.retry(delivery, Some(lease), &error).await,
                },
            );
        }
        let acks: Vec<Delivery> = done.iter().map(|i| deliveries[*i].clone()).collect();
        let acked = match acks.as_slice() {
            [] => Ok(()),
            [one] => self.queue.ack(one).await,
            many => self.queue.ack_many(many).await,
        };
        if let Err(error) = acked {
            // The jobs will come back and find their payments finished: harmless.
            tracing::warn!(?error, jobs = acks.len(), "ack failed");
        }
        deliveries
            .iter()
            .zip(outcomes)
            .map(|(delivery, outcome)| {
                outcome.unwrap_or_else(|| {
                    tracing::error!(payment_id = %delivery.payment_id, "charging the card panicked; the lease will run out");
                    Processed::GaveUp
                })
            })
            .collect()
    }

    /// Claims every delivery's payment under `lease`: one outcome per delivery.
    async fn begin_all(
        &self,
        deliveries: &[Delivery],
        lease: LeaseId,
    ) -> Result<Vec<BeginOutcome>> {
        let ids: Vec<_> = deliveries.iter().map(|d| d.payment_id).collect();
        let outcomes = match ids.as_slice() {
            [one] => vec![
                self.ledger
                    .begin_processing(*one, lease, self.config.lease)
                    .await?,
            ],
            many => {
                self.ledger
                    .begin_processing_many(many, lease, self.config.lease)
                    .await?
            }
        };
        if outcomes.len() != ids.len() {
            return Err(Error::backend(
                "the store answered a claim of the wrong length",
            ));
        }
        Ok(outcomes)
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
            .ledger
            .begin_void(delivery.payment_id, lease, self.config.lease)
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
        let failed = SettlementResult::Failed(FailureReason::ProcessingError);
        match self.settle(delivery, lease, failed).await {
            Ok(outcome) => self.ack(delivery, outcome).await,
            Err(error) => self.retry(delivery, Some(lease), &error).await,
        }
    }

    /// Voids a charge that can never be posted (its lease is lost) and acks the job: the
    /// payment is another worker's to decide.
    async fn void_unposted(&self, delivery: &Delivery, charge: &Charge) -> Processed {
        tracing::warn!(payment_id = %delivery.payment_id, "lease lost after charging; voiding this attempt");
        if let Err(error) = self.cards.void(charge).await {
            tracing::error!(payment_id = %delivery.payment_id, ?error, "a charge that will not be posted could not be voided");
        }
        self.ack(delivery, Processed::AlreadyFinished).await
    }

    async fn settle(
        &self,
        delivery: &Delivery,
        lease: LeaseId,
        result: SettlementResult,
    ) -> Result<Processed> {
        let settlement = Settlement {
            payment_id: delivery.payment_id,
            lease,
            result,
        };
        self.ledger
            .settle(&settlement)
            .await
            .map(|outcome| log_settled(delivery, outcome))
    }

    async fn ack(&self, delivery: &Delivery, outcome: Processed) -> Processed {
        if let Err(error) = self.queue.ack(delivery).await {
            // The job will come back and find the payment finished: harmless.
            tracing::warn!(payment_id = %delivery.payment_id, ?error, "ack failed");
        }
        outcome
    }

    /// Releases the lease and brings the job back after a backoff. After the last attempt
    /// the job is dead-lettered instead; the payment, still unfinished, comes back through the
    /// recovery sweep with fresh attempts. A step that failed never fails the payment.
    async fn retry(&self, delivery: &Delivery, lease: Option<LeaseId>, error: &Error) -> Processed {
        let id = delivery.payment_id;
        if let Some(lease) = lease
            && let Err(release_error) = self.ledger.release(id, lease).await
        {
            tracing::warn!(payment_id = %id, ?release_error, "release failed; the lease will run out");
        }
        if delivery.attempt >= self.config.max_attempts {
            tracing::error!(payment_id = %id, attempt = delivery.attempt, ?error, "attempts exhausted; the job is dead-lettered and the sweep will bring the payment back");
            if let Err(queue_error) = self.queue.dead_letter(delivery, "attempts exhausted").await {
                tracing::warn!(payment_id = %id, ?queue_error, "dead-lettering failed");
            }
            return Processed::GaveUp;
        }
        let delay = self
            .config
            .backoff
            .delay(delivery.attempt, id.as_uuid().as_u64_pair().1);
        tracing::warn!(payment_id = %id, attempt = delivery.attempt, ?delay, ?error, "will retry");
        if let Err(queue_error) = self.queue.retry(delivery, delay).await {
            tracing::warn!(payment_id = %id, ?queue_error, "retry not scheduled; the job comes back when its visibility runs out");
        }
        Processed::Retrying { delay }
    }
}

/// What a settlement did, logged.
fn log_settled(delivery: &Delivery, outcome: SettleOutcome) -> Processed {
    match outcome {
        SettleOutcome::Settled(payment) => {
            tracing::info!(
                payment_id = %payment.id,
                status = %payment.status(),
                failure_reason = payment.failure_reason().map(|r| r.as_str()),
                "payment settled"
            );
            Processed::Settled(payment.status())
        }
        SettleOutcome::NotHeld { status } => {
            tracing::info!(payment_id = %delivery.payment_id, %status, "lease lost before settling; nothing written");
            Processed::AlreadyFinished
        }
    }
}

/// The charge of `payment` made by the claim `attempt`.
fn charge_of(payment: &Payment, attempt: LeaseId) -> Charge {
    Charge {
        payment_id: payment.id,
        attempt,
        amount: payment.amount,
        currency: payment.currency,
        source: payment.source.clone(),
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
