//! [`Error`]: everything that can go wrong in this crate, one `thiserror` enum. Redis errors are
//! sorted once, here, into "Redis cannot be reached or did not answer in time" (retrying later
//! may work; it becomes the core's [`atomic_core::error::Error::Unavailable`]) and "Redis
//! answered with an error" (it becomes [`atomic_core::error::Error::Backend`]). `Debug` prints
//! the whole source chain, so a logged error says why.

use std::fmt;
use std::time::Duration;

use redis::{ErrorKind, ServerErrorKind};

/// What went wrong talking to Redis, or in the configuration of the adapters.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work (bad URL, prefix or timeouts).
    #[error("invalid Redis configuration: {0}")]
    Config(String),
    /// Redis cannot be reached: refused, dropped or broken connection, or a server that is
    /// loading, failing over or read-only.
    #[error("Redis is unreachable")]
    Unreachable(#[source] redis::RedisError),
    /// Redis did not answer within the configured time.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered a command with an error that retrying will not fix.
    #[error("Redis refused a command")]
    Command(#[source] redis::RedisError),
    /// Redis answered with something this crate did not expect.
    #[error("unexpected reply from Redis: {0}")]
    Reply(String),
}

impl Error {
    /// Whether retrying later may succeed (Redis unreachable or slow).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Timeout(_))
    }
}

/// Whether a Redis error means the server cannot be reached (rather than a refused command).
pub(crate) fn is_connection_error(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        )
}

impl From<redis::RedisError> for Error {
    fn from(error: redis::RedisError) -> Self {
        if is_connection_error(&error) {
            Self::Unreachable(error)
        } else {
            Self::Command(error)
        }
    }
}

impl From<Error> for atomic_core::error::Error {
    fn from(error: Error) -> Self {
        if error.is_unavailable() {
            Self::unavailable(error)
        } else {
            Self::backend(error)
        }
    }
}

/// Debug walks the source chain.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            write!(f, "\nCaused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_become_unavailable_and_others_backend() {
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let core: atomic_core::error::Error = Error::from(refused).into();
        assert!(matches!(core, atomic_core::error::Error::Unavailable(_)));

        let timeout: atomic_core::error::Error = Error::Timeout(Duration::from_secs(1)).into();
        assert!(matches!(timeout, atomic_core::error::Error::Unavailable(_)));

        let reply: atomic_core::error::Error = Error::Reply("odd".into()).into();
        assert!(matches!(reply, atomic_core::error::Error::Backend(_)));
    }

    #[test]
    fn debug_shows_the_cause() {
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let shown = format!("{:?}", Error::from(refused));
        assert!(
            shown.starts_with("Redis is unreachable\nCaused by: "),
            "{shown}"
        );
    }
}
