//! The Prometheus exporter: the process's metrics recorder, and `GET /metrics` (the text
//! exposition format) on a listener of its own (`METRICS_ADDR`), never on the API's port, so
//! scrapes need no API key, count against no rate limit and can be kept off a public network.
//!
//! The libraries record through the `metrics` facade ([`atomic_core::telemetry`] lists every
//! name); this module installs the one recorder they report to, sets the histograms' buckets,
//! and adds what only the server knows: the database pool's connections, read at each scrape.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use atomic_core::telemetry::{self, names};
use atomic_postgres::PgStore;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::StartError;

/// How often histograms are folded and idle data dropped, scraped or not.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Request times: 1 ms (a read from the key cache) to 30 s (the default request timeout).
const REQUEST_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// A worker's batch, claim to settlement: milliseconds when the card network answers at once,
/// up to the lease (30 s by default) when it does not.
const SETTLEMENT_SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Jobs per batch: powers of two up to past `WORKER_BATCH`'s default (64).
const BATCH_SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// The process's recorder, installed on first use; later calls (several servers in one
/// process, as tests build them) share it.
fn recorder() -> Result<PrometheusHandle, StartError> {
    static INSTALLED: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let handle = builder()
                .and_then(PrometheusBuilder::install_recorder)
                .map_err(|error| error.to_string())?;
            telemetry::describe();
            Ok(handle)
        })
        .clone()
        .map_err(StartError::Metrics)
}

fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::HTTP_REQUEST_DURATION.to_owned()),
            REQUEST_SECONDS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::SETTLEMENT_DURATION.to_owned()),
            SETTLEMENT_SECONDS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::SETTLEMENT_BATCH_SIZE.to_owned()),
            BATCH_SIZES,
        )
}

/// `GET /metrics`, bound and ready to serve.
pub(crate) struct MetricsServer {
    listener: TcpListener,
    address: SocketAddr,
    scrape: Scrape,
}

/// What a scrape reads.
#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    pool: Option<PgStore>,
}

impl Scrape {
    /// The pool gauges as they stand now, then everything in the text format.
    fn render(&self) -> String {
        if let Some(store) = &self.pool {
            let pool = store.pool();
            let idle = pool.num_idle() as f64;
            let open = f64::from(pool.size());
            metrics::gauge!(names::DB_POOL_CONNECTIONS, "state" => "idle").set(idle);
            metrics::gauge!(names::DB_POOL_CONNECTIONS, "state" => "in_use")
                .set((open - idle).max(0.0));
        }
        self.handle.render()
    }
}

impl MetricsServer {
    /// Installs the recorder and binds `addr`; a port that cannot be bound stops start-up.
    pub(crate) async fn bind(addr: SocketAddr) -> Result<Self, StartError> {
        let handle = recorder()?;
        let bind_error = |source| StartError::MetricsBind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let address = listener.local_addr().map_err(bind_error)?;
        Ok(Self {
            listener,
            address,
            scrape: Scrape { handle, pool: None },
        })
    }

    /// Reports this PostgreSQL pool's connections too.
    pub(crate) fn with_pool(mut self, store: Option<PgStore>) -> Self {
        self.scrape.pool = store;
        self
    }

    /// Where it listens (with the real port when 0 was asked for).
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves `GET /metrics` (anything else is 404) and keeps the recorder tidy, until the
    /// task is dropped or aborted.
    pub(crate) fn run(self) -> impl Future<Output = ()> + Send + 'static {
        let Self {
            listener, scrape, ..
        } = self;
        let handle = scrape.handle.clone();
        let app = Router::new()
            .route("/metrics", get(metrics))
            .with_state(scrape);
        async move {
            let upkeep = async {
                let mut every = tokio::time::interval(UPKEEP_EVERY);
                loop {
                    every.tick().await;
                    handle.run_upkeep();
                }
            };
            tokio::select! {
                served = std::future::IntoFuture::into_future(axum::serve(listener, app)) => {
                    if let Err(error) = served {
                        tracing::error!(%error, "the metrics listener stopped");
                    }
                }
                () = upkeep => {}
            }
        }
    }
}

async fn metrics(State(scrape): State<Scrape>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        scrape.render(),
    )
}
