//! The SQL floor's accept script does what the adapter's accept does: run against a migrated
//! database (as `pgbench` would, variables substituted), it takes a group of idempotency keys
//! and stores as many payments, each completing its key. A script whose payments never
//! matched their claims would insert nothing and measure a floor far too high.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use atomic_core::money::Currency;
use atomic_core::testkit::{onboard, system_account};
use atomic_postgres::floor::accept_script;
use atomic_postgres::testkit::TestDatabase;

const GROUP: usize = 16;

#[tokio::test]
async fn the_accept_script_stores_a_group_of_payments_each_completing_its_claim() {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let kit = db.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    let funding = system_account(&kit, Currency::USD).await;
    let script = accept_script(GROUP);
    let mut lines = script.lines();
    assert_eq!(lines.next(), Some("\\set run random(1, 2000000000)"));
    // pgbench's substitution, longest names first (`:merchant` prefixes `:merchant_account`).
    let sql = lines
        .collect::<Vec<_>>()
        .join("\n")
        .replace(":merchant_account", &merchant.account.id.to_string())
        .replace(":funding_account", &funding.id.to_string())
        .replace(":merchant", &merchant.merchant.id.to_string())
        .replace(":client_id", "3")
        .replace(":run", "41");
    for statement in sql.split(";\n").filter(|s| !s.trim().is_empty()) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&pool)
            .await
            .unwrap();
    }

    let (payments, pending): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status = 'PENDING' \
         AND idempotency_key LIKE 'floor-3-41-%') FROM payments",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let completed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM idempotency_keys WHERE response_status = 202 \
         AND key LIKE 'floor-3-41-%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((payments, pending, completed), (16, 16, 16));
}
