//! The conformance kit run against the in-memory adapters.

use std::sync::Arc;

use atomic_core::memory::{MemoryQueue, MemoryRateLimiter, MemoryStore};
use atomic_core::testkit::{LimiterKit, QueueKit, StoreKit};
use atomic_core::time::ManualClock;

fn store_kit() -> StoreKit {
    let clock = Arc::new(ManualClock::default());
    StoreKit::new(Arc::new(MemoryStore::new(clock.clone())), clock)
}

mod ledger {
    use super::*;
    atomic_core::ledger_store_conformance!(store_kit());
}

mod capture {
    use super::*;
    atomic_core::capture_conformance!(store_kit());
}

mod refunds {
    use super::*;
    atomic_core::refund_conformance!(store_kit());
}

mod refund_drain {
    use super::*;
    atomic_core::refund_drain_conformance!({
        let clock = Arc::new(ManualClock::default());
        let store = Arc::new(MemoryStore::new(clock.clone()));
        let drained = store.clone();
        let drain = move |account, amount| {
            let store = drained.clone();
            async move { store.testkit_drain(account, amount).unwrap() }
        };
        (StoreKit::new(store, clock), drain)
    });
}

mod lists {
    use super::*;
    atomic_core::list_conformance!(store_kit());
}

mod outbox {
    use super::*;
    atomic_core::outbox_conformance!(store_kit());
}

mod idempotency {
    use super::*;
    atomic_core::idempotency_store_conformance!(store_kit());
}

mod api_keys {
    use super::*;
    atomic_core::api_key_store_conformance!(store_kit());
}

mod merchants {
    use super::*;
    atomic_core::merchant_store_conformance!(store_kit());
}

mod queue {
    use super::*;
    atomic_core::job_queue_conformance!({
        let clock = Arc::new(ManualClock::default());
        QueueKit {
            queue: Arc::new(MemoryQueue::new(clock.clone())),
            time: clock,
        }
    });
}

mod rate_limit {
    use super::*;
    atomic_core::rate_limiter_conformance!({
        let clock = Arc::new(ManualClock::default());
        LimiterKit {
            limiter: Arc::new(MemoryRateLimiter::new(clock.clone())),
            time: clock,
        }
    });
}
