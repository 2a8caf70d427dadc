//! The server's configuration, parsed once at start-up from the environment (and a `.env`
//! file when present) into a typed [`Settings`]. Nothing reads environment variables later.
//! A bad value stops start-up with one line naming the variable and what it must be.
//!
//! [`Settings`] is nested by concern; each group parses its own variables. Where a library's
//! config holds exactly what a group needs ([`HttpConfig`], [`ServeConfig`], [`WorkerConfig`],
//! [`SweepConfig`]) the variables are parsed straight into it; the other groups build their
//! library config with a method.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use atomic_core::api_key::KeyHash;
use atomic_core::failpoint::{self, ClockSkew, Failpoints};
use atomic_core::idempotency::IdempotencyPolicy;
use atomic_core::money::Currencies;
use atomic_core::rate_limit::RateLimitPolicy;
use atomic_core::service::{CoreConfig, DispatcherConfig, SweepConfig, WorkerConfig};
use atomic_core::time::parse_duration;
use atomic_core::webhook::{AddressPolicy, RetrySchedule};
use atomic_http::{Cors, HttpConfig, ServeConfig};
use atomic_postgres::PgConfig;
use atomic_redis::RedisConfig;
use axum::http::HeaderValue;
use secrecy::{ExposeSecret, SecretString};

/// A configuration variable with a bad value.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {var} {problem}")]
pub struct ConfigError {
    var: &'static str,
    problem: String,
}

fn bad(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        problem: problem.into(),
    }
}

const MILLISECOND: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// The variables every group parses from: values trimmed, an empty value counts as unset.
struct Vars<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn secret(&self, name: &str) -> Option<SecretString> {
        self.get(name).map(SecretString::from)
    }

    /// A duration within `min..=max`, `default` when unset.
    fn duration(
        &self,
        name: &'static str,
        default: Duration,
        (min, max): (Duration, Duration),
    ) -> Result<Duration, ConfigError> {
        let value = match self.get(name) {
            None => return Ok(default),
            Some(v) => parse_duration(&v).map_err(|e| bad(name, format!("{e} (got {v:?})")))?,
        };
        if value < min || value > max {
            return Err(bad(
                name,
                format!("must be from {min:?} to {max:?} (got {value:?})"),
            ));
        }
        Ok(value)
    }

    fn boolean(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).as_deref() {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
            Some(v) => Err(bad(name, format!("must be true or false (got {v:?})"))),
        }
    }

    /// A whole number within `range`, `default` when unset.
    fn count(
        &self,
        name: &'static str,
        default: u32,
        range: RangeInclusive<u32>,
    ) -> Result<u32, ConfigError> {
        let Some(v) = self.get(name) else {
            return Ok(default);
        };
        v.parse::<u32>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                let (min, max) = (range.start(), range.end());
                bad(
                    name,
                    format!("must be a number from {min} to {max} (got {v:?})"),
                )
            })
    }

    /// A rate limit (`100/15m`), `None` for `off`.
    fn limit(
        &self,
        name: &'static str,
        policy: &str,
        default: &str,
    ) -> Result<Option<RateLimitPolicy>, ConfigError> {
        let spec = self.get(name).unwrap_or_else(|| default.to_owned());
        RateLimitPolicy::parse(policy, &spec).map_err(|e| bad(name, format!("{e} (got {spec:?})")))
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// What one server process does (`ROLE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Serves the API: accepts payments and answers reads; settles nothing.
    Api,
    /// Settles payments (workers and the recovery sweep); serves only the health routes.
    Worker,
    /// Both (the default): one process is a whole deployment.
    Both,
}

impl Role {
    /// Whether this role serves the API routes.
    pub fn serves_api(self) -> bool {
        matches!(self, Self::Api | Self::Both)
    }

    /// Whether this role runs the workers and the recovery sweep.
    pub fn settles(self) -> bool {
        matches!(self, Self::Worker | Self::Both)
    }

    /// The role's name, as `ROLE` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Worker => "worker",
            Self::Both => "both",
        }
    }

    /// `ROLE`: `api`, `worker` or `both` (the default).
    fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        match vars.get("ROLE").as_deref() {
            None | Some("both") => Ok(Self::Both),
            Some("api") => Ok(Self::Api),
            Some("worker") => Ok(Self::Worker),
            Some(v) => Err(bad(
                "ROLE",
                format!("must be api, worker or both (got {v:?})"),
            )),
        }
    }
}

/// Everything the server is configured with, one group per concern.
#[derive(Debug)]
pub struct Settings {
    /// What this process does (`ROLE`: `api`, `worker` or `both`, the default).
    pub role: Role,
    /// The HTTP listener and what it enforces.
    pub server: ServerSettings,
    /// PostgreSQL.
    pub database: DatabaseSettings,
    /// Redis.
    pub redis: RedisSettings,
    /// The core: currencies, keys and how long things are kept.
    pub core: CoreSettings,
    /// The in-process settlement workers: `WORKER_CONCURRENCY` (default 4), `WORKER_BATCH`
    /// (jobs reserved and settled together in one database transaction, default 64; 1 settles
    /// one payment per transaction) and `WORKER_LEASE` (how long a worker's claim on a payment
    /// lasts before another may take it over, default 30s). The rest are the core's defaults.
    pub worker: WorkerConfig,
    /// The recovery sweep: `SWEEP_INTERVAL` (time between sweeps, default 10s) and
    /// `SWEEP_STALE_AFTER` (how long an unfinished payment sits untouched before the sweep
    /// enqueues it again, default 30s). The rest are the core's defaults.
    pub sweep: SweepConfig,
    /// Webhooks: what deliveries may reach and how they are retried.
    pub webhooks: WebhookSettings,
    /// Logging.
    pub log: LogSettings,
    /// The metrics listener.
    pub metrics: MetricsSettings,
    /// Fault-test builds only: failpoints and clock skew.
    pub faults: FaultSettings,
}

impl Settings {
    /// Reads `.env` (if present) and the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(bad(".env", format!("could not be read: {e}"))),
        }
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Parses settings from any variable lookup (for tests and embedders).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = &Vars(&get);
        let settings = Self {
            role: Role::from_vars(vars)?,
            server: ServerSettings::from_vars(vars)?,
            database: DatabaseSettings::from_vars(vars)?,
            redis: RedisSettings::from_vars(vars)?,
            core: CoreSettings::from_vars(vars)?,
            worker: worker_config(vars)?,
            sweep: sweep_config(vars)?,
            webhooks: WebhookSettings::from_vars(vars)?,
            log: LogSettings::from_vars(vars)?,
            metrics: MetricsSettings::from_vars(vars)?,
            faults: FaultSettings::from_vars(vars)?,
        };
        settings.check_role()?;
        Ok(settings)
    }

    /// Refuses a split role that could accept a payment nothing settles: separate processes
    /// share payments only through PostgreSQL and jobs only through Redis.
    fn check_role(&self) -> Result<(), ConfigError> {
        if self.role == Role::Both {
            return Ok(());
        }
        let missing = match (&self.database.url, &self.redis.url) {
            (None, None) => "DATABASE_URL and REDIS_URL",
            (None, Some(_)) => "DATABASE_URL",
            (Some(_), None) => "REDIS_URL",
            (Some(_), Some(_)) => return Ok(()),
        };
        Err(bad(
            "ROLE",
            format!(
                "{} needs {missing}: separate api and worker processes share payments \
                 through PostgreSQL and jobs through Redis (ROLE=both runs on either alone)",
                self.role.as_str()
            ),
        ))
    }

    /// The core's configuration, with the platform key it runs with (the one configured, or
    /// one minted at start-up).
    pub fn core_config(&self, platform_key: KeyHash) -> CoreConfig {
        CoreConfig {
            api_key_cache_ttl: self.core.api_key_cache_ttl,
            currencies: self.core.currencies.clone(),
            platform_key: Some(platform_key),
            idempotency: IdempotencyPolicy {
                ttl: self.core.idempotency_ttl,
                // Longer than any request may run, so a live request is never overtaken.
                lock_timeout: self.server.http.request_timeout.saturating_mul(2),
            },
            authorization_ttl: self.core.authorization_ttl,
            webhook_policy: AddressPolicy {
                allow_private: self.webhooks.allow_private,
            },
            event_retention: self.webhooks.event_retention,
        }
    }
}

/// The HTTP listener and what it enforces.
#[derive(Debug)]
pub struct ServerSettings {
    /// Address to listen on (`HOST`, default 127.0.0.1).
    pub host: IpAddr,
    /// Port to listen on (`PORT`, default 3000; 0 picks a free one).
    pub port: u16,
    /// What every request goes through:
    /// - `RATE_LIMIT_GLOBAL` (default `100/15m`, `off` disables), `RATE_LIMIT_PAYMENTS`
    ///   (default `10/1m`, `off` disables), `RATE_LIMIT_FAIL_CLOSED` (default false: fail open);
    /// - `TRUST_PROXY`: trusted proxy hops for `X-Forwarded-For` (false, true = 1, or a number);
    /// - `CORS_ORIGIN`: browser origins allowed (comma-separated, or `*`);
    /// - `REQUEST_TIMEOUT` (default 30s, 5s to 1h).
    pub http: HttpConfig,
    /// How connections are served:
    /// - `HEADER_READ_TIMEOUT`: how long a client may take to send a request head, and the
    ///   longest a keep-alive connection stays idle (default 10s, 1s to 10m);
    /// - `MAX_CONNECTIONS`: open client connections at most (default 1000, 1 to 1,000,000);
    /// - `SHUTDOWN_TIMEOUT`: how long shutdown waits for in-flight work (default 30s), the
    ///   drain of requests and then of the workers.
    pub serve: ServeConfig,
}

impl ServerSettings {
    fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let host = match vars.get("HOST") {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(v) => v
                .parse()
                .map_err(|_| bad("HOST", format!("must be an IP address (got {v:?})")))?,
        };
        let port = match vars.get("PORT") {
            None => 3000,
            Some(v) => v
                .parse()
                .map_err(|_| bad("PORT", format!("must be a port number 0-65535 (got {v:?})")))?,
        };
        Ok(Self {
            host,
            port,
            http: http_config(vars)?,
            serve: serve_config(vars)?,
        })
    }

    /// The address to listen on.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// `SHUTDOWN_TIMEOUT`: how long shutdown waits for in-flight work.
    pub fn shutdown_timeout(&self) -> Duration {
        self.serve.drain_timeout
    }
}

fn http_config(vars: &Vars) -> Result<HttpConfig, ConfigError> {
    Ok(HttpConfig {
        global_limit: vars.limit("RATE_LIMIT_GLOBAL", "global", "100/15m")?,
        payments_limit: vars.limit("RATE_LIMIT_PAYMENTS", "payments", "10/1m")?,
        rate_limit_fail_closed: vars.boolean("RATE_LIMIT_FAIL_CLOSED", false)?,
        trusted_proxy_hops: trusted_proxy_hops(vars)?,
        cors: cors(vars)?,
        // Longer than the bound on an accepted payment's enqueue, so a stalled queue never
        // turns an accepted payment into a timeout.
        request_timeout: vars.duration("REQUEST_TIMEOUT", 30 * SECOND, (5 * SECOND, HOUR))?,
    })
}

fn serve_config(vars: &Vars) -> Result<ServeConfig, ConfigError> {
    Ok(ServeConfig {
        header_read_timeout: vars.duration(
            "HEADER_READ_TIMEOUT",
            10 * SECOND,
            (SECOND, 10 * MINUTE),
        )?,
        max_connections: vars.count("MAX_CONNECTIONS", 1000, 1..=1_000_000)? as usize,
        drain_timeout: vars.duration("SHUTDOWN_TIMEOUT", 30 * SECOND, (SECOND, HOUR))?,
    })
}

/// `TRUST_PROXY`: false (the default), true (one hop) or a hop count up to 16.
fn trusted_proxy_hops(vars: &Vars) -> Result<usize, ConfigError> {
    match vars.get("TRUST_PROXY").as_deref() {
        None => Ok(0),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(0),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(1),
        Some(v) => v.parse::<usize>().ok().filter(|n| *n <= 16).ok_or_else(|| {
            bad(
                "TRUST_PROXY",
                format!("must be true, false or a hop count (got {v:?})"),
            )
        }),
    }
}

/// `CORS_ORIGIN`: unset disables CORS; `*` allows any origin; else comma-separated origins.
fn cors(vars: &Vars) -> Result<Cors, ConfigError> {
    match vars.get("CORS_ORIGIN") {
        None => Ok(Cors::Disabled),
        Some(v) if v == "*" => Ok(Cors::Any),
        Some(v) => Ok(Cors::Origins(
            v.split(',')
                .map(|o| {
                    HeaderValue::from_str(o.trim())
                        .map_err(|_| bad("CORS_ORIGIN", format!("has an invalid origin {o:?}")))
                })
                .collect::<Result<_, _>>()?,
        )),
    }
}

/// PostgreSQL, the store of record.
#[derive(Debug)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`; unset runs on the in-memory store.
    pub url: Option<SecretString>,
    /// Most PostgreSQL connections (`DATABASE_POOL_SIZE`, default 10).
    pub pool_size: u32,
    /// How long a request waits for a pooled connection before it is 503
    /// (`DATABASE_ACQUIRE_TIMEOUT`, default 2s).
    pub acquire_timeout: Duration,
    /// PostgreSQL `statement_timeout` (`DATABASE_STATEMENT_TIMEOUT`, default 5s).
    pub statement_timeout: Duration,
    /// Writer tasks that group-commit concurrent idempotency claims and payment inserts, each
    /// kind on its own (`DATABASE_GROUP_WRITERS`, default 1; 0 writes each request alone).
    pub group_writers: usize,
    /// Apply pending migrations at start-up (`MIGRATE`, default true).
    pub migrate: bool,
    /// PostgreSQL as the schema's owner, for the migrations only (`DATABASE_MIGRATE_URL`);
    /// unset migrates with `DATABASE_URL`. With it, `DATABASE_URL` can be a login role in
    /// `atomic_server`, which owns nothing and cannot lift the database's guards.
    pub migrate_url: Option<SecretString>,
}

impl DatabaseSettings {
    fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            url: vars.secret("DATABASE_URL"),
            pool_size: vars.count("DATABASE_POOL_SIZE", 10, 1..=1000)?,
            acquire_timeout: vars.duration(
                "DATABASE_ACQUIRE_TIMEOUT",
                2 * SECOND,
                (MILLISECOND, MINUTE),
            )?,
            statement_timeout: vars.duration(
                "DATABASE_STATEMENT_TIMEOUT",
                5 * SECOND,
                (MILLISECOND, HOUR),
            )?,
            group_writers: vars.count(
                "DATABASE_GROUP_WRITERS",
                u32::try_from(PgConfig::default_writers()).unwrap_or(1),
                0..=64,
            )? as usize,
            migrate: vars.boolean("MIGRATE", true)?,
            migrate_url: vars.secret("DATABASE_MIGRATE_URL"),
        })
    }

    /// The server's pool on `DATABASE_URL`, when it is set.
    pub fn pool(&self) -> Option<PgConfig> {
        let url = self.url.as_ref()?;
        Some(PgConfig {
            max_connections: self.pool_size,
            acquire_timeout: self.acquire_timeout,
            statement_timeout: self.statement_timeout,
            // One call may run a few statements; it is bounded as a whole too.
            call_timeout: self.statement_timeout.saturating_mul(2),
            group_commit_writers: self.group_writers,
            ..PgConfig::new(url.expose_secret())
        })
    }

    /// One connection as the schema's owner (`DATABASE_MIGRATE_URL`), bounded like `pool`.
    pub fn owner(&self, pool: &PgConfig) -> Option<PgConfig> {
        let url = self.migrate_url.as_ref()?;
        Some(PgConfig {
            url: url.expose_secret().to_owned(),
            max_connections: 1,
            ..pool.clone()
        })
    }

    /// One connection on `DATABASE_URL` without the request path's statement timeout, for a
    /// job that reads every row (the audit).
    pub fn unbounded(&self) -> Option<PgConfig> {
        let url = self.url.as_ref()?;
        let unbounded = 24 * HOUR;
        Some(PgConfig {
            max_connections: 1,
            acquire_timeout: self.acquire_timeout,
            statement_timeout: unbounded,
            call_timeout: unbounded,
            ..PgConfig::new(url.expose_secret())
        })
    }
}

/// Redis, the job queue and the rate limiter.
#[derive(Debug)]
pub struct RedisSettings {
    /// `REDIS_URL`; unset runs on the in-memory queue and limiter.
    pub url: Option<SecretString>,
    /// The prefix of every Redis key (`REDIS_KEY_PREFIX`, default `atomic`).
    pub key_prefix: String,
    /// The longest wait for one Redis reply (`REDIS_RESPONSE_TIMEOUT`, default 5s, 100ms to
    /// 1m): what a stalled Redis can add to a request, per Redis call on its path.
    pub response_timeout: Duration,
}

impl RedisSettings {
    fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let key_prefix = match vars.get("REDIS_KEY_PREFIX") {
            None => "atomic".to_owned(),
            Some(v)
                if v.len() <= 64
                    && v.bytes()
                        .all(|b| b.is_ascii_graphic() && !b"{}".contains(&b)) =>
            {
                v
            }
            Some(v) => {
                return Err(bad(
                    "REDIS_KEY_PREFIX",
                    format!("must be 1-64 printable characters without braces (got {v:?})"),
                ));
            }
        };
        Ok(Self {
            url: vars.secret("REDIS_URL"),
            key_prefix,
            response_timeout: vars.duration(
                "REDIS_RESPONSE_TIMEOUT",
                5 * SECOND,
                (100 * MILLISECOND, MINUTE),
            )?,
        })
    }

    /// The adapter's configuration, when `REDIS_URL` is set.
    pub fn config(&self) -> Option<RedisConfig> {
        let defaults = RedisConfig::new(self.url.as_ref()?.expose_secret());
        // A blocking read must end before the response timeout it runs under.
        let block = defaults.block.min(self.response_timeout / 2);
        let connect = defaults.connect_timeout;
        Some(defaults.with_prefix(&self.key_prefix).with_timeouts(
            block,
            self.response_timeout,
            connect,
        ))
    }
}

/// The core: currencies, the platform key, and how long things are kept.
#[derive(Debug)]
pub struct CoreSettings {
    /// The platform key's SHA-256 (`MERCHANT_API_KEY_HASH`); unset mints one at start-up.
    pub platform_key_hash: Option<KeyHash>,
    /// Accepted currencies (`SUPPORTED_CURRENCIES`, default `USD,EUR,INR`).
    pub currencies: Currencies,
    /// How long an authenticated merchant key is trusted without a database lookup
    /// (`API_KEY_CACHE_TTL`, default 1s; `0` looks every key up). Revocation through this
    /// process is immediate; through another process it takes effect within this time.
    pub api_key_cache_ttl: Duration,
    /// How long idempotency keys are kept (`IDEMPOTENCY_TTL`, default 24h, at most 30d).
    pub idempotency_ttl: Duration,
    /// How long an authorization waits for its capture before the sweep cancels it
    /// (`AUTHORIZATION_TTL`, default 7d, at most 365d).
    pub authorization_ttl: Duration,
}

impl CoreSettings {
    fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let platform_key_hash = vars
            .get("MERCHANT_API_KEY_HASH")
            .map(|v| KeyHash::from_hex(&v).map_err(|e| bad("MERCHANT_API_KEY_HASH", e.to_string())))
            .transpose()?;
        let currencies = match vars.get("SUPPORTED_CURRENCIES") {
            None => Currencies::default(),
            Some(v) => Currencies::parse_list(&v)
                .map_err(|e| bad("SUPPORTED_CURRENCIES", format!("{e} (got {v:?})")))?,
        };
        Ok(Self {
            platform_key_hash,
            currencies,
            api_key_cache_ttl: match vars.get("API_KEY_CACHE_TTL").as_deref() {
                Some("0") | Some("off") => Duration::ZERO,
                _ => vars.duration("API_KEY_CACHE_TTL", SECOND, (MILLISECOND, MINUTE))?,
            },
            idempotency_ttl: vars.duration("IDEMPOTENCY_TTL", DAY, (SECOND, 30 * DAY))?,
            authorization_ttl: vars.duration("AUTHORIZATION_TTL", 7 * DAY, (SECOND, 365 * DAY))?,
        })
    }
}

fn worker_config(vars: &Vars) -> Result<WorkerConfig, ConfigError> {
    Ok(WorkerConfig {
        concurrency: vars.count("WORKER_CONCURRENCY", 4, 1..=1024)? as usize,
        batch: vars.count("WORKER_BATCH", 64, 1..=10_000)? as usize,
        lease: vars.duration("WORKER_LEASE", 30 * SECOND, (SECOND, HOUR))?,
        ..WorkerConfig::default()
    })
}

fn sweep_config(vars: &Vars) -> Result<SweepConfig, ConfigError> {
    Ok(SweepConfig {
        interval: vars.duration("SWEEP_INTERVAL", 10 * SECOND, (100 * MILLISECOND, HOUR))?,
        stale_after: vars.duration("SWEEP_STALE_AFTER", 30 * SECOND, (SECOND, DAY))?,
        ..SweepConfig::default()
    })
}

/// The webhook settings.
#[derive(Debug)]
pub struct WebhookSettings {
    /// Let endpoints resolve to loopback, private and other special-purpose addresses
    /// (`WEBHOOK_ALLOW_PRIVATE`, default false): for tests and on-premise receivers.
    pub allow_private: bool,
    /// How long one attempt may take, connect to last byte (`WEBHOOK_TIMEOUT`, default 10s,
    /// 100ms to 5m).
    pub timeout: Duration,
    /// Delays between a delivery's attempts (`WEBHOOK_RETRY_SCHEDULE`, default
    /// `5s,5m,30m,2h,5h,10h,10h`).
    pub retry_schedule: RetrySchedule,
    /// Attempts in flight at once in this process (`WEBHOOK_CONCURRENCY`, default 256).
    pub concurrency: usize,
    /// How long events (and their deliveries) are kept (`EVENT_RETENTION`, default 30d,
    /// 1h to 10 years).
    pub event_retention: Duration,
}

impl WebhookSettings {
    fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            allow_private: vars.boolean("WEBHOOK_ALLOW_PRIVATE", false)?,
            timeout: vars.duration(
                "WEBHOOK_TIMEOUT",
                10 * SECOND,
                (100 * MILLISECOND, 5 * MINUTE),
            )?,
            retry_schedule: match vars.get("WEBHOOK_RETRY_SCHEDULE") {
                None => RetrySchedule::default(),
                Some(v) => RetrySchedule::parse(&v)
                    .map_err(|e| bad("WEBHOOK_RETRY_SCHEDULE", format!("{e} (got {v:?})")))?,
            },
            concurrency: vars.count("WEBHOOK_CONCURRENCY", 256, 1..=4096)? as usize,
            event_retention: vars.duration("EVENT_RETENTION", 30 * DAY, (HOUR, 3650 * DAY))?,
        })
    }

    /// The webhook dispatcher's configuration.
    pub fn dispatcher(&self) -> DispatcherConfig {
        DispatcherConfig {
            concurrency: self.concurrency,
            // A claim outlives the longest attempt, so no attempt's delivery is claimed
            // twice while it runs.
            lease: self.timeout.saturating_mul(2) + 5 * SECOND,
            schedule: self.retry_schedule.clone(),
            ..DispatcherConfig::default()
        }
    }
}

/// Logging.
#[derive(Debug)]
pub struct LogSettings {
    /// Log filter (`RUST_LOG`, else `LOG_LEVEL`, default `info`).
    pub filter: String,
    /// Log format (`LOG_FORMAT`: `pretty` or `json`).
    pub format: LogFormat,
}

impl LogSettings {
    fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let format = match vars.get("LOG_FORMAT").as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(v) => {
                return Err(bad(
                    "LOG_FORMAT",
                    format!("must be pretty or json (got {v:?})"),
                ));
            }
        };
        let filter = vars
            .get("RUST_LOG")
            .or_else(|| vars.get("LOG_LEVEL"))
            .unwrap_or_else(|| "info".to_owned());
        Ok(Self { filter, format })
    }
}

/// The metrics listener.
#[derive(Debug)]
pub struct MetricsSettings {
    /// Where `GET /metrics` is served, on a listener of its own (`METRICS_ADDR`, default
    /// `127.0.0.1:9464`; `off` serves none and installs no recorder).
    pub addr: Option<SocketAddr>,
}

impl MetricsSettings {
    fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let addr = match vars.get("METRICS_ADDR").as_deref() {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            Some("off") => None,
            Some(v) => Some(v.parse().map_err(|_| {
                bad(
                    "METRICS_ADDR",
                    format!("must be an address and port like 127.0.0.1:9464, or off (got {v:?})"),
                )
            })?),
        };
        Ok(Self { addr })
    }
}

/// Fault-test builds only (`failpoint::ENABLED`); every other build leaves these empty.
#[derive(Debug)]
pub struct FaultSettings {
    /// Failpoints to arm (`ATOMIC_FAILPOINTS`).
    pub failpoints: Failpoints,
    /// This process's clock set off on purpose (`ATOMIC_CLOCK_SKEW`).
    pub clock_skew: Option<ClockSkew>,
}

impl FaultSettings {
    /// `ATOMIC_FAILPOINTS` and `ATOMIC_CLOCK_SKEW`, read only by builds that carry failpoints
    /// (the fault tests'); every other build ignores them.
    fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        if !failpoint::ENABLED {
            return Ok(Self {
                failpoints: Failpoints::default(),
                clock_skew: None,
            });
        }
        let failpoints = match vars.get("ATOMIC_FAILPOINTS") {
            None => Failpoints::default(),
            Some(v) => {
                Failpoints::parse(&v).map_err(|e| bad("ATOMIC_FAILPOINTS", e.to_string()))?
            }
        };
        let clock_skew = vars
            .get("ATOMIC_CLOCK_SKEW")
            .map(|v| ClockSkew::parse(&v).map_err(|e| bad("ATOMIC_CLOCK_SKEW", e.to_string())))
            .transpose()?;
        Ok(Self {
            failpoints,
            clock_skew,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn webhook_settings_parse_and_refuse_bad_values() {
        let s = parse(&[
            ("WEBHOOK_ALLOW_PRIVATE", "true"),
            ("WEBHOOK_TIMEOUT", "2s"),
            ("WEBHOOK_RETRY_SCHEDULE", "1s,1m"),
            ("EVENT_RETENTION", "2d"),
        ])
        .unwrap();
        assert!(s.webhooks.allow_private);
        assert_eq!(s.webhooks.timeout, Duration::from_secs(2));
        assert_eq!(s.webhooks.retry_schedule.max_attempts(), 3);
        assert_eq!(s.webhooks.event_retention, Duration::from_secs(2 * 86_400));
        for (var, value) in [
            ("WEBHOOK_ALLOW_PRIVATE", "yes"),
            ("WEBHOOK_TIMEOUT", "0s"),
            ("WEBHOOK_RETRY_SCHEDULE", "5s,soon"),
            ("EVENT_RETENTION", "1m"),
        ] {
            let error = parse(&[(var, value)]).unwrap_err().to_string();
            assert!(error.contains(var), "{error}");
        }
    }

    #[test]
    fn defaults_match_api_md() {
        let s = parse(&[]).unwrap();
        assert_eq!(
            (s.server.host.to_string(), s.server.port),
            ("127.0.0.1".to_owned(), 3000)
        );
        assert!(
            s.database.url.is_none() && s.redis.url.is_none() && s.core.platform_key_hash.is_none()
        );
        let global = s.server.http.global_limit.unwrap();
        assert_eq!(
            (global.limit, global.window),
            (100, Duration::from_secs(900))
        );
        let payments = s.server.http.payments_limit.unwrap();
        assert_eq!(
            (payments.limit, payments.window),
            (10, Duration::from_secs(60))
        );
        assert_eq!(s.core.idempotency_ttl, Duration::from_secs(86_400));
        assert_eq!(s.core.authorization_ttl, Duration::from_secs(7 * 86_400));
        let w = &s.webhooks;
        assert!(!w.allow_private);
        assert_eq!(w.timeout, Duration::from_secs(10));
        assert_eq!(w.retry_schedule, RetrySchedule::default());
        assert_eq!(w.event_retention, Duration::from_secs(30 * 86_400));
        assert!(!s.server.http.rate_limit_fail_closed);
        assert_eq!(s.server.http.trusted_proxy_hops, 0);
        assert_eq!(s.core.currencies.to_string(), "USD,EUR,INR");
        assert_eq!(s.database.pool_size, 10);
        assert_eq!(s.database.group_writers, 1);
        assert_eq!(s.worker.batch, 64);
        assert_eq!(s.role, Role::Both);
        assert_eq!(s.core.api_key_cache_ttl, Duration::from_secs(1));
        assert_eq!(s.database.acquire_timeout, Duration::from_secs(2));
        assert_eq!(s.database.statement_timeout, Duration::from_secs(5));
        assert!(s.database.migrate);
        assert!(s.database.migrate_url.is_none());
        assert_eq!(s.metrics.addr, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(
            (s.worker.lease, s.sweep.interval, s.sweep.stale_after),
            (
                Duration::from_secs(30),
                Duration::from_secs(10),
                Duration::from_secs(30)
            )
        );
    }

    #[test]
    fn parses_every_variable() {
        let s = parse(&[
            ("PORT", "0"),
            ("HOST", "0.0.0.0"),
            ("MERCHANT_API_KEY_HASH", &"AB".repeat(32)),
            ("RATE_LIMIT_GLOBAL", "off"),
            ("RATE_LIMIT_PAYMENTS", "5/30s"),
            ("IDEMPOTENCY_TTL", "2h"),
            ("TRUST_PROXY", "true"),
            ("CORS_ORIGIN", "https://a.example, https://b.example"),
            ("LOG_FORMAT", "json"),
            ("LOG_LEVEL", "debug"),
            ("WORKER_CONCURRENCY", "8"),
            ("RATE_LIMIT_FAIL_CLOSED", "true"),
            ("DATABASE_POOL_SIZE", "32"),
            ("DATABASE_GROUP_WRITERS", "0"),
            ("DATABASE_ACQUIRE_TIMEOUT", "500ms"),
            ("DATABASE_STATEMENT_TIMEOUT", "2s"),
            ("MIGRATE", "false"),
            ("DATABASE_MIGRATE_URL", "postgres://owner@db/atomic"),
            ("REDIS_KEY_PREFIX", "shop-eu"),
            ("WORKER_LEASE", "2s"),
            ("WORKER_BATCH", "1"),
            ("ROLE", "worker"),
            ("DATABASE_URL", "postgres://atomic@db/atomic"),
            ("REDIS_URL", "redis://cache"),
            ("API_KEY_CACHE_TTL", "0"),
            ("SWEEP_INTERVAL", "500ms"),
            ("SWEEP_STALE_AFTER", "3s"),
            ("METRICS_ADDR", "[::1]:9100"),
        ])
        .unwrap();
        assert_eq!(s.metrics.addr, Some("[::1]:9100".parse().unwrap()));
        assert_eq!(
            parse(&[("METRICS_ADDR", "off")]).unwrap().metrics.addr,
            None
        );
        assert_eq!(s.server.port, 0);
        assert!(s.core.platform_key_hash.is_some());
        assert!(s.server.http.global_limit.is_none());
        assert_eq!(
            s.server.http.payments_limit.unwrap().window,
            Duration::from_secs(30)
        );
        assert_eq!(s.core.idempotency_ttl, Duration::from_secs(7200));
        assert_eq!(s.server.http.trusted_proxy_hops, 1);
        assert!(matches!(s.server.http.cors, Cors::Origins(ref o) if o.len() == 2));
        assert_eq!(
            (s.log.format, s.log.filter.as_str(), s.worker.concurrency),
            (LogFormat::Json, "debug", 8)
        );
        assert!(s.server.http.rate_limit_fail_closed);
        assert_eq!(s.database.pool_size, 32);
        assert_eq!(s.database.group_writers, 0);
        assert_eq!(s.database.acquire_timeout, Duration::from_millis(500));
        assert_eq!(s.database.statement_timeout, Duration::from_secs(2));
        assert!(!s.database.migrate);
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&s.database.migrate_url.unwrap()),
            "postgres://owner@db/atomic"
        );
        assert_eq!(s.redis.key_prefix, "shop-eu");
        assert_eq!(s.worker.batch, 1);
        assert_eq!(s.role, Role::Worker);
        assert!(s.core.api_key_cache_ttl.is_zero());
        assert_eq!(
            (s.worker.lease, s.sweep.interval, s.sweep.stale_after),
            (
                Duration::from_secs(2),
                Duration::from_millis(500),
                Duration::from_secs(3)
            )
        );
    }

    #[test]
    fn fault_settings_are_read_only_by_builds_with_failpoints() {
        let s = parse(&[
            ("ATOMIC_FAILPOINTS", "worker.after_claim@2"),
            ("ATOMIC_CLOCK_SKEW", "-10m"),
        ])
        .unwrap();
        // These tests link atomic-core with its `failpoints` feature (a dev-dependency).
        const { assert!(failpoint::ENABLED) };
        assert_eq!(s.faults.failpoints.points().len(), 1);
        assert_eq!(
            s.faults.clock_skew,
            Some(ClockSkew {
                ahead: false,
                by: Duration::from_secs(600)
            })
        );
        for (var, value) in [
            ("ATOMIC_FAILPOINTS", "worker.after_lunch"),
            ("ATOMIC_CLOCK_SKEW", "10m"),
        ] {
            let message = parse(&[(var, value)]).unwrap_err().to_string();
            assert!(message.contains(var), "{message}");
        }
    }

    #[test]
    fn a_split_role_without_both_shared_stores_is_refused() {
        let db = ("DATABASE_URL", "postgres://atomic@db/atomic");
        let redis = ("REDIS_URL", "redis://cache");
        for role in ["api", "worker"] {
            for (vars, missing) in [
                (vec![], "DATABASE_URL and REDIS_URL"),
                (vec![db], "REDIS_URL"),
                (vec![redis], "DATABASE_URL"),
            ] {
                let mut vars = vars;
                vars.push(("ROLE", role));
                let message = parse(&vars).unwrap_err().to_string();
                assert!(
                    message.starts_with(&format!("configuration: ROLE {role} needs {missing}:"))
                        && !message.contains('\n'),
                    "{message}"
                );
            }
            assert!(parse(&[db, redis, ("ROLE", role)]).is_ok());
        }
        assert!(
            parse(&[("ROLE", "both")]).is_ok(),
            "both runs on memory alone"
        );
    }

    #[test]
    fn library_configs_are_built_with_the_bounds_they_had() {
        let s = parse(&[
            ("DATABASE_URL", "postgres://atomic@db/atomic"),
            ("DATABASE_MIGRATE_URL", "postgres://owner@db/atomic"),
            ("DATABASE_STATEMENT_TIMEOUT", "3s"),
            ("REDIS_URL", "redis://cache"),
            ("REDIS_RESPONSE_TIMEOUT", "1s"),
            ("REQUEST_TIMEOUT", "10s"),
            ("WEBHOOK_TIMEOUT", "4s"),
            ("SHUTDOWN_TIMEOUT", "7s"),
        ])
        .unwrap();
        let pool = s.database.pool().unwrap();
        assert_eq!(pool.call_timeout, Duration::from_secs(6));
        let owner = s.database.owner(&pool).unwrap();
        assert_eq!(
            (owner.url.as_str(), owner.max_connections),
            ("postgres://owner@db/atomic", 1)
        );
        assert_eq!(s.database.unbounded().unwrap().statement_timeout, 24 * HOUR);
        let redis = s.redis.config().unwrap();
        assert_eq!(
            (redis.response_timeout, redis.prefix.as_str()),
            (SECOND, "atomic")
        );
        assert!(redis.block <= Duration::from_millis(500));
        assert_eq!(s.webhooks.dispatcher().lease, Duration::from_secs(13));
        let core = s.core_config(KeyHash::from_hex(&"ab".repeat(32)).unwrap());
        assert_eq!(core.idempotency.lock_timeout, Duration::from_secs(20));
        assert_eq!(s.server.shutdown_timeout(), Duration::from_secs(7));
        let none = parse(&[]).unwrap();
        assert!(none.database.pool().is_none() && none.redis.config().is_none());
    }

    #[test]
    fn a_bad_value_names_its_variable_in_one_line() {
        for (var, value) in [
            ("PORT", "http"),
            ("HOST", "localhost:3000"),
            ("MERCHANT_API_KEY_HASH", "not-hex"),
            ("RATE_LIMIT_GLOBAL", "100 per minute"),
            ("IDEMPOTENCY_TTL", "forever"),
            ("IDEMPOTENCY_TTL", "10000000d"),
            ("REQUEST_TIMEOUT", "1s"),
            ("LOG_FORMAT", "xml"),
            ("WORKER_CONCURRENCY", "0"),
            ("TRUST_PROXY", "maybe"),
            ("SUPPORTED_CURRENCIES", "usd"),
            ("RATE_LIMIT_FAIL_CLOSED", "yes please"),
            ("DATABASE_POOL_SIZE", "0"),
            ("DATABASE_ACQUIRE_TIMEOUT", "2h"),
            ("MIGRATE", "maybe"),
            ("REDIS_KEY_PREFIX", "a{b}"),
            ("WORKER_LEASE", "0s"),
            ("WORKER_BATCH", "0"),
            ("ROLE", "scheduler"),
            ("API_KEY_CACHE_TTL", "2m"),
            ("SWEEP_INTERVAL", "10ms"),
            ("METRICS_ADDR", "9464"),
            ("METRICS_ADDR", "localhost:9464"),
        ] {
            let message = parse(&[(var, value)]).unwrap_err().to_string();
            assert!(
                message.contains(var) && !message.contains('\n'),
                "{message}"
            );
        }
        let secret = "f".repeat(63);
        assert!(
            !parse(&[("MERCHANT_API_KEY_HASH", &secret)])
                .unwrap_err()
                .to_string()
                .contains(&secret),
            "the hash is not echoed"
        );
    }
}
