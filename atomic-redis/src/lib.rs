//! Redis adapters for Atomic's [`atomic_core::ports::JobQueue`] ([`RedisJobQueue`]: a Redis
//! Stream read through a consumer group, with leases, delayed retries and a dead-letter stream)
//! and [`atomic_core::ports::RateLimiter`] ([`RedisRateLimiter`]: fixed-window counters, one
//! script call per check). Both hang off one lazily connected [`Redis`] handle built from a
//! [`RedisConfig`]; nothing connects until the first call, and every call is bounded by the
//! configured timeouts. Redis errors never leave this crate: they become [`Error`], which
//! converts into the core's error (`Unavailable` when Redis cannot be reached or is too slow).
#![warn(missing_docs)]

mod config;
mod connection;
mod error;
mod queue;
mod rate_limit;
mod scripts;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use config::{RedisConfig, default_consumer_name, redact_url};
pub use connection::Redis;
pub use error::Error;
pub use queue::{DeadLetter, QueueKeys, RedisJobQueue};
pub use rate_limit::RedisRateLimiter;
