//! [`RedisConfig`]: where Redis is, how keys are named and how long to wait for it. Built by the
//! application (library crates never read environment variables), checked once by
//! [`crate::Redis::new`]. Its `Debug` never shows the password in the URL, and neither does any
//! log line of this crate.

use std::fmt;
use std::time::Duration;

use crate::error::Error;

/// Connection settings and key layout shared by the queue and the rate limiter.
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[user[:password]@]host[:port][/db]` (shown redacted by `Debug`).
    pub url: String,
    /// First part of every key (`atomic`); no braces, so hash tags stay ours.
    pub prefix: String,
    /// This process's consumer name in the job queue's consumer group.
    pub consumer: String,
    /// Longest single blocking read of a waiting `reserve` (shorter than `response_timeout`).
    pub block: Duration,
    /// Longest wait for any answer from Redis (longer than `block`).
    pub response_timeout: Duration,
    /// Longest wait for a TCP connection to Redis.
    pub connect_timeout: Duration,
}

impl RedisConfig {
    /// Settings for `url` with the defaults: prefix `atomic`, a unique consumer name, 2 s
    /// blocking reads, 5 s response timeout, 2 s connect timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: "atomic".to_owned(),
            consumer: default_consumer_name(),
            block: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        }
    }

    /// The same settings with another key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The same settings with another consumer name.
    pub fn with_consumer(mut self, consumer: impl Into<String>) -> Self {
        self.consumer = consumer.into();
        self
    }

    /// The same settings with other timeouts: blocking read, response and connect.
    pub fn with_timeouts(mut self, block: Duration, response: Duration, connect: Duration) -> Self {
        self.block = block;
        self.response_timeout = response;
        self.connect_timeout = connect;
        self
    }

    /// The URL with its password replaced by `***`, safe to log.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The longest one Redis operation may take before it fails as unavailable: connecting
    /// and then waiting for the answer.
    pub fn operation_timeout(&self) -> Duration {
        self.connect_timeout.saturating_add(self.response_timeout)
    }

    /// Checks that the settings can work.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |why: &str| Err(Error::Config(why.to_owned()));
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return bad("prefix must be non-empty and contain no braces");
        }
        if self.consumer.is_empty() {
            return bad("consumer name must be non-empty");
        }
        if self.block < Duration::from_millis(1) {
            return bad("block must be at least 1 ms");
        }
        if self.response_timeout <= self.block {
            return bad("response_timeout must be longer than block");
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout must be positive");
        }
        Ok(())
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .field("consumer", &self.consumer)
            .field("block", &self.block)
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// A consumer name unique to this process: `<hostname>-<pid>-<uuid>`.
pub fn default_consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    )
}

/// `url` with the password of its user info, and any query string, replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "***".to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (user_info, host) = authority.split_at(at);
            match user_info.split_once(':') {
                Some((user, _password)) => format!("{user}:***{host}"),
                None => format!("***{host}"),
            }
        }
        None => authority.to_owned(),
    };
    let tail = match tail.find('?') {
        Some(q) => format!("{}?***", &tail[..q]),
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("redis://user:s3cret@db:6379/2"),
            "redis://user:***@db:6379/2"
        );
        assert_eq!(redact_url("redis://:s3cret@db"), "redis://:***@db");
        assert_eq!(redact_url("redis://s3cret@db"), "redis://***@db");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?pass=s3cret"),
            "redis+unix:///run/redis.sock?***"
        );
        assert_eq!(redact_url("s3cret"), "***");
        let shown = format!("{:?}", RedisConfig::new("redis://u:s3cret@h:1"));
        assert!(
            !shown.contains("s3cret") && shown.contains("u:***@h:1"),
            "{shown}"
        );
    }

    #[test]
    fn defaults_are_valid_and_bad_settings_are_refused() {
        let config = RedisConfig::new("redis://127.0.0.1");
        config.validate().unwrap();
        assert_eq!(config.prefix, "atomic");
        assert_ne!(config.consumer, RedisConfig::new("redis://x").consumer);
        assert!(config.clone().with_prefix("a{b}").validate().is_err());
        assert!(config.clone().with_prefix("").validate().is_err());
        let slow_block = config.with_timeouts(
            Duration::from_secs(5),
            Duration::from_secs(5),
            Duration::from_secs(1),
        );
        assert!(slow_block.validate().is_err());
    }
}
