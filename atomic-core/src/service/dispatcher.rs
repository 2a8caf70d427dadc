//! The webhook dispatcher: claims due deliveries from the outbox under a lease, makes each
//! attempt (signed, Standard Webhooks headers) and writes its outcome back by the retry rules
//! of [`WebhookDelivery`]. Any number of dispatchers can run on one store: the claim hands
//! each delivery to one of them at a time, and one whose dispatcher died is claimed again when
//! its lease runs out (at least once). At most `per_endpoint` attempts of one endpoint are in
//! flight at once across dispatchers, so a receiver that hangs holds back only its own.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::Result;
use crate::ports::{DueDelivery, LeaseId, OutboxStore, Ports, WebhookRequest, WebhookSender};
use crate::service::Shutdown;
use crate::time::Clock;
use crate::webhook::{AddressPolicy, RetrySchedule};

/// How a dispatcher runs.
#[derive(Clone, Debug)]
pub struct DispatcherConfig {
    /// Attempts in flight at once in this process.
    pub concurrency: usize,
    /// Attempts in flight at once for one endpoint, across every dispatcher.
    pub per_endpoint: usize,
    /// How long a claim holds a delivery. Longer than an attempt can take (the sender's
    /// timeout), or a slow attempt's delivery is claimed twice.
    pub lease: Duration,
    /// How long to wait before looking again when nothing was due.
    pub poll: Duration,
    /// Which addresses attempts may connect to.
    pub policy: AddressPolicy,
    /// When failed attempts are retried.
    pub schedule: RetrySchedule,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            per_endpoint: 8,
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(100),
            policy: AddressPolicy::default(),
            schedule: RetrySchedule::default(),
        }
    }
}

/// The webhook dispatcher.
#[derive(Clone)]
pub struct Dispatcher {
    outbox: Arc<dyn OutboxStore>,
    sender: Arc<dyn WebhookSender>,
    clock: Arc<dyn Clock>,
    config: Arc<DispatcherConfig>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher over `ports`.
    pub fn new(ports: &Ports, config: DispatcherConfig) -> Self {
        Self {
            outbox: ports.store.outbox().clone(),
            sender: ports.sender.clone(),
            clock: ports.clock.clone(),
            config: Arc::new(config),
        }
    }

    /// Claims what is due now (up to `limit`) and makes every attempt, waiting for all of
    /// them. Returns how many deliveries it handled.
    pub async fn dispatch_once(&self, limit: usize) -> Result<usize> {
        let lease = LeaseId::generate();
        let due = self.claim(lease, limit).await?;
        let n = due.len();
        let mut attempts = JoinSet::new();
        for delivery in due {
            let this = self.clone();
            attempts.spawn(async move { this.attempt(lease, delivery).await });
        }
        while attempts.join_next().await.is_some() {}
        Ok(n)
    }

    async fn claim(&self, lease: LeaseId, limit: usize) -> Result<Vec<DueDelivery>> {
        self.outbox
            .claim_deliveries(lease, self.config.lease, limit, self.config.per_endpoint)
            .await
    }

    /// Makes one attempt (none for a deleted endpoint) and writes the outcome.
    async fn attempt(&self, lease: LeaseId, due: DueDelivery) {
        let DueDelivery {
            mut delivery,
            target,
        } = due;
        match target {
            None => delivery.endpoint_deleted(),
            Some(target) => {
                let now = self.clock.now();
                let timestamp = now.unix_micros().div_euclid(1_000_000);
                let id = delivery.event_id.to_string();
                let body = bytes::Bytes::from(target.body);
                let request = WebhookRequest {
                    signature: atomic_webhook_signature::sign(
                        &target.secret,
                        &id,
                        timestamp,
                        &body,
                    ),
                    url: target.url,
                    id,
                    timestamp,
                    body,
                };
                let outcome = self.sender.send(&request, self.config.policy).await;
                delivery.attempted(self.clock.now(), &outcome, &self.config.schedule);
                tracing::debug!(
                    delivery_id = %delivery.id,
                    status = delivery.status.as_str(),
                    ?outcome,
                    "webhook attempt"
                );
            }
        }
        if let Err(error) = self.outbox.finish_deliveries(lease, &[delivery]).await {
            tracing::warn!(
                ?error,
                "could not record a webhook attempt; it is tried again when its lease runs out"
            );
        }
    }

    /// Dispatches until shutdown: claims as many due deliveries as it has room for, runs each
    /// attempt in a task of its own, and looks again as soon as one ends or every `poll`.
    /// On shutdown it stops claiming and lets the attempts in flight end.
    pub async fn run(self, mut shutdown: Shutdown) {
        let room = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut attempts = JoinSet::new();
        while !shutdown.is_triggered() {
            let free = room.available_permits();
            let lease = LeaseId::generate();
            let due = match free {
                0 => Vec::new(),
                _ => self.claim(lease, free).await.unwrap_or_else(|error| {
                    tracing::warn!(?error, "could not claim webhook deliveries");
                    Vec::new()
                }),
            };
            let claimed_all = free > 0 && due.len() == free;
            for delivery in due {
                let Ok(permit) = room.clone().try_acquire_owned() else {
                    break;
                };
                let this = self.clone();
                attempts.spawn(async move {
                    this.attempt(lease, delivery).await;
                    drop(permit);
                });
            }
            while attempts.try_join_next().is_some() {}
            if !claimed_all {
                tokio::select! {
                    () = tokio::time::sleep(self.config.poll) => {}
                    Some(_) = attempts.join_next(), if room.available_permits() == 0 => {}
                    () = shutdown.wait() => break,
                }
            }
        }
        while attempts.join_next().await.is_some() {}
        tracing::info!("webhook dispatcher stopped");
    }
}
