//! [`RateLimiter`]: fixed-window counters.

use async_trait::async_trait;

use crate::error::Result;
use crate::rate_limit::{Decision, Hit};

/// Fixed-window counters, shared by every server that uses the same limiter.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Checks that the limiter answers.
    async fn ping(&self) -> Result<()>;

    /// Counts one request against each hit in order, atomically and in one round trip,
    /// stopping at the first refusal: hits after it are not counted. Returns one decision per
    /// hit counted (so the last one is the refusal, if any).
    async fn hit(&self, hits: &[Hit]) -> Result<Vec<Decision>>;
}
