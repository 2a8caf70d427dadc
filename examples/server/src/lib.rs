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
use atomic_core::idempotency::IdempotencyPolicy;
use atomic_core::ports::Backend;
use atomic_core::service::{
    CancellationToken, CoreConfig, DispatcherConfig, SweepConfig, WorkerConfig,
};
use atomic_core::webhook::AddressPolicy;
use atomic_core::{Ports, Services};
use atomic_http::{AppState, HttpConfig, ServeConfig};
use atomic_postgres::{PgConfig, PgStore};
use atomic_redis::{Redis, RedisConfig};
use atomic_webhook_sender::{Outbound, OutboundConfig};
use axum::Router;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

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
    shutdown_timeout: std::time::Duration,
    serve: ServeConfig,
    metrics: Option<exporter::MetricsServer>,
}

impl Application {
    /// Wires everything the settings ask for and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        // First, so a port that cannot be bound stops start-up before anything is touched.
        let metrics = match settings.metrics_addr {
            Some(addr) => Some(exporter::MetricsServer::bind(addr).await?),
            None => None,
        };
        let (ports, storage, pg) = wire(&settings).await?;
        let metrics = metrics.map(|server| server.with_pool(pg));

        let (platform_key, minted_platform_key) = match settings.platform_key_hash {
            Some(hash) => (hash, None),
            None => {
                let raw = RawApiKey::generate()?;
                (raw.hash(), Some(raw))
            }
        };
        let core = CoreConfig {
            api_key_cache_ttl: settings.api_key_cache_ttl,
            currencies: settings.currencies.clone(),
            platform_key: Some(platform_key),
            idempotency: IdempotencyPolicy {
                ttl: settings.idempotency_ttl,
                // Longer than any request may run, so a live request is never overtaken.
                lock_timeout: settings.request_timeout.saturating_mul(2),
            },
            authorization_ttl: settings.authorization_ttl,
            webhook_policy: AddressPolicy {
                allow_private: settings.webhooks.allow_private,
            },
            event_retention: settings.webhooks.event_retention,
        };
        let services = Services::start(ports, core).await?;
        let http = HttpConfig {
            global_limit: settings.rate_limit_global.clone(),
            payments_limit: settings.rate_limit_payments.clone(),
            rate_limit_fail_closed: settings.rate_limit_fail_closed,
            trusted_proxy_hops: settings.trusted_proxy_hops,
            cors: settings.cors.clone(),
            request_timeout: settings.request_timeout,
        };
        let state = AppState::new(services.clone(), http);
        let router = if settings.role.serves_api() {
            atomic_http::router(state)
        } else {
            atomic_http::health_router(state)
        };
        let addr = SocketAddr::new(settings.host, settings.port);
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
            worker: WorkerConfig {
                concurrency: settings.worker_concurrency,
                batch: settings.worker_batch,
                lease: settings.worker_lease,
                ..WorkerConfig::default()
            },
            sweep: SweepConfig {
                interval: settings.sweep_interval,
                stale_after: settings.sweep_stale_after,
                ..SweepConfig::default()
            },
            dispatch: DispatcherConfig {
                concurrency: settings.webhooks.concurrency,
                // A claim outlives the longest attempt, so no attempt's delivery is claimed
                // twice while it runs.
                lease: settings.webhooks.timeout.saturating_mul(2) + Duration::from_secs(5),
                schedule: settings.webhooks.retry_schedule.clone(),
                ..DispatcherConfig::default()
            },
            minted_platform_key,
            storage,
            role: settings.role,
            shutdown_timeout: settings.shutdown_timeout,
            serve: ServeConfig {
                header_read_timeout: settings.header_read_timeout,
                max_connections: settings.max_connections,
                drain_timeout: settings.shutdown_timeout,
            },
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
    let mut pg_store = None;
    let store = match &settings.database_url {
        None => "in-memory store (no DATABASE_URL): data will not survive a restart",
        Some(url) => {
            let config = PgConfig {
                max_connections: settings.database_pool_size,
                acquire_timeout: settings.database_acquire_timeout,
                statement_timeout: settings.database_statement_timeout,
                // One call may run a few statements; it is bounded as a whole too.
                call_timeout: settings.database_statement_timeout.saturating_mul(2),
                group_commit_writers: settings.database_group_writers,
                ..PgConfig::new(url.expose_secret())
            };
            let pg = PgStore::connect(&config).await?;
            if settings.migrate {
                match &settings.database_migrate_url {
                    // As the schema's owner, on a connection of its own; the server's role
                    // owns nothing.
                    Some(owner) => {
                        let owner = PgConfig {
                            url: owner.expose_secret().to_owned(),
                            max_connections: 1,
                            ..config.clone()
                        };
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
            } else {
                let missing = pg.missing_migrations().await?;
                if !missing.is_empty() {
                    return Err(StartError::Unmigrated(missing.join(", ")));
                }
            }
            pg_store = Some(pg.clone());
            ports.store = Backend::new(Arc::new(pg));
            "PostgreSQL store of record (DATABASE_URL)"
        }
    };
    let queue = match &settings.redis_url {
        None => {
            "in-memory queue and rate limiter (no REDIS_URL): queued jobs are hints, the \
             recovery sweep finds unfinished payments after a restart"
        }
        Some(url) => {
            let defaults = RedisConfig::new(url.expose_secret());
            // A blocking read must end before the response timeout it runs under.
            let block = defaults.block.min(settings.redis_response_timeout / 2);
            let connect = defaults.connect_timeout;
            let config = defaults
                .with_prefix(&settings.redis_key_prefix)
                .with_timeouts(block, settings.redis_response_timeout, connect);
            // Connects lazily: Redis being down never stops the server. Payments are still
            // accepted and stored; the sweep enqueues them once Redis answers.
            let redis = Redis::new(config)?;
            if let Err(error) = redis.ping().await {
                tracing::warn!(
                    %error,
                    "Redis is not answering at start-up; payments are accepted and stored, and settle once it answers"
                );
            }
            ports.queue = Arc::new(redis.job_queue());
            ports.limiter = Arc::new(redis.rate_limiter());
            "Redis job queue and rate limiter (REDIS_URL)"
        }
    };
    // Fault-test builds only: a process clock shifted on purpose (`ATOMIC_CLOCK_SKEW`).
    if let Some(skew) = settings.clock_skew {
        tracing::warn!(
            ?skew,
            "clock skew armed: this process's clock is off on purpose"
        );
        ports.clock = skew.clock();
    }
    Ok((ports, format!("{store}; {queue}"), pg_store))
}

/// Runs the books audit (L1–L12, TEST-MATRIX.md) on the store of `DATABASE_URL` in one
/// snapshot: what `atomic-server audit` prints. Payments open longer than `stuck_after` count
/// as stuck (L12). The audit reads every row, so it runs without the request-path statement
/// timeout.
pub async fn audit_books(
    settings: &Settings,
    stuck_after: std::time::Duration,
) -> Result<atomic_core::ports::AuditReport, StartError> {
    use atomic_core::ports::LedgerAudit;

    let Some(url) = &settings.database_url else {
        return Err(StartError::Unsupported(
            "the audit reads the store of record: set DATABASE_URL (an in-memory store lives \
             only inside its server process)",
        ));
    };
    let unbounded = std::time::Duration::from_secs(24 * 60 * 60);
    let config = PgConfig {
        max_connections: 1,
        acquire_timeout: settings.database_acquire_timeout,
        statement_timeout: unbounded,
        call_timeout: unbounded,
        ..PgConfig::new(url.expose_secret())
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
