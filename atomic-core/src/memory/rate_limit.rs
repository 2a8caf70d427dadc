//! [`MemoryRateLimiter`]: fixed-window counters in memory, for one process. Counters of past
//! windows are dropped as the map grows, so rotating identities cannot exhaust memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::ports::RateLimiter;
use crate::rate_limit::{Decision, Hit, window_of};
use crate::time::Clock;

/// Counters of ended windows are pruned when the map grows past this many, and then again each
/// time it has doubled since the last prune: amortized O(1) per hit, however many identities.
const PRUNE_ABOVE: usize = 10_000;

/// One counter: its window length, the window it counts and the count.
struct Counter {
    window: Duration,
    index: i64,
    count: u64,
}

struct Counters {
    map: HashMap<(String, String), Counter>,
    prune_at: usize,
}

/// An in-memory [`RateLimiter`].
#[derive(Clone)]
pub struct MemoryRateLimiter {
    counters: Arc<Mutex<Counters>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRateLimiter").finish_non_exhaustive()
    }
}

impl MemoryRateLimiter {
    /// An empty limiter reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            counters: Arc::new(Mutex::new(Counters {
                map: HashMap::new(),
                prune_at: PRUNE_ABOVE,
            })),
            clock,
        }
    }

    /// How many counters are held.
    pub fn counters(&self) -> usize {
        self.counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .map
            .len()
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn hit(&self, hits: &[Hit]) -> Result<Vec<Decision>> {
        let now = self.clock.now().unix_micros();
        let mut counters = self
            .counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut decisions = Vec::with_capacity(hits.len());
        for hit in hits {
            let (window, elapsed) = window_of(now, hit.window);
            let counter = counters
                .map
                .entry((hit.policy.clone(), hit.identity.clone()))
                .or_insert(Counter {
                    window: hit.window,
                    index: window,
                    count: 0,
                });
            if counter.index != window || counter.window != hit.window {
                *counter = Counter {
                    window: hit.window,
                    index: window,
                    count: 0,
                };
            }
            counter.count = counter.count.saturating_add(1);
            let decision = Decision::from_count(hit, counter.count, elapsed);
            let refused = !decision.allowed;
            decisions.push(decision);
            if refused {
                break;
            }
        }
        if counters.map.len() > counters.prune_at {
            // A counter of a window that has ended counts nothing any more.
            counters
                .map
                .retain(|_, c| window_of(now, c.window).0 == c.index);
            counters.prune_at = PRUNE_ABOVE.max(counters.map.len().saturating_mul(2));
        }
        Ok(decisions)
    }
}
