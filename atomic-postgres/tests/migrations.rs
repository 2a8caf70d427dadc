//! Every migration is reversible: from the newest schema, each step back reverts cleanly down
//! to an empty database, and applying them all again gives a working store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use atomic_core::money::Currency;
use atomic_core::testkit::{onboard, stored_payment};
use atomic_postgres::MIGRATOR;
use atomic_postgres::testkit::TestDatabase;

async fn has_table(pool: &sqlx::PgPool, name: &str) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_migration_reverts_step_by_step_and_applies_again() {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let versions: Vec<i64> = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect();
    assert!(versions.len() >= 3, "{versions:?}");
    // Back one step at a time: each down script runs against the schema its up script made.
    for target in versions.iter().rev().skip(1) {
        MIGRATOR.undo(&pool, *target).await.unwrap();
        assert!(has_table(&pool, "payments").await);
    }
    MIGRATOR.undo(&pool, 0).await.unwrap();
    assert!(!has_table(&pool, "payments").await);
    assert!(!has_table(&pool, "ledger_entries").await);

    MIGRATOR.run(&pool).await.unwrap();
    let kit = db.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    let payment = stored_payment(&kit, &merchant, 500).await;
    assert!(
        kit.store
            .payments()
            .payment(payment.id, atomic_core::Principal::Platform)
            .await
            .unwrap()
            .is_some()
    );
}
