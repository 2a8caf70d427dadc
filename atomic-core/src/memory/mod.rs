//! In-memory adapters for every port: the no-service default of the server, and the fast,
//! exact adapters of the core's own tests. They are correct under concurrency: each store
//! operation runs inside one critical section, which is what a transaction is here.
//! Nothing survives a restart.

mod accounts;
mod api_keys;
mod audit;
mod events;
mod idempotency;
mod merchants;
mod outbound;
mod outbox;
mod payments;
mod queue;
mod rate_limit;
mod settlement;
mod store;
mod webhooks;

use std::sync::Arc;

pub use outbound::RecordingWebhooks;
pub use queue::MemoryQueue;
pub use rate_limit::MemoryRateLimiter;
pub use store::MemoryStore;

use crate::ports::{Backend, Ports, TestModeCards};
use crate::time::{Clock, SystemClock};

impl Ports {
    /// Every port on in-memory adapters, with test-mode cards, webhooks recorded and never
    /// sent ([`RecordingWebhooks`]), and the system clock.
    pub fn in_memory() -> Self {
        Self::in_memory_with_clock(Arc::new(SystemClock))
    }

    /// Every port on in-memory adapters, reading time from `clock`.
    pub fn in_memory_with_clock(clock: Arc<dyn Clock>) -> Self {
        let webhooks = Arc::new(RecordingWebhooks::default());
        Ports {
            store: Backend::new(Arc::new(MemoryStore::new(clock.clone()))),
            queue: Arc::new(MemoryQueue::new(clock.clone())),
            limiter: Arc::new(MemoryRateLimiter::new(clock.clone())),
            cards: Arc::new(TestModeCards),
            resolver: webhooks.clone(),
            sender: webhooks,
            clock,
        }
    }
}
