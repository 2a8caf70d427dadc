//! The SQL floor's scripts do what the adapter does. Run against a migrated database as
//! `pgbench` runs them (variables substituted, `\gset` results kept), the accept script takes a
//! group of idempotency keys and stores as many payments, each completing its key; the settle
//! script settles every pending payment once, with its posting, its balances and its event,
//! however many clients run it. A script whose statements did not match up would write nothing
//! (or be refused at commit) and measure a floor far too high.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use atomic_core::event::Event;
use atomic_core::id::PaymentId;
use atomic_core::money::Currency;
use atomic_core::principal::Principal;
use atomic_core::testkit::{assert_books_clean, onboard, system_account};
use atomic_postgres::floor::{accept_script, settle_script};
use atomic_postgres::testkit::TestDatabase;
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Column, PgPool, Postgres, Row};
use uuid::Uuid;

const GROUP: usize = 16;
/// The end of a command whose one row sets variables.
const GSET: &str = " \\gset\n";

/// One `pgbench` client: a connection of its own and its variables. It runs a script's
/// commands in order: SQL ended by `;`, or by `\gset` (the one row's columns, in text form,
/// become variables), and `\set NAME ...` for a variable the test has given.
struct Client {
    conn: PoolConnection<Postgres>,
    vars: Vec<(String, String)>,
}

impl Client {
    async fn connect(pool: &PgPool, vars: &[(&str, String)]) -> Self {
        Self {
            conn: pool.acquire().await.unwrap(),
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        }
    }

    fn set(&mut self, name: &str, value: String) {
        self.vars.retain(|(k, _)| k != name);
        self.vars.push((name.to_owned(), value));
    }

    fn get(&self, name: &str) -> &str {
        let found = self.vars.iter().find(|(k, _)| k == name);
        &found.unwrap_or_else(|| panic!("no variable {name}")).1
    }

    /// `sql` with every `:name` replaced, longest names first (`:merchant` prefixes
    /// `:merchant_account`).
    fn substitute(&self, sql: &str) -> String {
        let mut vars = self.vars.clone();
        vars.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
        vars.iter().fold(sql.to_owned(), |sql, (name, value)| {
            sql.replace(&format!(":{name}"), value)
        })
    }

    async fn run(&mut self, script: &str) {
        let mut rest = script;
        while !rest.is_empty() {
            if let Some(set) = rest.strip_prefix("\\set ") {
                let (line, next) = set.split_once('\n').unwrap();
                let name = line.split_whitespace().next().unwrap();
                self.get(name); // given by the test
                rest = next;
                continue;
            }
            let end = rest.find(";\n");
            let gset = rest.find(GSET).filter(|g| end.is_none_or(|e| *g < e));
            let (sql, gset, next) = match (gset, end) {
                (Some(g), _) => (&rest[..g], true, &rest[g + GSET.len()..]),
                (None, Some(e)) => (&rest[..e], false, &rest[e + 2..]),
                (None, None) => panic!("an unterminated command: {rest}"),
            };
            let sql = AssertSqlSafe(self.substitute(sql));
            if gset {
                let row = sqlx::raw_sql(sql).fetch_one(&mut *self.conn).await.unwrap();
                // Simple-protocol results come as text, which is what pgbench keeps.
                for (i, column) in row.columns().iter().enumerate() {
                    let text: String = row.try_get_unchecked(i).unwrap();
                    self.set(column.name(), text);
                }
            } else {
                sqlx::raw_sql(sql).execute(&mut *self.conn).await.unwrap();
            }
            rest = next;
        }
    }
}

/// The variables both scripts expect: a merchant onboarded in USD, its account, and the USD
/// system account.
async fn onboarded(kit: &atomic_core::testkit::StoreKit) -> Vec<(&'static str, String)> {
    let merchant = onboard(kit, Currency::USD).await;
    let funding = system_account(kit, Currency::USD).await;
    vec![
        ("merchant", merchant.merchant.id.to_string()),
        ("merchant_account", merchant.account.id.to_string()),
        ("funding_account", funding.id.to_string()),
    ]
}

#[tokio::test]
async fn the_accept_script_stores_a_group_of_payments_each_completing_its_claim() {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let kit = db.kit();
    let vars = onboarded(&kit).await;
    let script = accept_script(GROUP);
    assert!(script.starts_with("\\set run random(1, 2000000000)\n"));
    let mut client = Client::connect(&pool, &vars).await;
    client.set("client_id", "3".to_owned());
    client.set("run", "41".to_owned());
    client.run(&script).await;

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

/// Payments seeded by the accept script, settled in batches of `BATCH` (the last one short).
const SEEDED: usize = 5 * GROUP;
const BATCH: usize = 12;

/// Runs `script` as a client of its own until a run picks nothing; the payments it picked.
async fn drain(pool: &PgPool, vars: &[(&str, String)], script: &str) -> Vec<Uuid> {
    let mut client = Client::connect(pool, vars).await;
    let mut picked = Vec::new();
    for _ in 0..=SEEDED {
        client.run(script).await;
        let ids = client.get("ids").trim_matches(['{', '}']);
        if ids.is_empty() {
            return picked;
        }
        let batch: Vec<Uuid> = ids.split(',').map(|id| id.parse().unwrap()).collect();
        assert!(batch.len() <= BATCH, "{} picked", batch.len());
        picked.extend(batch);
    }
    panic!("the backlog never ran out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settle_script_settles_each_pending_payment_once_with_its_posting_and_event() {
    let db = TestDatabase::create().await;
    let pool = db.store().pool().clone();
    let kit = db.kit();
    let vars = onboarded(&kit).await;
    let mut seeder = Client::connect(&pool, &vars).await;
    seeder.set("client_id", "1".to_owned());
    for run in 0..SEEDED / GROUP {
        seeder.set("run", run.to_string());
        seeder.run(&accept_script(GROUP)).await;
    }

    // Two clients at once, as `pgbench -c 2`: each picks what the other has not.
    let script = settle_script(BATCH);
    let (first, second) = tokio::join!(drain(&pool, &vars, &script), drain(&pool, &vars, &script));
    let picked: BTreeSet<Uuid> = first.iter().chain(&second).copied().collect();
    assert_eq!(
        picked.len(),
        first.len() + second.len(),
        "a payment picked twice"
    );
    assert_eq!(picked.len(), SEEDED);

    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM payments) AS payments, \
         (SELECT count(*) FROM payments WHERE status = 'SUCCESS' AND amount_captured = amount \
             AND lease_id IS NULL) AS succeeded, \
         (SELECT sum(amount)::bigint FROM payments) AS total, \
         (SELECT count(*) FROM ledger_transactions) AS postings, \
         (SELECT count(DISTINCT payment_id) FROM ledger_transactions) AS posted, \
         (SELECT count(*) FROM ledger_entries) AS entries, \
         (SELECT count(*) FROM events WHERE type = 'payment.succeeded') AS events, \
         (SELECT count(DISTINCT payment_id) FROM events) AS told, \
         (SELECT count(*) FROM events WHERE (body::jsonb ->> 'id')::uuid = id \
             AND (body::jsonb #>> '{data,object,id}')::uuid = payment_id) AS named",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let count = |name: &str| row.get::<i64, _>(name);
    let seeded = i64::try_from(SEEDED).unwrap();
    assert_eq!(count("payments"), seeded);
    assert_eq!(count("succeeded"), seeded, "every payment SUCCESS");
    assert_eq!((count("postings"), count("posted")), (seeded, seeded));
    assert_eq!(count("entries"), 2 * seeded);
    assert_eq!((count("events"), count("told")), (seeded, seeded));
    assert_eq!(
        count("named"),
        seeded,
        "each body names its event and payment"
    );
    let balance = |id: &str| {
        sqlx::query_scalar::<_, i64>("SELECT balance FROM accounts WHERE id = $1::uuid")
            .bind(id.to_owned())
            .fetch_one(&pool)
    };
    let total = count("total");
    assert_eq!(
        balance(&vars[1].1).await.unwrap(),
        total,
        "the merchant's balance"
    );
    assert_eq!(
        balance(&vars[2].1).await.unwrap(),
        -total,
        "the system account's"
    );
    assert_books_clean(&kit).await;
    assert_body_as_the_core_renders(&kit, &pool, picked.first().copied().unwrap()).await;
}

/// The script's event body has the fields of the body the core renders for the same payment,
/// and about its size.
async fn assert_body_as_the_core_renders(
    kit: &atomic_core::testkit::StoreKit,
    pool: &PgPool,
    id: Uuid,
) {
    let payment = kit
        .store
        .payments()
        .payment(PaymentId::from(id), Principal::Platform);
    let payment = payment.await.unwrap().expect("the payment");
    let rendered = Event::of_payment(&payment)
        .expect("a SUCCESS payment's event")
        .body;
    let stored: String = sqlx::query_scalar("SELECT body FROM events WHERE payment_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
    let keys = |body: &str| {
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        let fields = |value: &serde_json::Value| -> Vec<String> {
            value.as_object().unwrap().keys().cloned().collect()
        };
        (fields(&json), fields(&json["data"]["object"]))
    };
    assert_eq!(keys(&stored), keys(&rendered));
    assert!(
        stored.len().abs_diff(rendered.len()) <= 16,
        "{} bytes, the core's {}",
        stored.len(),
        rendered.len()
    );
}
