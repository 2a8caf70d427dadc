//! [`MemoryQueue`]: an at-least-once job queue in memory. Reserved jobs stay in flight until
//! acked; a job whose visibility runs out is delivered again with its attempt count raised,
//! exactly as a Redis Streams consumer group redelivers a dead consumer's messages.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::error::Result;
use crate::ports::{Delivery, Job as Work, JobQueue};
use crate::time::{Clock, Timestamp};

#[derive(Clone, Copy, Debug)]
struct Job {
    work: Work,
    attempt: u32,
}

#[derive(Default)]
struct QueueState {
    next_receipt: u64,
    ready: VecDeque<Job>,
    /// Jobs waiting for a retry delay, by due time (then receipt, to keep keys unique).
    delayed: BTreeMap<(Timestamp, u64), Job>,
    /// Reserved jobs by receipt, with the instant their visibility runs out.
    in_flight: HashMap<u64, (Job, Timestamp)>,
    dead: Vec<(Work, String)>,
}

/// An in-memory [`JobQueue`].
#[derive(Clone)]
pub struct MemoryQueue {
    state: Arc<Mutex<QueueState>>,
    wake: Arc<Notify>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueue").finish_non_exhaustive()
    }
}

impl MemoryQueue {
    /// An empty queue reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            state: Arc::new(Mutex::new(QueueState::default())),
            wake: Arc::new(Notify::new()),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Jobs waiting to be delivered (ready or delayed), not counting those in flight.
    pub fn waiting(&self) -> usize {
        let state = self.lock();
        state.ready.len() + state.delayed.len()
    }

    /// Jobs delivered and not yet acked.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    /// The dead-lettered jobs, with their reasons.
    pub fn dead_letters(&self) -> Vec<(Work, String)> {
        self.lock().dead.clone()
    }

    /// Drops every waiting job, as a flushed Redis would (in-flight jobs stay).
    pub fn flush(&self) {
        let mut state = self.lock();
        state.ready.clear();
        state.delayed.clear();
    }

    /// Moves due delayed jobs and expired in-flight jobs to the ready list; takes up to `max`.
    fn take_ready(&self, max: usize, visibility: Duration) -> (Vec<Delivery>, Option<Timestamp>) {
        let now = self.clock.now();
        let mut state = self.lock();
        let due: Vec<_> = state
            .delayed
            .range(..=(now, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if let Some(job) = state.delayed.remove(&key) {
                state.ready.push_back(job);
            }
        }
        let expired: Vec<u64> = state
            .in_flight
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(receipt, _)| *receipt)
            .collect();
        for receipt in expired {
            if let Some((job, _)) = state.in_flight.remove(&receipt) {
                state.ready.push_back(Job {
                    attempt: job.attempt.saturating_add(1),
                    ..job
                });
            }
        }
        let mut out = Vec::new();
        while out.len() < max {
            let Some(job) = state.ready.pop_front() else {
                break;
            };
            state.next_receipt += 1;
            let receipt = state.next_receipt;
            state
                .in_flight
                .insert(receipt, (job, now.saturating_add(visibility)));
            out.push(Delivery {
                receipt: receipt.to_string(),
                job: job.work,
                attempt: job.attempt,
            });
        }
        let next_due = state
            .delayed
            .keys()
            .next()
            .map(|(t, _)| *t)
            .into_iter()
            .chain(state.in_flight.values().map(|(_, until)| *until))
            .min();
        (out, next_due)
    }

    fn settle_receipt(&self, delivery: &Delivery) -> Option<Job> {
        let receipt: u64 = delivery.receipt.parse().ok()?;
        self.lock().in_flight.remove(&receipt).map(|(job, _)| job)
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn enqueue(&self, jobs: &[Work]) -> Result<()> {
        {
            let mut state = self.lock();
            state
                .ready
                .extend(jobs.iter().map(|&work| Job { work, attempt: 1 }));
        }
        self.wake.notify_waiters();
        Ok(())
    }

    async fn reserve(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let now = tokio::time::Instant::now();
        // A wait too long to represent is a wait without end (an hour is plenty).
        let deadline = now
            .checked_add(wait)
            .unwrap_or(now + Duration::from_secs(3600));
        loop {
            // Register for a wake-up before looking, so an enqueue in between is not missed.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (got, next_due) = self.take_ready(max, visibility);
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let mut until = deadline;
            if let Some(due) = next_due {
                let gap = due.duration_since(self.clock.now());
                until = until.min(now + gap.max(Duration::from_millis(1)));
            }
            let _ = tokio::time::timeout_at(until, notified).await;
        }
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        for delivery in deliveries {
            self.settle_receipt(delivery);
        }
        Ok(())
    }

    async fn retry(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        if let Some(job) = self.settle_receipt(delivery) {
            let due = self.clock.now().saturating_add(delay);
            let mut state = self.lock();
            state.next_receipt += 1;
            let seq = state.next_receipt;
            state.delayed.insert(
                (due, seq),
                Job {
                    attempt: job.attempt.saturating_add(1),
                    ..job
                },
            );
        }
        self.wake.notify_waiters();
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        if let Some(job) = self.settle_receipt(delivery) {
            self.lock().dead.push((job.work, reason.to_owned()));
        }
        Ok(())
    }
}
