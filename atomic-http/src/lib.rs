//! Atomic's HTTP API: an axum router serving the `API.md` contract from any set of Atomic
//! ports. Handlers stay thin (parse, call a service, render); the money rules live in
//! `atomic-core`, and this crate alone maps errors to status codes.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use atomic_core::{Ports, Services};
//! use atomic_core::service::CoreConfig;
//! use atomic_http::{AppState, HttpConfig};
//!
//! let services = Services::start(Ports::in_memory(), CoreConfig::default()).await?;
//! let app = atomic_http::router(AppState::new(services, HttpConfig::default()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

mod body;
mod deadline;
mod envelope;
mod error;
mod fields;
mod gate;
mod idempotency;
mod openapi;
mod query;
mod rate_limit;
mod request_id;
mod routes;
mod security;
mod serve;
mod telemetry;
mod views;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use atomic_core::rate_limit::RateLimitPolicy;
use atomic_core::{Services, Timestamp};
use axum::Router;
use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{HeaderValue, Request, header};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use body::BODY_LIMIT;
pub use error::ApiError;
pub use openapi::openapi;
pub use request_id::{RequestId, X_REQUEST_ID};
pub use serve::{MAX_HEAD_BYTES, ServeConfig, serve};

/// Which browser origins may call the API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Cors {
    /// No cross-origin calls (no CORS headers).
    #[default]
    Disabled,
    /// Any origin (`*`).
    Any,
    /// These origins.
    Origins(Vec<HeaderValue>),
}

/// How the HTTP layer behaves (parsed once, at start-up, by the application).
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// The `global` limiter (every protected route); `None` disables it.
    pub global_limit: Option<RateLimitPolicy>,
    /// The `payments` limiter (`POST /payments`); `None` disables it.
    pub payments_limit: Option<RateLimitPolicy>,
    /// Refuse requests (503) instead of letting them through when the limiter is unreachable.
    pub rate_limit_fail_closed: bool,
    /// Proxies in front of the server whose `X-Forwarded-For` is believed (0: none).
    pub trusted_proxy_hops: usize,
    /// Cross-origin policy.
    pub cors: Cors,
    /// A request still running after this is answered 503.
    pub request_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            global_limit: Some(RateLimitPolicy {
                name: "global".into(),
                limit: 100,
                window: Duration::from_secs(15 * 60),
            }),
            payments_limit: Some(RateLimitPolicy {
                name: "payments".into(),
                limit: 10,
                window: Duration::from_secs(60),
            }),
            rate_limit_fail_closed: false,
            trusted_proxy_hops: 0,
            cors: Cors::Disabled,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What every handler shares: the services, the configuration, and counters.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    services: Services,
    config: HttpConfig,
    limiter_failures: AtomicU64,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.0.config)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State over `services` with `config`.
    pub fn new(services: Services, config: HttpConfig) -> Self {
        Self(Arc::new(Inner {
            services,
            config,
            limiter_failures: AtomicU64::new(0),
        }))
    }

    /// The services.
    pub fn services(&self) -> &Services {
        &self.0.services
    }

    /// The configuration.
    pub fn config(&self) -> &HttpConfig {
        &self.0.config
    }

    /// Requests let through because the rate limiter could not be reached.
    pub fn limiter_failures(&self) -> u64 {
        self.0.limiter_failures.load(Ordering::Relaxed)
    }

    pub(crate) fn record_limiter_failure(&self) -> u64 {
        self.0.limiter_failures.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.0.services.ports().clock.now()
    }
}

/// The API: every route of API.md behind its middleware (request id, sensitive headers,
/// tracing, error envelope, panic catcher, timeout, security headers, CORS). Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` so rate limits see client addresses.
pub fn router(state: AppState) -> Router {
    with_middleware(routes::routes(&state), state)
}

/// Only `GET /health` and `GET /health/ready`, behind the same middleware: for a process that
/// settles payments but serves no API (the server's `worker` role).
pub fn health_router(state: AppState) -> Router {
    with_middleware(
        routes::health_routes().fallback(|| async { ApiError::NotFound }),
        state,
    )
}

fn with_middleware(routes: Router<AppState>, state: AppState) -> Router {
    let timeout = state.config().request_timeout;
    let cors = security::cors(&state.config().cors);
    routes.with_state(state.clone()).layer(
        ServiceBuilder::new()
            .layer(from_fn(request_id::request_id))
            .layer(from_fn(telemetry::record))
            .layer(SetSensitiveRequestHeadersLayer::new([
                header::AUTHORIZATION,
            ]))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_response(DefaultOnResponse::new().level(Level::INFO)),
            )
            .layer(from_fn_with_state(state, envelope::render_errors))
            .layer(CatchPanicLayer::custom(panic_response))
            .layer(from_fn_with_state(timeout, deadline::deadline))
            .layer(from_fn(security::headers))
            .option_layer(cors),
    )
}

/// The span of one request: method, route and request id. The route is the matched template
/// (`/api/v1/payments/{id}`), never the raw path or query string: a careless client may put a
/// key in either, and what it sent must not reach the logs. A request no route matched logs
/// no path at all.
fn request_span(request: &Request<Body>) -> tracing::Span {
    let id = request
        .extensions()
        .get::<RequestId>()
        .map(|r| r.as_str().to_owned())
        .unwrap_or_default();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("(no route)", MatchedPath::as_str);
    tracing::info_span!("request", method = %request.method(), route = %route, request_id = %id)
}

fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Internal(atomic_core::Error::backend("a request handler panicked")).into_response()
}

/// The README's Rust examples, compiled as doc tests so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
