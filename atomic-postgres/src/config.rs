//! [`PgConfig`]: how to reach PostgreSQL and the bounds that keep a sick database from hanging
//! the service.

use std::time::Duration;

/// Connection settings for [`crate::PgStore::connect`].
#[derive(Clone)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/database` (libpq URL syntax, including `?options=`).
    pub url: String,
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// How long a call waits for a pooled connection (or a new one) before it is unavailable.
    pub acquire_timeout: Duration,
    /// The server-side `statement_timeout` of every connection.
    pub statement_timeout: Duration,
    /// The longest one store call (all its statements) may take, whatever the network does.
    pub call_timeout: Duration,
    /// Writer tasks that group-commit concurrent idempotency claims and payment inserts (each
    /// write is one statement, and one commit, for all the requests waiting); 0 writes each
    /// on its own.
    pub group_commit_writers: usize,
}

impl PgConfig {
    /// Settings for `url` with the defaults: 10 connections, 2 s acquire timeout, 5 s
    /// statement timeout, 10 s per call, 1 group-commit writer.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
            group_commit_writers: Self::default_writers(),
        }
    }

    /// The default number of group-commit writers: one per kind of write. More writers make
    /// smaller groups, and a group's statement costs PostgreSQL about the same CPU whatever its
    /// size, so on a busy database one writer accepts more, sooner (BENCHMARKS.md, run 4).
    pub fn default_writers() -> usize {
        1
    }
}

impl std::fmt::Debug for PgConfig {
    // The URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("call_timeout", &self.call_timeout)
            .field("group_commit_writers", &self.group_commit_writers)
            .finish()
    }
}
