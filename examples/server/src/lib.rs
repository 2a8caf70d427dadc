//! The Atomic server: turns [`Settings`] into running parts. It is the only place that knows
//! which adapters exist. [`Application::build`] wires ports, services and the HTTP router and
//! binds the listener; [`Application::run_until_stopped`] serves requests, runs the settlement
//! workers, the recovery sweep and the webhook dispatcher in-process, and shuts all of them down gracefully.

mod exporter;
pub mod settings;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use atomic_core::api_key::RawApiKey;
use atomic_core::ports::Backend;
use atomic_core::service::{CancellationToken, DispatcherConfig, SweepConfig, WorkerConfig};
use atomic_core::{Ports, Services};
use atomic_http::{AppState, ServeConfig};
use atomic_postgres::PgStore;
use atomic_redis::{Redis, RedisConfig};
use atomic_webhook_sender::{Outbound, OutboundConfig};
use axum::Router;
use tokio::net::TcpListener;

use settings::DatabaseSettings;
pub use settings::{ConfigError, LogFormat, Role, Settings};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration value is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An adapter asked for is not part of this build.
    #[error("{0}")]
    Unsupported(&'static str),
    /// PostgreSQL could not be reached or migrated.
    #[error("PostgreSQL (DATABASE_URL): {0}")]
    Postgres(#[from] atomic_postgres::Error),
    /// PostgreSQL could not be reached or migrated as the owner.
    #[error("PostgreSQL (DATABASE_MIGRATE_URL): {0}")]
    Migrate(atomic_postgres::Error),
    /// `MIGRATE=false` on a database that lacks migrations this build needs.
    #[error(
        "PostgreSQL (DATABASE_URL): MIGRATE=false but the database lacks migrations {0}; \
         apply them (sqlx migrate run, or start once with MIGRATE=true)"
    )]
    Unmigrated(String),
    /// The webhook client could not be built.
    #[error("webhooks: {0}")]
    Webhooks(#[from] atomic_webhook_sender::Error),
    /// The Redis settings are not usable.
    #[error("Redis (REDIS_URL): {0}")]
    Redis(#[from] atomic_redis::Error),
    /// The core could not start (e.g. the store refused the system accounts).
    #[error("could not start the core: {0}")]
    Core(#[from] atomic_core::Error),
    /// The metrics recorder could not be installed (e.g. the embedding application installed
    /// another).
    #[error("metrics (METRICS_ADDR): {0}")]
    Metrics(String),
    /// The metrics listener could not be bound.
    #[error("could not listen on METRICS_ADDR {addr}: {source}")]
    MetricsBind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The listener could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A built server, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    router: Router,
    services: Services,
    worker: WorkerConfig,
    sweep: SweepConfig,
    dispatch: DispatcherConfig,
    minted_platform_key: Option<RawApiKey>,
    storage: String,
    role: Role,
    shutdown_timeout: Duration,
    serve: ServeConfig,
    metrics: Option<exporter::MetricsServer>,
}

impl Application {
    /// Wires everything the settings ask for and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        // First, so a port that cannot be bound stops start-up before anything is touched.
        let metrics = match settings.metrics.addr {
            Some(addr) => Some(exporter::MetricsServer::bind(addr).await?),
            None => None,
        };
        let (ports, storage, pg) = wire(&settings).await?;
        let metrics = metrics.map(|server| server.with_pool(pg));

        let (platform_key, minted_platform_key) = match settings.core.platform_key_hash {
            Some(hash) => (hash, None),
            None => {
                let raw = RawApiKey::generate()?;
                (raw.hash(), Some(raw))
            }
        };
        let services = Services::start(ports, settings.core_config(platform_key)).await?;
        let server = settings.server;
        let (addr, shutdown_timeout) = (server.address(), server.shutdown_timeout());
        let state = AppState::new(services.clone(), server.http);
        let router = if settings.role.serves_api() {
            atomic_http::router(state)
        } else {
            atomic_http::health_router(state)
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let address = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        Ok(Self {
            listener,
            address,
            router,
            services,
            worker: settings.worker,
            sweep: settings.sweep,
            dispatch: settings.webhooks.dispatcher(),
            minted_platform_key,
            storage,
            role: settings.role,
            shutdown_timeout,
            serve: server.serve,
            metrics,
        })
    }

    /// Where `GET /metrics` is served, unless `METRICS_ADDR=off`.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(exporter::MetricsServer::address)
    }

    /// The address the server listens on (with the real port when 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The services (for tests and embedders).
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The platform key minted at start-up, when no `MERCHANT_API_KEY_HASH` was given.
    pub fn minted_platform_key(&self) -> Option<&RawApiKey> {
        self.minted_platform_key.as_ref()
    }

    /// What this process does.
    pub fn role(&self) -> Role {
        self.role
    }

    /// What the server stores data in, in words.
    pub fn storage(&self) -> &str {
        &self.storage
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets in-flight requests
    /// finish, stops the workers, the sweep and the webhook dispatcher (each finishes the job
    /// or attempt it holds), and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stop = CancellationToken::new();
        // Served to the end, so the last scrape sees the drain.
        let metrics = self.metrics.map(|server| tokio::spawn(server.run()));
        let background = if self.role.settles() {
            vec![
                tokio::spawn(self.services.worker(self.worker).run(stop.clone())),
                tokio::spawn(self.services.sweeper(self.sweep).run(stop.clone())),
                tokio::spawn(self.services.dispatcher(self.dispatch).run(stop.clone())),
            ]
        } else {
            Vec::new()
        };
        atomic_http::serve(self.listener, self.router, self.serve, shutdown).await;
        tracing::info!("no longer accepting requests; stopping the workers");
        stop.cancel();
        let drained = tokio::time::timeout(self.shutdown_timeout, async {
            for task in background {
                let _ = task.await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "workers did not stop within the shutdown timeout; their leases will run out and the jobs come back"
            );
        }
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        Ok(())
    }
}

/// The ports the settings ask for, what they are in words (logged at start-up), and the
/// PostgreSQL store when there is one (its pool is reported as a metric).
async fn wire(settings: &Settings) -> Result<(Ports, String, Option<PgStore>), StartError> {
    let mut ports = Ports::in_memory();
    let outbound = Arc::new(Outbound::new(OutboundConfig::new(
        settings.webhooks.timeout,
    ))?);
    ports.resolver = outbound.clone();
    ports.sender = outbound;
    let pg_store = connect_postgres(&settings.database).await?;
    let store = match &pg_store {
        None => "in-memory store (no DATABASE_URL): data will not survive a restart",
        Some(pg) => {
            ports.store = Backend::new(Arc::new(pg.clone()));
            "PostgreSQL store of record (DATABASE_URL)"
        }
    };
    let queue = match settings.redis.config() {
        None => {
            "in-memory queue and rate limiter (no REDIS_URL): queued jobs are hints, the \
             recovery sweep finds unfinished payments after a restart"
        }
        Some(config) => {
            let redis = connect_redis(config).await?;
            ports.queue = Arc::new(redis.job_queue());
            ports.limiter = Arc::new(redis.rate_limiter());
            "Redis job queue and rate limiter (REDIS_URL)"
        }
    };
    // Fault-test builds only: a process clock shifted on purpose (`ATOMIC_CLOCK_SKEW`).
    if let Some(skew) = settings.faults.clock_skew {
        tracing::warn!(
            ?skew,
            "clock skew armed: this process's clock is off on purpose"
        );
        ports.clock = skew.clock();
    }
    Ok((ports, format!("{store}; {queue}"), pg_store))
}

/// Connects to `DATABASE_URL`, if set, and migrates it (`MIGRATE`) or checks that it needs
/// no migration.
async fn connect_postgres(database: &DatabaseSettings) -> Result<Option<PgStore>, StartError> {
    let Some(config) = database.pool() else {
        return Ok(None);
    };
    let pg = PgStore::connect(&config).await?;
    if !database.migrate {
        let missing = pg.missing_migrations().await?;
        if !missing.is_empty() {
            return Err(StartError::Unmigrated(missing.join(", ")));
        }
        return Ok(Some(pg));
    }
    match database.owner(&config) {
        // As the schema's owner, on a connection of its own; the server's role owns nothing.
        Some(owner) => {
            let owner = PgStore::connect(&owner)
                .await
                .map_err(StartError::Migrate)?;
            let migrated = owner.migrate().await.map_err(StartError::Migrate);
            owner.close().await;
            migrated?;
        }
        None => pg.migrate().await?,
    }
    tracing::info!("database migrations applied");
    Ok(Some(pg))
}

/// The Redis adapter. It connects lazily: Redis being down never stops the server. Payments
/// are still accepted and stored; the sweep enqueues them once Redis answers.
async fn connect_redis(config: RedisConfig) -> Result<Redis, StartError> {
    let redis = Redis::new(config)?;
    if let Err(error) = redis.ping().await {
        tracing::warn!(
            %error,
            "Redis is not answering at start-up; payments are accepted and stored, and settle once it answers"
        );
    }
    Ok(redis)
}

/// Runs the books audit (L1–L12, TEST-MATRIX.md) on the store of `DATABASE_URL` in one
/// snapshot: what `atomic-server audit` prints. Payments open longer than `stuck_after` count
/// as stuck (L12). The audit reads every row, so it runs without the request-path statement
/// timeout.
pub async fn audit_books(
    settings: &Settings,
    stuck_after: Duration,
) -> Result<atomic_core::ports::AuditReport, StartError> {
    use atomic_core::ports::LedgerAudit;

    let Some(config) = settings.database.unbounded() else {
        return Err(StartError::Unsupported(
            "the audit reads the store of record: set DATABASE_URL (an in-memory store lives \
             only inside its server process)",
        ));
    };
    let pg = PgStore::connect(&config).await?;
    Ok(pg.audit(stuck_after).await?)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}

/// The walk-through printed at start-up when a platform key was minted: runnable shell lines
/// that create a merchant, pay it, poll the payment and read the balance.
pub fn walkthrough(address: SocketAddr, key: &RawApiKey) -> String {
    let base = format!("http://{address}/api/v1");
    let key = key.expose();
    format!(
        r#"
No MERCHANT_API_KEY_HASH was set, so this run minted a platform key. It is shown once:

  export ATOMIC_KEY={key}
  export ATOMIC={base}

Walk the whole flow (paste these lines into a shell):

  # 1. Create a merchant: its account and its own API key come back.
  MERCHANT=$(curl -s -X POST $ATOMIC/merchants -H "Authorization: Bearer $ATOMIC_KEY" -H 'Content-Type: application/json' -d '{{"name":"Coffee Shop","currency":"USD"}}'); echo "$MERCHANT"
  ACCOUNT=$(echo "$MERCHANT" | grep -o '"account":{{"id":"[^"]*' | cut -d'"' -f6)

  # 2. Pay it $50.00 (202: stored PENDING, settled in the background). Retrying with the same Idempotency-Key is safe.
  PAYMENT=$(curl -s -X POST $ATOMIC/payments -H "Authorization: Bearer $ATOMIC_KEY" -H 'Content-Type: application/json' -H 'Idempotency-Key: order-1001' -d '{{"merchantId":"'$ACCOUNT'","amount":5000,"currency":"USD","source":"tok_visa"}}'); echo "$PAYMENT"
  PAYMENT_ID=$(echo "$PAYMENT" | grep -o '"data":{{"id":"[^"]*' | cut -d'"' -f6)

  # 3. Poll the payment until it is SUCCESS (tok_chargeDeclined would end FAILED).
  curl -s $ATOMIC/payments/$PAYMENT_ID -H "Authorization: Bearer $ATOMIC_KEY"

  # 4. Read the balance (5000) and the ledger entry that moved it.
  curl -s $ATOMIC/accounts/$ACCOUNT -H "Authorization: Bearer $ATOMIC_KEY"
  curl -s $ATOMIC/accounts/$ACCOUNT/entries -H "Authorization: Bearer $ATOMIC_KEY"
"#
    )
}
