//! The model-based test of the money path (atomic-core's `tests/model/mod.rs`, which its
//! `tests/properties.rs` runs on the in-memory adapters) run against PostgreSQL: a `PgStore` in
//! the ports, each case on a database of its own. Two operations run here that the in-memory
//! run leaves out, so the PostgreSQL paths that only concurrency and batching reach are
//! model-checked too: workers take up to [`Postgres::BATCH`] jobs at once
//! (`begin_payments`, `begin_refunds`, `settle`: the batch SQL), and bursts of payment requests are
//! submitted concurrently (the group-commit writer puts them in one statement and one commit).
//!
//! PostgreSQL decides with its own `now()`, so the manual clock's moves are mirrored by moving
//! every stored time back (`TestDatabase::kit`'s time travel). Real time also passes while a
//! case runs, which makes the database see every deadline a little later than the model; all
//! durations are therefore [`Postgres::SCALE`]d up (the lease is 300 s, the boundaries the
//! generator aims at are 10 s apart) so that this drift, milliseconds per case, can never
//! cross one.
//!
//! `PROPTEST_CASES` (default 32) and `PROPTEST_RNG_SEED` as there.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on the unexpected

#[path = "../../atomic-core/tests/model/mod.rs"]
mod model;

use std::sync::Arc;

use atomic_core::Timestamp;
use atomic_core::testkit::StoreKit;
use atomic_core::time::ManualClock;
use atomic_postgres::testkit::TestDatabase;

/// A `PgStore` on a database of its own per case, its time moved by time travel.
struct Postgres;

impl model::Backend for Postgres {
    const CASES: u32 = 32;
    /// Each shrinking step is a case on a new database: a few are enough to simplify.
    const MAX_SHRINK_ITERS: Option<u32> = Some(64);
    const SCALE: u32 = 10;
    const BATCH: usize = 4;
    const BURSTS: bool = true;

    /// The stamps the services write (`created_at`) start at the database's time: the audit
    /// compares them with `now()`.
    fn start() -> Timestamp {
        Timestamp::now()
    }

    /// The kit owns the case's database; its time travel moves the stored times back.
    async fn store(_: Arc<ManualClock>) -> StoreKit {
        TestDatabase::create_with(|config| config.max_connections = 4)
            .await
            .kit()
    }

    /// The database's own time: its time travel ages the stored times, so the services read
    /// the present as the database does.
    fn services_clock(_: Arc<ManualClock>) -> Arc<dyn atomic_core::Clock> {
        Arc::new(atomic_core::time::SystemClock)
    }
}

/// The money path on PostgreSQL against its model: every step checked, then healed, drained
/// and audited; each case on a database of its own. The generator must reach the paths that
/// only PostgreSQL has (batches, group commits) and the main ones of the money path.
#[test]
fn money_path_on_postgresql_matches_the_model_and_keeps_the_books() {
    model::run::<Postgres>(
        "PostgreSQL",
        &[
            "claim: acquired",
            "claim: replay",
            "claim: mismatch",
            "refused: currency mismatch",
            "worker: settled SUCCESS",
            "worker: settled FAILED",
            "worker: already finished",
            "crash after claim",
            "crash after commit",
            "sweep: requeued",
            "worker: settled AUTHORIZED",
            "worker: capture settled",
            "worker: refund settled SUCCESS",
            "capture: part",
            "cancel: accepted",
            "refund: accepted",
            "refund: exceeds",
            "batch: several settled together",
            "burst: submitted together",
        ],
    );
}
