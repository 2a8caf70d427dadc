//! End-to-end tests of the HTTP contract (API.md): the real server, started on port 0 by
//! `spawn_app`, spoken to over a real socket.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

mod auth;
mod headers;
mod helpers;
mod idempotency;
mod isolation;
mod outcomes;
mod pagination;
mod rate_limit;
mod routes;
mod smoke;
mod unicode;
mod validation;
