//! The core's conformance kit, run against Redis with real time.

mod queue {
    atomic_core::job_queue_conformance!(crate::support::queue_kit().await);
}

mod rate_limit {
    atomic_core::rate_limiter_conformance!(crate::support::limiter_kit().await);
}
