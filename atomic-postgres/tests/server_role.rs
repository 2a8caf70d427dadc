//! The server's normal work needs no more than the grants the migrations give `atomic_server`:
//! the core's conformance kit for every store port, with every port connected as a login role
//! in that group (as the server connects in production), the audit included. Each test has a
//! database and a login role of its own.

use atomic_postgres::testkit::TestDatabase;

mod ledger {
    use super::*;
    atomic_core::ledger_store_conformance!(TestDatabase::create().await.server_kit().await);
}

mod capture {
    use super::*;
    atomic_core::capture_conformance!(TestDatabase::create().await.server_kit().await);
}

mod refunds {
    use super::*;
    atomic_core::refund_conformance!(TestDatabase::create().await.server_kit().await);
}

mod lists {
    use super::*;
    atomic_core::list_conformance!(TestDatabase::create().await.server_kit().await);
}

mod idempotency {
    use super::*;
    atomic_core::idempotency_store_conformance!(TestDatabase::create().await.server_kit().await);
}

mod api_keys {
    use super::*;
    atomic_core::api_key_store_conformance!(TestDatabase::create().await.server_kit().await);
}

mod merchants {
    use super::*;
    atomic_core::merchant_store_conformance!(TestDatabase::create().await.server_kit().await);
}

mod outbox {
    use super::*;
    atomic_core::outbox_conformance!(TestDatabase::create().await.server_kit().await);
}
