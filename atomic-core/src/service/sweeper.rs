//! The recovery sweep: the store is the source of truth, the queue only hints. Every
//! `interval` the sweep asks the store for payments and refunds nobody is working on (`PENDING`
//! untouched for `stale_after`, or `PROCESSING` with no live lease: stuck charges, captures and
//! refunds alike) and enqueues them again; it cancels authorizations past
//! `AUTHORIZATION_TTL`, each exactly once; and it purges expired idempotency keys and events
//! past `EVENT_RETENTION`. A lost enqueue, a flushed queue or a dead worker
//! therefore delays a payment, never strands it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::ports::{IdempotencyStore, JobQueue, OutboxStore, Ports, SettlementStore};
use crate::time::Clock;

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
    /// Payments and refunds enqueued again.
    pub requeued: usize,
    /// Authorizations canceled because they expired.
    pub expired: usize,
    /// Expired idempotency keys deleted.
    pub purged_keys: u64,
    /// Events past their retention deleted, with their deliveries.
    pub purged_events: usize,
}

/// The recovery sweep.
#[derive(Clone)]
pub struct Sweeper {
    settlement: Arc<dyn SettlementStore>,
    idempotency: Arc<dyn IdempotencyStore>,
    queue: Arc<dyn JobQueue>,
    outbox: Arc<dyn OutboxStore>,
    clock: Arc<dyn Clock>,
    config: SweepConfig,
    authorization_ttl: Duration,
    event_retention: Duration,
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
    /// A sweeper over `ports`, canceling authorizations older than `authorization_ttl` and
    /// deleting events older than `event_retention`.
    pub fn new(
        ports: &Ports,
        config: SweepConfig,
        authorization_ttl: Duration,
        event_retention: Duration,
    ) -> Self {
        Self {
            settlement: ports.store.settlement().clone(),
            idempotency: ports.store.idempotency().clone(),
            queue: ports.queue.clone(),
            outbox: ports.store.outbox().clone(),
            clock: ports.clock.clone(),
            config,
            authorization_ttl,
            event_retention,
        }
    }

    /// One sweep. The steps that need only the store (expiry, the key purge) come first, so
    /// a queue outage never holds them back.
    pub async fn tick(&self) -> Result<SweepReport> {
        let expired = self.expire().await?;
        let purged_keys = self
            .idempotency
            .purge_expired(self.config.batch.saturating_mul(MAX_ROUNDS))
            .await?;
        let before = self.clock.now().saturating_sub(self.event_retention);
        let purged_events = self
            .outbox
            .purge_events(before, self.config.batch.saturating_mul(MAX_ROUNDS))
            .await?;
        let requeued = self.requeue().await?;
        if requeued > 0 {
            tracing::info!(requeued, "sweep re-enqueued stale payments");
        }
        // A metric only: a failed read leaves the gauges as they were and fails nothing.
        match self.settlement.open_payments().await {
            Ok(open) => crate::telemetry::open_payments(open, self.clock.now()),
            Err(error) => tracing::warn!(?error, "could not count the open payments"),
        }
        Ok(SweepReport {
            requeued,
            expired,
            purged_keys,
            purged_events,
        })
    }

    /// Enqueues again the payments and refunds nobody is working on, a batch at a time.
    async fn requeue(&self) -> Result<usize> {
        let mut requeued = 0;
        for _ in 0..MAX_ROUNDS {
            let due = self
                .settlement
                .sweep(self.config.stale_after, self.config.batch)
                .await?;
            if !due.is_empty() {
                // If this fails, the payments were marked touched and come back next time.
                self.queue.enqueue(&due).await?;
                requeued += due.len();
            }
            if due.len() < self.config.batch {
                break;
            }
        }
        Ok(requeued)
    }

    /// Cancels the authorizations past their time, a batch at a time.
    async fn expire(&self) -> Result<usize> {
        let mut expired = 0;
        for _ in 0..MAX_ROUNDS {
            let canceled = self
                .settlement
                .expire_authorizations(self.authorization_ttl, self.config.batch)
                .await?;
            for payment in &canceled {
                crate::telemetry::payment_written(payment);
                tracing::info!(payment_id = %payment.id, "authorization expired; payment canceled");
            }
            expired += canceled.len();
            if canceled.len() < self.config.batch {
                break;
            }
        }
        Ok(expired)
    }

    /// Sweeps every `interval` until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = shutdown.cancelled() => break,
            }
            if let Err(error) = self.tick().await {
                tracing::warn!(?error, "sweep failed; trying again next interval");
            }
        }
    }
}
