//! [`Redis`]: one lazily connected handle to one Redis, shared by the job queue and the rate
//! limiter. Nothing connects until the first command, so a server starts while Redis is down
//! and its calls then fail as unavailable. Every operation is bounded by the configured connect
//! and response timeouts; one that finds its connection dropped (Redis restarted) is tried once
//! more on a fresh connection. Blocking reads get dedicated connections of their own, never the
//! shared multiplexed one, so a waiting worker holds up no other command.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisResult};
use tokio::sync::OnceCell;

use crate::config::RedisConfig;
use crate::error::{Error, is_connection_error};
use crate::queue::RedisJobQueue;
use crate::rate_limit::RedisRateLimiter;

/// Idle dedicated connections kept for blocking reads.
const IDLE_BLOCKING_CONNECTIONS: usize = 16;

/// A lazily connected handle to one Redis; cheap to clone.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    config: RedisConfig,
    client: Client,
    manager: OnceCell<ConnectionManager>,
    blocking: Mutex<Vec<MultiplexedConnection>>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A handle for `config`; checks the settings but does not connect.
    pub fn new(config: RedisConfig) -> Result<Self, Error> {
        config.validate()?;
        let client = Client::open(config.url.as_str()).map_err(|_| {
            Error::Config(format!("cannot parse Redis URL {}", config.redacted_url()))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                client,
                manager: OnceCell::new(),
                blocking: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The settings this handle was built with.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The job queue on this Redis.
    pub fn job_queue(&self) -> RedisJobQueue {
        RedisJobQueue::from_redis(self.clone())
    }

    /// The rate limiter on this Redis.
    pub fn rate_limiter(&self) -> RedisRateLimiter {
        RedisRateLimiter::from_redis(self.clone())
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), Error> {
        self.run("PING", |mut conn| async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await
        .map(|_| ())
    }

    /// The shared connection, created (not connected) on first use.
    fn manager(&self) -> Result<ConnectionManager, Error> {
        if let Some(manager) = self.inner.manager.get() {
            return Ok(manager.clone());
        }
        let config = &self.inner.config;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let manager =
            ConnectionManager::new_lazy_with_config(self.inner.client.clone(), manager_config)?;
        // Two callers may race here; the first one's manager wins and the other is dropped.
        let _ = self.inner.manager.set(manager);
        self.inner
            .manager
            .get()
            .cloned()
            .ok_or_else(|| Error::Reply("connection manager missing".to_owned()))
    }

    /// Runs `op` on the shared connection, bounded by the operation timeout, once more if the
    /// connection turned out to be dropped (not when the reply timed out).
    pub(crate) async fn run<T, F, Fut>(&self, what: &'static str, mut op: F) -> Result<T, Error>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let limit = self.inner.config.operation_timeout();
        let manager = self.manager()?;
        let first = match tokio::time::timeout(limit, op(manager.clone())).await {
            Ok(result) => result,
            Err(_) => return Err(Error::Timeout(limit)),
        };
        match first {
            Ok(value) => Ok(value),
            // A dropped connection is worth one more try on a fresh one; a reply that timed out
            // is not (the server is stalled, and a second wait would double the delay every
            // caller sees).
            Err(error)
                if (error.is_io_error() || error.is_connection_dropped())
                    && !error.is_timeout() =>
            {
                tracing::debug!(command = what, %error, "Redis connection failed; trying once more");
                match tokio::time::timeout(limit, op(manager)).await {
                    Ok(result) => result.map_err(Error::from),
                    Err(_) => Err(Error::Timeout(limit)),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// A dedicated connection for a blocking read: an idle one, or a new one.
    pub(crate) async fn blocking_connection(&self) -> Result<(MultiplexedConnection, bool), Error> {
        let idle = self
            .inner
            .blocking
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        if let Some(conn) = idle {
            return Ok((conn, true));
        }
        let config = &self.inner.config;
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout));
        let limit = config.operation_timeout();
        match tokio::time::timeout(
            limit,
            self.inner
                .client
                .get_multiplexed_async_connection_with_config(&connection_config),
        )
        .await
        {
            Ok(Ok(conn)) => Ok((conn, false)),
            Ok(Err(error)) => Err(error.into()),
            Err(_) => Err(Error::Timeout(limit)),
        }
    }

    /// Gives a dedicated connection back after a blocking read that went well.
    pub(crate) fn release_blocking_connection(&self, conn: MultiplexedConnection) {
        let mut idle = self
            .inner
            .blocking
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < IDLE_BLOCKING_CONNECTIONS {
            idle.push(conn);
        }
    }

    /// Whether a failed blocking read means the connection is broken.
    pub(crate) fn is_broken(error: &redis::RedisError) -> bool {
        is_connection_error(error)
    }
}
