//! [`Error`]: what can stop [`crate::Outbound`] from being built. Nothing else in this crate
//! fails with an error value: a delivery attempt always ends in a
//! [`SendOutcome`](atomic_core::ports::SendOutcome) and a lookup in a
//! [`ResolveError`](atomic_core::ports::ResolveError), as the ports say. `Debug` prints the
//! whole source chain.

use std::fmt;

/// Why the outbound client could not be built.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A timeout of zero would fail every attempt.
    #[error("webhook timeouts must be longer than zero")]
    ZeroTimeout,
    /// The HTTP client (its TLS set-up) could not be built.
    #[error("cannot build the webhook HTTP client")]
    Client(#[source] Box<dyn std::error::Error + Send + Sync>),
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
