//! [`JobQueue`]: at-least-once delivery of settlement jobs (payments and refunds).

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::id::{PaymentId, RefundId};

/// A job: what a worker settles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Job {
    /// A payment's charge, authorization or capture (its state says which).
    Payment(PaymentId),
    /// A refund.
    Refund(RefundId),
}

/// One delivery of a job to a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The adapter's receipt for this delivery (to ack, retry or dead-letter it).
    pub receipt: String,
    /// What to settle.
    pub job: Job,
    /// 1 on the first delivery, counting retries and redeliveries after a lost worker.
    pub attempt: u32,
}

/// A queue of settlement jobs. Jobs are wake-up hints: losing one delays a payment (the sweep
/// re-enqueues it) but never loses it, and a duplicate is harmless (settlement is a CAS).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Checks that the queue answers.
    async fn ping(&self) -> Result<()>;

    /// Adds these jobs.
    async fn enqueue(&self, jobs: &[Job]) -> Result<()>;

    /// Takes up to `max` ready jobs, waiting up to `wait` for one to arrive. A job not acked,
    /// retried or dead-lettered within `visibility` is delivered again (attempt + 1).
    async fn reserve(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>>;

    /// Done with these jobs (one, or a worker's batch), in one step where the queue can.
    async fn ack(&self, deliveries: &[Delivery]) -> Result<()>;

    /// Delivers the job again after `delay` (attempt + 1).
    async fn retry(&self, delivery: &Delivery, delay: Duration) -> Result<()>;

    /// Moves the job to the dead-letter list, where an operator can see it.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()>;
}
