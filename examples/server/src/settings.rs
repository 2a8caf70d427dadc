//! The server's configuration, parsed once at start-up from the environment (and a `.env`
//! file when present) into a typed [`Settings`]. Nothing reads environment variables later.
//! A bad value stops start-up with one line naming the variable and what it must be.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use atomic_core::api_key::KeyHash;
use atomic_core::failpoint::{self, ClockSkew, Failpoints};
use atomic_core::money::Currencies;
use atomic_core::rate_limit::RateLimitPolicy;
use atomic_core::time::parse_duration;
use atomic_core::webhook::RetrySchedule;
use atomic_http::Cors;
use atomic_postgres::PgConfig;
use axum::http::HeaderValue;
use secrecy::SecretString;

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
}

/// Everything the server is configured with.
#[derive(Debug)]
pub struct Settings {
    /// What this process does (`ROLE`: `api`, `worker` or `both`, the default).
    pub role: Role,
    /// Address to listen on (`HOST`, default 127.0.0.1).
    pub host: IpAddr,
    /// Port to listen on (`PORT`, default 3000; 0 picks a free one).
    pub port: u16,
    /// PostgreSQL (`DATABASE_URL`); unset runs on the in-memory store.
    pub database_url: Option<SecretString>,
    /// Most PostgreSQL connections (`DATABASE_POOL_SIZE`, default 10).
    pub database_pool_size: u32,
    /// How long a request waits for a pooled connection before it is 503
    /// (`DATABASE_ACQUIRE_TIMEOUT`, default 2s).
    pub database_acquire_timeout: Duration,
    /// PostgreSQL `statement_timeout` (`DATABASE_STATEMENT_TIMEOUT`, default 5s).
    pub database_statement_timeout: Duration,
    /// Writer tasks that group-commit concurrent idempotency claims and payment inserts, each
    /// kind on its own (`DATABASE_GROUP_WRITERS`, default 1; 0 writes each request alone).
    pub database_group_writers: usize,
    /// Apply pending migrations at start-up (`MIGRATE`, default true).
    pub migrate: bool,
    /// PostgreSQL as the schema's owner, for the migrations only (`DATABASE_MIGRATE_URL`);
    /// unset migrates with `DATABASE_URL`. With it, `DATABASE_URL` can be a login role in
    /// `atomic_server`, which owns nothing and cannot lift the database's guards.
    pub database_migrate_url: Option<SecretString>,
    /// Redis (`REDIS_URL`); unset runs on the in-memory queue and limiter.
    pub redis_url: Option<SecretString>,
    /// The prefix of every Redis key (`REDIS_KEY_PREFIX`, default `atomic`).
    pub redis_key_prefix: String,
    /// The longest wait for one Redis reply (`REDIS_RESPONSE_TIMEOUT`, default 5s, 100ms to
    /// 1m): what a stalled Redis can add to a request, per Redis call on its path.
    pub redis_response_timeout: Duration,
    /// The platform key's SHA-256 (`MERCHANT_API_KEY_HASH`); unset mints one at start-up.
    pub platform_key_hash: Option<KeyHash>,
    /// Accepted currencies (`SUPPORTED_CURRENCIES`, default `USD,EUR,INR`).
    pub currencies: Currencies,
    /// Browser origins allowed (`CORS_ORIGIN`: comma-separated, or `*`).
    pub cors: Cors,
    /// Log filter (`RUST_LOG`, else `LOG_LEVEL`, default `info`).
    pub log_filter: String,
    /// Log format (`LOG_FORMAT`: `pretty` or `json`).
    pub log_format: LogFormat,
    /// Job loops of the in-process worker (`WORKER_CONCURRENCY`, default 4).
    pub worker_concurrency: usize,
    /// Jobs a worker loop reserves and settles together in one database transaction
    /// (`WORKER_BATCH`, default 64; 1 settles one payment per transaction).
    pub worker_batch: usize,
    /// How long a worker's claim on a payment lasts before another may take it over
    /// (`WORKER_LEASE`, default 30s).
    pub worker_lease: Duration,
    /// Time between recovery sweeps (`SWEEP_INTERVAL`, default 10s).
    pub sweep_interval: Duration,
    /// How long an unfinished payment sits untouched before the sweep enqueues it again
    /// (`SWEEP_STALE_AFTER`, default 30s).
    pub sweep_stale_after: Duration,
    /// How long an authenticated merchant key is trusted without a database lookup
    /// (`API_KEY_CACHE_TTL`, default 1s; `0` looks every key up). Revocation through this
    /// process is immediate; through another process it takes effect within this time.
    pub api_key_cache_ttl: Duration,
    /// How long idempotency keys are kept (`IDEMPOTENCY_TTL`, default 24h, at most 30d).
    pub idempotency_ttl: Duration,
    /// How long an authorization waits for its capture before the sweep cancels it
    /// (`AUTHORIZATION_TTL`, default 7d, at most 365d).
    pub authorization_ttl: Duration,
    /// `RATE_LIMIT_GLOBAL` (default `100/15m`, `off` disables).
    pub rate_limit_global: Option<RateLimitPolicy>,
    /// `RATE_LIMIT_PAYMENTS` (default `10/1m`, `off` disables).
    pub rate_limit_payments: Option<RateLimitPolicy>,
    /// `RATE_LIMIT_FAIL_CLOSED` (default false: fail open).
    pub rate_limit_fail_closed: bool,
    /// Trusted proxy hops for `X-Forwarded-For` (`TRUST_PROXY`: false, true = 1, or a number).
    pub trusted_proxy_hops: usize,
    /// `REQUEST_TIMEOUT` (default 30s, 5s to 1h).
    pub request_timeout: Duration,
    /// `SHUTDOWN_TIMEOUT`: how long shutdown waits for in-flight work (default 30s).
    pub shutdown_timeout: Duration,
    /// `HEADER_READ_TIMEOUT`: how long a client may take to send a request head, and the
    /// longest a keep-alive connection stays idle (default 10s, 1s to 10m).
    pub header_read_timeout: Duration,
    /// `MAX_CONNECTIONS`: open client connections at most (default 1000, 1 to 1,000,000).
    pub max_connections: usize,
    /// Webhooks: what deliveries may reach and how they are retried.
    pub webhooks: WebhookSettings,
    /// Where `GET /metrics` is served, on a listener of its own (`METRICS_ADDR`, default
    /// `127.0.0.1:9464`; `off` serves none and installs no recorder).
    pub metrics_addr: Option<SocketAddr>,
    /// Fault-test builds only (`failpoint::ENABLED`): failpoints to arm (`ATOMIC_FAILPOINTS`).
    pub failpoints: Failpoints,
    /// Fault-test builds only: this process's clock set off on purpose (`ATOMIC_CLOCK_SKEW`).
    pub clock_skew: Option<ClockSkew>,
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
        let var = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let duration = |name: &'static str, default: Duration, range: (Duration, Duration)| {
            let value = match var(name) {
                None => return Ok(default),
                Some(v) => parse_duration(&v).map_err(|e| bad(name, format!("{e} (got {v:?})")))?,
            };
            let (min, max) = range;
            if value < min || value > max {
                return Err(bad(
                    name,
                    format!("must be from {min:?} to {max:?} (got {value:?})"),
                ));
            }
            Ok(value)
        };
        const MILLISECOND: Duration = Duration::from_millis(1);
        const SECOND: Duration = Duration::from_secs(1);
        const MINUTE: Duration = Duration::from_secs(60);
        const HOUR: Duration = Duration::from_secs(3600);
        const DAY: Duration = Duration::from_secs(86_400);
        let boolean = |name: &'static str, default: bool| match var(name).as_deref() {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
            Some(v) => Err(bad(name, format!("must be true or false (got {v:?})"))),
        };
        let limit = |name: &'static str, policy: &str, default: &str| {
            let spec = var(name).unwrap_or_else(|| default.to_owned());
            RateLimitPolicy::parse(policy, &spec)
                .map_err(|e| bad(name, format!("{e} (got {spec:?})")))
        };

        let host = match var("HOST") {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(v) => v
                .parse()
                .map_err(|_| bad("HOST", format!("must be an IP address (got {v:?})")))?,
        };
        let port = match var("PORT") {
            None => 3000,
            Some(v) => v
                .parse()
                .map_err(|_| bad("PORT", format!("must be a port number 0-65535 (got {v:?})")))?,
        };
        let platform_key_hash = var("MERCHANT_API_KEY_HASH")
            .map(|v| KeyHash::from_hex(&v).map_err(|e| bad("MERCHANT_API_KEY_HASH", e.to_string())))
            .transpose()?;
        let currencies = match var("SUPPORTED_CURRENCIES") {
            None => Currencies::default(),
            Some(v) => Currencies::parse_list(&v)
                .map_err(|e| bad("SUPPORTED_CURRENCIES", format!("{e} (got {v:?})")))?,
        };
        let cors = match var("CORS_ORIGIN") {
            None => Cors::Disabled,
            Some(v) if v == "*" => Cors::Any,
            Some(v) => Cors::Origins(
                v.split(',')
                    .map(|o| {
                        HeaderValue::from_str(o.trim())
                            .map_err(|_| bad("CORS_ORIGIN", format!("has an invalid origin {o:?}")))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let log_format = match var("LOG_FORMAT").as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(v) => {
                return Err(bad(
                    "LOG_FORMAT",
                    format!("must be pretty or json (got {v:?})"),
                ));
            }
        };
        let count = |name: &'static str, default: u32, range: RangeInclusive<u32>| match var(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    let (min, max) = (range.start(), range.end());
                    bad(
                        name,
                        format!("must be a number from {min} to {max} (got {v:?})"),
                    )
                }),
        };
        let worker_concurrency = count("WORKER_CONCURRENCY", 4, 1..=1024)? as usize;
        let worker_batch = count("WORKER_BATCH", 64, 1..=10_000)? as usize;
        let trusted_proxy_hops = match var("TRUST_PROXY").as_deref() {
            None => 0,
            Some(v) if v.eq_ignore_ascii_case("false") => 0,
            Some(v) if v.eq_ignore_ascii_case("true") => 1,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= 16)
                .ok_or_else(|| {
                    bad(
                        "TRUST_PROXY",
                        format!("must be true, false or a hop count (got {v:?})"),
                    )
                })?,
        };
        let role = match var("ROLE").as_deref() {
            None | Some("both") => Role::Both,
            Some("api") => Role::Api,
            Some("worker") => Role::Worker,
            Some(v) => {
                return Err(bad(
                    "ROLE",
                    format!("must be api, worker or both (got {v:?})"),
                ));
            }
        };
        let metrics_addr = match var("METRICS_ADDR").as_deref() {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            Some("off") => None,
            Some(v) => Some(v.parse().map_err(|_| {
                bad(
                    "METRICS_ADDR",
                    format!("must be an address and port like 127.0.0.1:9464, or off (got {v:?})"),
                )
            })?),
        };
        let (failpoints, clock_skew) = faults(var)?;
        let settings = Self {
            metrics_addr,
            role,
            host,
            port,
            database_url: var("DATABASE_URL").map(SecretString::from),
            database_pool_size: count("DATABASE_POOL_SIZE", 10, 1..=1000)?,
            database_acquire_timeout: duration(
                "DATABASE_ACQUIRE_TIMEOUT",
                2 * SECOND,
                (MILLISECOND, MINUTE),
            )?,
            database_statement_timeout: duration(
                "DATABASE_STATEMENT_TIMEOUT",
                5 * SECOND,
                (MILLISECOND, HOUR),
            )?,
            database_group_writers: count(
                "DATABASE_GROUP_WRITERS",
                u32::try_from(PgConfig::default_writers()).unwrap_or(1),
                0..=64,
            )? as usize,
            migrate: boolean("MIGRATE", true)?,
            database_migrate_url: var("DATABASE_MIGRATE_URL").map(SecretString::from),
            redis_url: var("REDIS_URL").map(SecretString::from),
            redis_key_prefix: match var("REDIS_KEY_PREFIX") {
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
            },
            redis_response_timeout: duration(
                "REDIS_RESPONSE_TIMEOUT",
                5 * SECOND,
                (100 * MILLISECOND, MINUTE),
            )?,
            platform_key_hash,
            currencies,
            cors,
            log_filter: var("RUST_LOG")
                .or_else(|| var("LOG_LEVEL"))
                .unwrap_or_else(|| "info".to_owned()),
            log_format,
            worker_concurrency,
            worker_batch,
            worker_lease: duration("WORKER_LEASE", 30 * SECOND, (SECOND, HOUR))?,
            sweep_interval: duration("SWEEP_INTERVAL", 10 * SECOND, (100 * MILLISECOND, HOUR))?,
            sweep_stale_after: duration("SWEEP_STALE_AFTER", 30 * SECOND, (SECOND, DAY))?,
            api_key_cache_ttl: match var("API_KEY_CACHE_TTL").as_deref() {
                Some("0") | Some("off") => Duration::ZERO,
                _ => duration("API_KEY_CACHE_TTL", SECOND, (MILLISECOND, MINUTE))?,
            },
            idempotency_ttl: duration("IDEMPOTENCY_TTL", DAY, (SECOND, 30 * DAY))?,
            authorization_ttl: duration("AUTHORIZATION_TTL", 7 * DAY, (SECOND, 365 * DAY))?,
            rate_limit_global: limit("RATE_LIMIT_GLOBAL", "global", "100/15m")?,
            rate_limit_payments: limit("RATE_LIMIT_PAYMENTS", "payments", "10/1m")?,
            rate_limit_fail_closed: boolean("RATE_LIMIT_FAIL_CLOSED", false)?,
            trusted_proxy_hops,
            // Longer than the bound on an accepted payment's enqueue, so a stalled queue never
            // turns an accepted payment into a timeout.
            request_timeout: duration("REQUEST_TIMEOUT", 30 * SECOND, (5 * SECOND, HOUR))?,
            shutdown_timeout: duration("SHUTDOWN_TIMEOUT", 30 * SECOND, (SECOND, HOUR))?,
            header_read_timeout: duration(
                "HEADER_READ_TIMEOUT",
                10 * SECOND,
                (SECOND, 10 * MINUTE),
            )?,
            max_connections: count("MAX_CONNECTIONS", 1000, 1..=1_000_000)? as usize,
            webhooks: WebhookSettings {
                allow_private: boolean("WEBHOOK_ALLOW_PRIVATE", false)?,
                timeout: duration(
                    "WEBHOOK_TIMEOUT",
                    10 * SECOND,
                    (100 * MILLISECOND, 5 * MINUTE),
                )?,
                retry_schedule: match var("WEBHOOK_RETRY_SCHEDULE") {
                    None => RetrySchedule::default(),
                    Some(v) => RetrySchedule::parse(&v)
                        .map_err(|e| bad("WEBHOOK_RETRY_SCHEDULE", format!("{e} (got {v:?})")))?,
                },
                concurrency: count("WEBHOOK_CONCURRENCY", 256, 1..=4096)? as usize,
                event_retention: duration("EVENT_RETENTION", 30 * DAY, (HOUR, 3650 * DAY))?,
            },
            failpoints,
            clock_skew,
        };
        settings.check_role()?;
        Ok(settings)
    }
}

/// `ATOMIC_FAILPOINTS` and `ATOMIC_CLOCK_SKEW`, read only by builds that carry failpoints
/// (the fault tests'); every other build ignores them.
fn faults(
    var: impl Fn(&str) -> Option<String>,
) -> Result<(Failpoints, Option<ClockSkew>), ConfigError> {
    if !failpoint::ENABLED {
        return Ok((Failpoints::default(), None));
    }
    let failpoints = match var("ATOMIC_FAILPOINTS") {
        None => Failpoints::default(),
        Some(v) => Failpoints::parse(&v).map_err(|e| bad("ATOMIC_FAILPOINTS", e.to_string()))?,
    };
    let clock_skew = var("ATOMIC_CLOCK_SKEW")
        .map(|v| ClockSkew::parse(&v).map_err(|e| bad("ATOMIC_CLOCK_SKEW", e.to_string())))
        .transpose()?;
    Ok((failpoints, clock_skew))
}

impl Settings {
    /// Refuses a split role that could accept a payment nothing settles: separate processes
    /// share payments only through PostgreSQL and jobs only through Redis.
    fn check_role(&self) -> Result<(), ConfigError> {
        if self.role == Role::Both {
            return Ok(());
        }
        let missing = match (&self.database_url, &self.redis_url) {
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
        assert_eq!((s.host.to_string(), s.port), ("127.0.0.1".to_owned(), 3000));
        assert!(s.database_url.is_none() && s.redis_url.is_none() && s.platform_key_hash.is_none());
        let global = s.rate_limit_global.unwrap();
        assert_eq!(
            (global.limit, global.window),
            (100, Duration::from_secs(900))
        );
        let payments = s.rate_limit_payments.unwrap();
        assert_eq!(
            (payments.limit, payments.window),
            (10, Duration::from_secs(60))
        );
        assert_eq!(s.idempotency_ttl, Duration::from_secs(86_400));
        assert_eq!(s.authorization_ttl, Duration::from_secs(7 * 86_400));
        let w = &s.webhooks;
        assert!(!w.allow_private);
        assert_eq!(w.timeout, Duration::from_secs(10));
        assert_eq!(w.retry_schedule, RetrySchedule::default());
        assert_eq!(w.event_retention, Duration::from_secs(30 * 86_400));
        assert!(!s.rate_limit_fail_closed);
        assert_eq!(s.trusted_proxy_hops, 0);
        assert_eq!(s.currencies.to_string(), "USD,EUR,INR");
        assert_eq!(s.database_pool_size, 10);
        assert_eq!(s.database_group_writers, 1);
        assert_eq!(s.worker_batch, 64);
        assert_eq!(s.role, Role::Both);
        assert_eq!(s.api_key_cache_ttl, Duration::from_secs(1));
        assert_eq!(s.database_acquire_timeout, Duration::from_secs(2));
        assert_eq!(s.database_statement_timeout, Duration::from_secs(5));
        assert!(s.migrate);
        assert!(s.database_migrate_url.is_none());
        assert_eq!(s.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(
            (s.worker_lease, s.sweep_interval, s.sweep_stale_after),
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
        assert_eq!(s.metrics_addr, Some("[::1]:9100".parse().unwrap()));
        assert_eq!(
            parse(&[("METRICS_ADDR", "off")]).unwrap().metrics_addr,
            None
        );
        assert_eq!(s.port, 0);
        assert!(s.platform_key_hash.is_some());
        assert!(s.rate_limit_global.is_none());
        assert_eq!(
            s.rate_limit_payments.unwrap().window,
            Duration::from_secs(30)
        );
        assert_eq!(s.idempotency_ttl, Duration::from_secs(7200));
        assert_eq!(s.trusted_proxy_hops, 1);
        assert!(matches!(s.cors, Cors::Origins(ref o) if o.len() == 2));
        assert_eq!(
            (s.log_format, s.log_filter.as_str(), s.worker_concurrency),
            (LogFormat::Json, "debug", 8)
        );
        assert!(s.rate_limit_fail_closed);
        assert_eq!(s.database_pool_size, 32);
        assert_eq!(s.database_group_writers, 0);
        assert_eq!(s.database_acquire_timeout, Duration::from_millis(500));
        assert_eq!(s.database_statement_timeout, Duration::from_secs(2));
        assert!(!s.migrate);
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&s.database_migrate_url.unwrap()),
            "postgres://owner@db/atomic"
        );
        assert_eq!(s.redis_key_prefix, "shop-eu");
        assert_eq!(s.worker_batch, 1);
        assert_eq!(s.role, Role::Worker);
        assert!(s.api_key_cache_ttl.is_zero());
        assert_eq!(
            (s.worker_lease, s.sweep_interval, s.sweep_stale_after),
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
        assert_eq!(s.failpoints.points().len(), 1);
        assert_eq!(
            s.clock_skew,
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
