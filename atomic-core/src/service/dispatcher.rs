//! The webhook dispatcher: claims due deliveries from the outbox under a lease, makes each
//! attempt (signed, Standard Webhooks headers) and writes its outcome back by the retry rules
//! of [`WebhookDelivery`]. Any number of dispatchers can run on one store: the claim hands
//! each delivery to one of them at a time, and one whose dispatcher died is claimed again when
//! its lease runs out (at least once). At most `per_endpoint` attempts of one endpoint are in
//! flight at once across dispatchers, so a receiver that hangs holds back only its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::ports::{DueDelivery, LeaseId, OutboxStore, Ports, WebhookRequest, WebhookSender};
use crate::time::Clock;
use crate::webhook::{AddressPolicy, RetrySchedule, WebhookDelivery};

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
            concurrency: 256,
            per_endpoint: 64,
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
            attempts.spawn(async move { (lease, this.attempt(delivery).await) });
        }
        let mut done = Vec::new();
        while let Some(ended) = attempts.join_next().await {
            done.extend(ended.ok());
        }
        self.finish(done).await;
        Ok(n)
    }

    async fn claim(&self, lease: LeaseId, limit: usize) -> Result<Vec<DueDelivery>> {
        self.outbox
            .claim_deliveries(lease, self.config.lease, limit, self.config.per_endpoint)
            .await
    }

    /// Makes one attempt (none for a deleted endpoint); the delivery as it now stands.
    async fn attempt(&self, due: DueDelivery) -> WebhookDelivery {
        let DueDelivery {
            mut delivery,
            target,
        } = due;
        let Some(target) = target else {
            delivery.endpoint_deleted();
            return delivery;
        };
        let timestamp = self.clock.now().unix_micros().div_euclid(1_000_000);
        let id = delivery.event_id.to_string();
        let body = bytes::Bytes::from(target.body);
        let request = WebhookRequest {
            signature: atomic_webhook_signature::sign(&target.secret, &id, timestamp, &body),
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
        delivery
    }

    /// Writes the outcomes of finished attempts, one store call per claim they came from.
    async fn finish(&self, done: Vec<(LeaseId, WebhookDelivery)>) {
        let mut by_lease: HashMap<LeaseId, Vec<WebhookDelivery>> = HashMap::new();
        for (lease, delivery) in done {
            by_lease.entry(lease).or_default().push(delivery);
        }
        for (lease, deliveries) in by_lease {
            match self.outbox.finish_deliveries(lease, &deliveries).await {
                Ok(_) => crate::telemetry::webhook_attempts(&deliveries),
                Err(error) => tracing::warn!(
                    ?error,
                    "could not record webhook attempts; they are tried again when their lease runs out"
                ),
            }
        }
    }

    /// Dispatches until shutdown. Each round writes the outcomes of the attempts that ended
    /// (together, so a busy dispatcher writes many per statement), claims as many due
    /// deliveries as it has room for and starts an attempt task for each; it waits for the
    /// next attempt to end or `poll`, whichever comes first (attempts that hang must not keep
    /// it from claiming what came due meanwhile). On shutdown it stops claiming,
    /// lets the attempts in flight end and writes them.
    pub async fn run(self, shutdown: CancellationToken) {
        let room = self.config.concurrency.max(1);
        let mut attempts: JoinSet<(LeaseId, WebhookDelivery)> = JoinSet::new();
        let mut done = Vec::new();
        while !shutdown.is_cancelled() {
            while let Some(ended) = attempts.try_join_next() {
                done.extend(ended.ok());
            }
            self.finish(std::mem::take(&mut done)).await;
            let free = room.saturating_sub(attempts.len());
            let lease = LeaseId::generate();
            if free > 0 {
                let due = self.claim(lease, free).await.unwrap_or_else(|error| {
                    tracing::warn!(?error, "could not claim webhook deliveries");
                    Vec::new()
                });
                for delivery in due {
                    let this = self.clone();
                    attempts.spawn(async move { (lease, this.attempt(delivery).await) });
                }
            }
            tokio::select! {
                Some(ended) = attempts.join_next(), if !attempts.is_empty() => done.extend(ended.ok()),
                () = tokio::time::sleep(self.config.poll) => {}
                () = shutdown.cancelled() => break,
            }
        }
        while let Some(ended) = attempts.join_next().await {
            done.extend(ended.ok());
        }
        self.finish(done).await;
        tracing::info!("webhook dispatcher stopped");
    }
}
