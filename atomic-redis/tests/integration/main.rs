//! The Redis adapters against a real Redis: the core's conformance kit on the shared Redis
//! (`REDIS_URL`, default `redis://127.0.0.1:6379`; each test under its own key prefix), and the
//! failure cases (restart, flush, lost consumer, Redis down, round trips) on `redis-server`
//! children of their own. When the shared Redis is not there the tests fail, saying how to
//! start it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub
)]

mod conformance;
mod failures;
mod queue;
mod rate_limit;
mod support;
