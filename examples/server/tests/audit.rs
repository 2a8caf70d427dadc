//! `atomic-server audit`: the operator's books check. It prints every invariant with its
//! violation count from one snapshot and exits 0 only when all are 0; a database broken by hand
//! is reported row by row with exit 1.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::process::Output;

use atomic_core::money::Currency;
use atomic_core::testkit::{onboard, stored_payment};
use atomic_postgres::testkit::TestDatabase;
use common::server;

async fn audit(url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = server();
    cmd.arg("audit").args(args);
    if let Some(url) = url {
        cmd.env("DATABASE_URL", url);
    }
    cmd.output().await.unwrap()
}

/// The violation count printed for each invariant id (`L1` ...).
fn counts(output: &Output) -> BTreeMap<String, u64> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with('L'))
        .filter_map(|line| {
            let id = line.split_whitespace().next()?;
            let count = line.split_whitespace().last()?.parse().ok()?;
            Some((id.to_owned(), count))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_is_clean_on_sound_books_and_names_each_broken_invariant() {
    let db = TestDatabase::create().await;
    let (url, store) = (db.url().to_owned(), db.store());
    let kit = db.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    stored_payment(&kit, &merchant, 500).await;

    let clean = audit(Some(&url), &[]).await;
    let stdout = String::from_utf8_lossy(&clean.stdout);
    assert_eq!(clean.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("books: clean"), "{stdout}");
    let found = counts(&clean);
    for id in [
        "L1", "L2", "L3", "L4", "L5", "L6", "L7", "L8", "L9", "L10", "L12",
    ] {
        assert_eq!(found.get(id), Some(&0), "{id} in {stdout}");
    }

    // Break two invariants by hand: a cached balance off its journal (L4) and a ledger guard
    // switched off (L7). The database refuses the balance at commit
    // (`ledger_balances_follow_journal`), so this takes the owner skipping every trigger.
    let pool = store.pool();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE accounts SET balance = balance + 7 WHERE id = $1")
        .bind(merchant.account.id.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    sqlx::query("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only")
        .execute(pool)
        .await
        .unwrap();
    let broken = audit(Some(&url), &[]).await;
    let stdout = String::from_utf8_lossy(&broken.stdout);
    assert_eq!(broken.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("books: VIOLATED"), "{stdout}");
    let found = counts(&broken);
    assert_eq!((found["L4"], found["L7"]), (1, 1), "{stdout}");
    assert_eq!(
        found["L1"] + found["L2"] + found["L3"] + found["L12"],
        0,
        "{stdout}"
    );

    // The PENDING payment counts as stuck once the threshold is below its age.
    let stuck = audit(Some(&url), &["--stuck-after", "0"]).await;
    assert_eq!(counts(&stuck)["L12"], 1);
}

#[tokio::test]
async fn the_audit_needs_a_database_and_refuses_unknown_arguments() {
    let no_db = audit(None, &[]).await;
    assert_eq!(no_db.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&no_db.stderr);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");

    let bad = audit(None, &["--stuck-after", "soon"]).await;
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("--stuck-after") && stderr.contains("usage"),
        "{stderr}"
    );
}
