//! The recovery sweep: the store is the source of truth, the queue only hints. Every
//! `interval` the sweep asks the store for payments nobody is working on (`PENDING` untouched
//! for `stale_after`, or `PROCESSING` with a lease that ran out) and enqueues them again; it
//! also purges expired idempotency keys. A lost enqueue, a flushed queue or a dead worker
//! therefore delays a payment, never strands it.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::ports::{IdempotencyStore, JobQueue, LedgerStore, Ports};
use crate::service::Shutdown;

/// How the sweep runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SweepConfig {
    /// Time between sweeps.
    pub interval: Duration,
    /// How long a `PENDING` payment may sit untouched before it is enqueued again.
    pub stale_after: Duration,
    /// Payments re-enqueued per store call.
    pub batch: usize,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            stale_after: Duration::from_secs(30),
            batch: 500,
        }
    }
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Payments enqueued again.
    pub requeued: usize,
    /// Expired idempotency keys deleted.
    pub purged_keys: u64,
}

/// The recovery sweep.
#[derive(Clone)]
pub struct Sweeper {
    ledger: Arc<dyn LedgerStore>,
    idempotency: Arc<dyn IdempotencyStore>,
    queue: Arc<dyn JobQueue>,
    config: SweepConfig,
}

impl std::fmt::Debug for Sweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweeper")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Store calls per sweep at most, so one sweep stays short.
const MAX_ROUNDS: usize = 20;

impl Sweeper {
    /// A sweeper over `ports`.
    pub fn new(ports: &Ports, config: SweepConfig) -> Self {
        Self {
            ledger: ports.ledger.clone(),
            idempotency: ports.idempotency.clone(),
            queue: ports.queue.clone(),
            config,
        }
    }

    /// One sweep.
    pub async fn tick(&self) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        for _ in 0..MAX_ROUNDS {
            let due = self
                .ledger
                .sweep(self.config.stale_after, self.config.batch)
                .await?;
            if !due.is_empty() {
                // If this fails, the payments were marked touched and come back next time.
                self.queue.enqueue(&due).await?;
                report.requeued += due.len();
            }
            if due.len() < self.config.batch {
                break;
            }
        }
        report.purged_keys = self
            .idempotency
            .purge_expired(self.config.batch.saturating_mul(MAX_ROUNDS))
            .await?;
        if report.requeued > 0 {
            tracing::info!(
                requeued = report.requeued,
                "sweep re-enqueued stale payments"
            );
        }
        Ok(report)
    }

    /// Sweeps every `interval` until shutdown.
    pub async fn run(self, mut shutdown: Shutdown) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = shutdown.wait() => break,
            }
            if let Err(error) = self.tick().await {
                tracing::warn!(?error, "sweep failed; trying again next interval");
            }
        }
    }
}
