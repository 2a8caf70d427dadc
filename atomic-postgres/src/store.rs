//! [`PgStore`]: the connection pool every store port shares, how it connects and migrates, and
//! the bound on every call.

use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use atomic_core::Result;
use sqlx::Postgres;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::query::Query;

use crate::accept::Insert;
use crate::config::PgConfig;
use crate::error::{Error, from_sqlx};
use crate::group::Queued;
use crate::idempotency::TakeRequest;

/// A statement over a batch of rows, planned at each execution for the values it is given.
/// A prepared statement's generic plan made while a table was small scans that table whole
/// (a hash join over a sequential scan), and the connection keeps the plan for its life while
/// the table grows; planning once per batch costs little next to a scan per batch.
pub(crate) fn batch_query(sql: &'static str) -> Query<'static, Postgres, PgArguments> {
    sqlx::query(sql).persistent(false)
}

/// The PostgreSQL store of record; cheap to clone (one shared pool).
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    call_timeout: Duration,
    /// Group-commit writers for payment inserts (0: each insert on its own).
    writers: usize,
    /// Where payment inserts go, once the first one starts the writers.
    accepts: Arc<OnceLock<tokio::sync::mpsc::Sender<Queued<Insert>>>>,
    /// Where idempotency claims go, once the first one starts the writers.
    takers: Arc<OnceLock<tokio::sync::mpsc::Sender<Queued<TakeRequest>>>>,
}

impl PgStore {
    /// Opens the pool and checks the database answers (within the acquire timeout).
    pub async fn connect(config: &PgConfig) -> Result<Self, Error> {
        let store = Self::connect_lazy(config)?;
        store
            .pool
            .acquire()
            .await
            .map_err(Error::Unreachable)?
            .close_on_drop();
        Ok(store)
    }

    /// Builds the pool without connecting; connections open on first use.
    pub fn connect_lazy(config: &PgConfig) -> Result<Self, Error> {
        let options = PgConnectOptions::from_str(&config.url)
            .map_err(Error::InvalidUrl)?
            .application_name("atomic")
            .options([
                (
                    "statement_timeout",
                    format!("{}ms", config.statement_timeout.as_millis().max(1)),
                ),
                // A client that vanished mid-transaction must not hold row locks for long.
                (
                    "idle_in_transaction_session_timeout",
                    format!("{}ms", config.call_timeout.as_millis().max(1) * 2),
                ),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout)
            .connect_lazy_with(options);
        let mut store = Self::from_pool(pool, config.call_timeout);
        store.writers = config.group_commit_writers;
        Ok(store)
    }

    /// Wraps an existing pool; each call is bounded by `call_timeout`. Payment inserts are
    /// group-committed by [`PgConfig::default_writers`] writers.
    pub fn from_pool(pool: PgPool, call_timeout: Duration) -> Self {
        Self {
            pool,
            call_timeout,
            writers: PgConfig::default_writers(),
            accepts: Arc::default(),
            takers: Arc::default(),
        }
    }

    /// Where idempotency claims go when group commit is on (starts the writers on first use).
    pub(crate) fn takers(&self) -> Option<&tokio::sync::mpsc::Sender<Queued<TakeRequest>>> {
        (self.writers > 0).then(|| {
            self.takers
                .get_or_init(|| crate::idempotency::start_takers(self.pool.clone(), self.writers))
        })
    }

    /// Where payment inserts go when group commit is on (starts the writers on first use).
    pub(crate) fn accepts(&self) -> Option<&tokio::sync::mpsc::Sender<Queued<Insert>>> {
        (self.writers > 0).then(|| {
            self.accepts
                .get_or_init(|| crate::accept::start(self.pool.clone(), self.writers))
        })
    }

    /// Applies the pending migrations of [`crate::MIGRATOR`].
    pub async fn migrate(&self) -> Result<(), Error> {
        crate::MIGRATOR
            .run(&self.pool)
            .await
            .map_err(Error::Migrate)
    }

    /// The migrations this build has that the database has not applied (`version
    /// description`, oldest first): all of them on a database never migrated.
    pub async fn missing_migrations(&self) -> Result<Vec<String>, Error> {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
            {
                Ok(applied) => applied,
                Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => {
                    Vec::new()
                }
                Err(error) => return Err(Error::Unreachable(error)),
            };
        Ok(crate::MIGRATOR
            .iter()
            .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
            .map(|m| format!("{} {}", m.version, m.description))
            .collect())
    }

    /// The pool (for operator tools and tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs one store call under the call timeout: a database that does not answer in time is
    /// unavailable, and dropping the call rolls back whatever it had begun.
    pub(crate) async fn call<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.call_timeout, work).await {
            Ok(result) => result,
            Err(elapsed) => Err(atomic_core::Error::unavailable(elapsed)),
        }
    }

    /// The bound on one store call.
    pub(crate) fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Checks a list cursor: `visible` selects the row `$1` if the viewer (`$2`, NULL for the
    /// platform) may see it; otherwise the cursor is [`atomic_core::Error::UnknownCursor`].
    pub(crate) async fn check_cursor(
        &self,
        visible: &'static str,
        cursor: Option<uuid::Uuid>,
        viewer: Option<uuid::Uuid>,
    ) -> Result<()> {
        let Some(cursor) = cursor else {
            return Ok(());
        };
        let found = sqlx::query(visible)
            .bind(cursor)
            .bind(viewer)
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?;
        found.map(|_| ()).ok_or(atomic_core::Error::UnknownCursor)
    }

    /// Begins a transaction.
    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool.begin().await.map_err(from_sqlx)
    }
}
