//! [`OutboundConfig`]: how long a delivery attempt may take. Built by the application from
//! `WEBHOOK_TIMEOUT` (library crates read no environment variables) and checked once by
//! [`crate::Outbound::new`].

use std::time::Duration;

/// `WEBHOOK_TIMEOUT`'s default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connect timeout's default (capped at the attempt's timeout).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time limits of the outbound requests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboundConfig {
    /// `WEBHOOK_TIMEOUT`: bounds a whole attempt (lookup, connect, request, answer head and the
    /// part of the body that is read) and a host lookup.
    pub timeout: Duration,
    /// Bounds the TCP connect and TLS handshake of an attempt; never longer than `timeout`.
    pub connect_timeout: Duration,
}

impl OutboundConfig {
    /// Limits with `timeout` for the whole attempt and the default connect timeout (5 s), capped
    /// at `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT.min(timeout),
        }
    }

    /// The same limits with another connect timeout (capped at `timeout` when used).
    pub fn with_connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// The connect timeout in force: never past the attempt's own timeout.
    pub(crate) fn effective_connect_timeout(&self) -> Duration {
        self.connect_timeout.min(self.timeout)
    }
}

impl Default for OutboundConfig {
    /// 10 s per attempt (`WEBHOOK_TIMEOUT`'s default), 5 s to connect.
    fn default() -> Self {
        Self::new(DEFAULT_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_timeout_never_outlasts_the_attempt() {
        let defaults = OutboundConfig::default();
        assert_eq!(defaults.timeout, Duration::from_secs(10));
        assert_eq!(defaults.effective_connect_timeout(), Duration::from_secs(5));

        let short = OutboundConfig::new(Duration::from_millis(300));
        assert_eq!(
            short.effective_connect_timeout(),
            Duration::from_millis(300)
        );
        let long_connect = short.with_connect_timeout(Duration::from_secs(60));
        assert_eq!(
            long_connect.effective_connect_timeout(),
            Duration::from_millis(300)
        );
    }
}
