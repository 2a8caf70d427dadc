//! The core's conformance kit for every store port, run against a real PostgreSQL: each test in
//! a database of its own (see `atomic_postgres::testkit`).

use atomic_postgres::testkit::TestDatabase;

mod ledger {
    use super::*;
    atomic_core::ledger_store_conformance!(TestDatabase::create().await.kit());
}

mod capture {
    use super::*;
    atomic_core::capture_conformance!(TestDatabase::create().await.kit());
}

mod refunds {
    use super::*;
    atomic_core::refund_conformance!(TestDatabase::create().await.kit());
}

mod refund_drain {
    use super::*;
    atomic_core::refund_drain_conformance!(TestDatabase::create().await.kit_with_drain());
}

mod lists {
    use super::*;
    atomic_core::list_conformance!(TestDatabase::create().await.kit());
}

mod idempotency {
    use super::*;
    atomic_core::idempotency_store_conformance!(TestDatabase::create().await.kit());
}

mod api_keys {
    use super::*;
    atomic_core::api_key_store_conformance!(TestDatabase::create().await.kit());
}

mod merchants {
    use super::*;
    atomic_core::merchant_store_conformance!(TestDatabase::create().await.kit());
}

mod outbox {
    use super::*;
    atomic_core::outbox_conformance!(TestDatabase::create().await.kit());
}

/// Group commit off: each claim and each payment insert is a statement of its own.
mod idempotency_without_group_commit {
    use super::*;
    atomic_core::idempotency_store_conformance!(
        TestDatabase::create_with(|config| config.group_commit_writers = 0)
            .await
            .kit()
    );
}

mod ledger_without_group_commit {
    use super::*;
    atomic_core::ledger_store_conformance!(
        TestDatabase::create_with(|config| config.group_commit_writers = 0)
            .await
            .kit()
    );
}
