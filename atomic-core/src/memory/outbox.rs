//! [`OutboxStore`] in memory: claiming due deliveries under a lease, writing attempts back,
//! and the retention purge.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use super::store::MemoryStore;
use crate::error::Result;
use crate::id::{DeliveryId, WebhookEndpointId};
use crate::ports::{DueDelivery, LeaseId, OutboxStore, Target};
use crate::time::Timestamp;
use crate::webhook::{DeliveryStatus, WebhookDelivery};

#[async_trait]
impl OutboxStore for MemoryStore {
    async fn claim_deliveries(
        &self,
        lease: LeaseId,
        duration: Duration,
        limit: usize,
        per_endpoint: usize,
    ) -> Result<Vec<DueDelivery>> {
        let now = self.now();
        let mut state = self.lock();
        let held = |until: &Option<(LeaseId, Timestamp)>| until.is_some_and(|(_, t)| t > now);
        let mut taken: HashMap<WebhookEndpointId, usize> = HashMap::new();
        for row in state.deliveries.values().filter(|row| held(&row.lease)) {
            *taken.entry(row.delivery.endpoint_id).or_default() += 1;
        }
        let mut due: Vec<(Timestamp, DeliveryId)> = state
            .deliveries
            .values()
            .filter(|row| row.delivery.status == DeliveryStatus::Pending && !held(&row.lease))
            .filter_map(|row| Some((row.delivery.next_attempt_at?, row.delivery.id)))
            .filter(|(at, _)| *at <= now)
            .collect();
        due.sort();
        let mut claimed = Vec::new();
        for (_, id) in due {
            if claimed.len() == limit {
                break;
            }
            let Some(row) = state.deliveries.get(&id) else {
                continue;
            };
            let count = taken.entry(row.delivery.endpoint_id).or_default();
            if *count >= per_endpoint {
                continue;
            }
            *count += 1;
            claimed.push(id);
        }
        let until = now.saturating_add(duration);
        let mut out = Vec::with_capacity(claimed.len());
        for id in claimed {
            let Some(row) = state.deliveries.get_mut(&id) else {
                continue;
            };
            row.lease = Some((lease, until));
            let delivery = row.delivery.clone();
            out.push(DueDelivery {
                target: state.target_of(&delivery),
                delivery,
            });
        }
        Ok(out)
    }

    async fn finish_deliveries(
        &self,
        lease: LeaseId,
        deliveries: &[WebhookDelivery],
    ) -> Result<usize> {
        let mut state = self.lock();
        let mut written = 0;
        for delivery in deliveries {
            if let Some(row) = state
                .deliveries
                .get_mut(&delivery.id)
                .filter(|row| row.lease.is_some_and(|(holder, _)| holder == lease))
            {
                row.delivery = delivery.clone();
                row.lease = None;
                written += 1;
            }
        }
        Ok(written)
    }

    async fn purge_events(&self, before: Timestamp, limit: usize) -> Result<usize> {
        let mut state = self.lock();
        let old: Vec<_> = state
            .events
            .values()
            .filter(|e| e.created_at < before)
            .take(limit)
            .map(|e| e.id)
            .collect();
        for id in &old {
            state.events.remove(id);
        }
        state
            .deliveries
            .retain(|_, row| !old.contains(&row.delivery.event_id));
        Ok(old.len())
    }
}

impl super::store::State {
    /// Where a delivery goes: `None` once its endpoint is deleted (or its event purged).
    fn target_of(&self, delivery: &WebhookDelivery) -> Option<Target> {
        let endpoint = self
            .endpoints
            .get(&delivery.endpoint_id)
            .filter(|row| row.deleted.is_none())?;
        let event = self.events.get(&delivery.event_id)?;
        Some(Target {
            url: endpoint.endpoint.url.clone(),
            secret: endpoint.endpoint.secret.clone(),
            body: event.body.clone(),
        })
    }
}
