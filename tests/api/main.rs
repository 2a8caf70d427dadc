//! End-to-end tests of the HTTP contract (API.md): the real server, started on port 0 by
//! `spawn_app`, spoken to over a real socket.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub,
    // Each suite module loads the same test files on purpose: one suite per backend.
    clippy::duplicate_mod
)]

mod commit;
mod helpers;
mod openapi;
mod outage;
mod proxy;
mod ready_stall;
mod redis_outage;

/// The whole suite, run on one backend: every test file, with `helpers::spawn_app` starting
/// the server on that backend.
macro_rules! suite {
    ($backend:ident) => {
        mod helpers {
            pub use crate::helpers::*;

            /// A server on this suite's backend.
            pub async fn spawn_app() -> TestApp {
                spawn_on(Backend::$backend, &[]).await
            }

            /// A server on this suite's backend with these environment variables.
            pub async fn spawn_app_with(vars: &[(&str, &str)]) -> TestApp {
                spawn_on(Backend::$backend, vars).await
            }
        }
        #[path = "auth.rs"]
        mod auth;
        #[path = "capture.rs"]
        mod capture;
        #[path = "events.rs"]
        mod events;
        #[path = "filters.rs"]
        mod filters;
        #[path = "headers.rs"]
        mod headers;
        #[path = "hostile.rs"]
        mod hostile;
        #[path = "idempotency.rs"]
        mod idempotency;
        #[path = "isolation.rs"]
        mod isolation;
        #[path = "outcomes.rs"]
        mod outcomes;
        #[path = "pagination.rs"]
        mod pagination;
        #[path = "races.rs"]
        mod races;
        #[path = "rate_limit.rs"]
        mod rate_limit;
        #[path = "refunds.rs"]
        mod refunds;
        #[path = "replays.rs"]
        mod replays;
        #[path = "routes.rs"]
        mod routes;
        #[path = "smoke.rs"]
        mod smoke;
        #[path = "unicode.rs"]
        mod unicode;
        #[path = "validation.rs"]
        mod validation;
        #[path = "webhooks.rs"]
        mod webhooks;
    };
}

/// In-memory adapters (no `DATABASE_URL`, no `REDIS_URL`).
#[path = "."]
mod memory {
    suite!(Memory);
}

/// PostgreSQL as the store of record, each test on a database of its own.
#[path = "."]
mod postgres {
    suite!(Postgres);
}

/// The production shape: PostgreSQL, and Redis for the queue and the rate limiter (each test
/// under a key prefix of its own).
#[path = "."]
mod production {
    suite!(PostgresRedis);
}
