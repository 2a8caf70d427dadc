//! Shared helpers: the shared Redis's URL, kits with unique prefixes, and deadline waits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use atomic_core::error::Result;
use atomic_core::ports::{Delivery, Job, JobQueue};
use atomic_core::testkit::{LimiterKit, QueueKit, RealTime};
use atomic_redis::testkit::{DeleteOnDrop, require_redis, unique_config};
use atomic_redis::{Redis, RedisConfig, RedisJobQueue, RedisRateLimiter};

/// The shared Redis the tests run on.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A config on the shared Redis with a unique prefix; fails the test if Redis is not there.
pub async fn shared_config() -> RedisConfig {
    let url = redis_url();
    require_redis(&url).await;
    unique_config(&url)
}

/// A queue that deletes its keys when the test is over.
pub struct TidyQueue {
    pub queue: RedisJobQueue,
    _keys: DeleteOnDrop,
}

impl TidyQueue {
    pub fn new(config: RedisConfig) -> Self {
        let keys = DeleteOnDrop::new(&config);
        Self {
            queue: Redis::new(config).unwrap().job_queue(),
            _keys: keys,
        }
    }
}

#[async_trait]
impl JobQueue for TidyQueue {
    async fn ping(&self) -> Result<()> {
        self.queue.ping().await
    }
    async fn enqueue(&self, jobs: &[Job]) -> Result<()> {
        self.queue.enqueue(jobs).await
    }
    async fn reserve(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        self.queue.reserve(max, visibility, wait).await
    }
    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        self.queue.ack(deliveries).await
    }
    async fn retry(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        self.queue.retry(delivery, delay).await
    }
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        self.queue.dead_letter(delivery, reason).await
    }
}

/// A fresh queue on the shared Redis, with real time.
pub async fn queue_kit() -> QueueKit {
    QueueKit {
        queue: Arc::new(TidyQueue::new(shared_config().await)),
        time: Arc::new(RealTime),
    }
}

/// A fresh limiter on the shared Redis, with real time.
pub async fn limiter_kit() -> LimiterKit {
    LimiterKit {
        limiter: Arc::new(RedisRateLimiter::new(shared_config().await).unwrap()),
        time: Arc::new(RealTime),
    }
}

/// Polls `check` until it returns `Some`, failing the test after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
