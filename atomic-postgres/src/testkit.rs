//! Test support: a fresh, migrated database per test (dropped afterwards) and time travel for
//! the conformance kit. Not a stable API.
//!
//! The server is `DATABASE_URL` when set, else
//! `postgres://postgres:postgres@127.0.0.1:5432/postgres` (the repository's docker compose
//! PostgreSQL; a trust-auth server ignores the password).
//! When it does not answer, [`TestDatabase::create`] panics with one line saying how to start
//! it: the PostgreSQL tests fail, they never pass by skipping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use std::future::Future;

use async_trait::async_trait;
use atomic_core::id::AccountId;
use atomic_core::money::Amount;
use atomic_core::testkit::{StoreKit, TimeTravel};
use sqlx::Connection;

use crate::rows::micros;
use crate::{PgConfig, PgStore};

/// The server the tests use when `DATABASE_URL` is not set.
pub const DEFAULT_SERVER_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

/// How to start the machine's PostgreSQL (DEVELOPERS.md).
pub const START_HINT: &str = "start it (`docker compose up -d`, or on the team's machines \
     `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`) or set DATABASE_URL";

/// The server URL the tests use.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_SERVER_URL.to_owned())
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// `url` with its host and port replaced by `address` (to reach the server through a proxy).
pub fn with_address(url: &str, address: std::net::SocketAddr) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[authority_start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| authority_start + i);
    let host_start = url[authority_start..authority_end]
        .rfind('@')
        .map_or(authority_start, |i| authority_start + i + 1);
    format!("{}{address}{}", &url[..host_start], &url[authority_end..])
}

/// `url` with its user and password replaced (a login role made by a test).
pub fn with_user(url: &str, user: &str, password: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[authority_start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| authority_start + i);
    let host_start = url[authority_start..authority_end]
        .rfind('@')
        .map_or(authority_start, |i| authority_start + i + 1);
    format!(
        "{}{user}:{password}@{}",
        &url[..authority_start],
        &url[host_start..]
    )
}

/// The group role the migrations grant the server's privileges to (cluster-wide).
pub const SERVER_GROUP_ROLE: &str = "atomic_server";

/// A login role in [`SERVER_GROUP_ROLE`], made as an operator makes the server's (README): it
/// owns nothing and has only the group's grants. Dropped (its sessions ended) on drop.
pub struct ServerLogin {
    name: String,
    server: String,
    url: String,
}

impl ServerLogin {
    /// The test database's URL, as this role.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The role's name (`atomic_login_<uuid>`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ServerLogin {
    fn drop(&mut self) {
        let name = self.name.clone();
        as_admin(self.server.clone(), move |mut admin| async move {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            )
            .bind(&name)
            .execute(&mut admin)
            .await
            .ok()?;
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {name}")))
                .execute(&mut admin)
                .await
                .ok()?;
            admin.close().await.ok()
        });
    }
}

/// Runs `work` on an admin connection to `server` and waits for it. Drop may run inside a
/// runtime, so the async work runs on a thread (and runtime) of its own; waiting for it means
/// nothing a test made outlives its process. Failures are ignored: a clean-up is best effort,
/// and `.ci/run` clears what an interrupted run leaves.
fn as_admin<F, Fut>(server: String, work: F)
where
    F: FnOnce(sqlx::PgConnection) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<()>>,
{
    let done = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async move {
            let admin = sqlx::PgConnection::connect(&server).await.ok()?;
            work(admin).await
        })
    });
    let _ = done.join();
}

/// A database created for one test, migrated, and dropped (with its connections) on drop.
pub struct TestDatabase {
    name: String,
    server: String,
    url: String,
    store: PgStore,
}

impl TestDatabase {
    /// Creates and migrates `atomic_test_<uuid>` on the test server; a pool of at most 8.
    pub async fn create() -> Self {
        Self::create_with(|config| config.max_connections = 8).await
    }

    /// Like [`Self::create`], with the store's settings adjusted by `tune`.
    pub async fn create_with(tune: impl FnOnce(&mut PgConfig)) -> Self {
        let server = server_url();
        let mut admin = match sqlx::PgConnection::connect(&server).await {
            Ok(conn) => conn,
            Err(error) => panic!("PostgreSQL not reachable at {server} ({error}); {START_HINT}"),
        };
        let name = format!("atomic_test_{}", uuid::Uuid::now_v7().simple());
        // The name is ours (a UUID in hex): nothing to inject.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        let url = with_database(&server, &name);
        let mut config = PgConfig::new(url.clone());
        tune(&mut config);
        let store = PgStore::connect(&config)
            .await
            .expect("connect to the test database");
        // Migrated on a connection of its own, without the store's statement timeout: on a
        // loaded machine one DDL statement may take longer than a store call may.
        let mut migrator = sqlx::PgConnection::connect(&url)
            .await
            .expect("connect to the test database");
        crate::MIGRATOR
            .run(&mut migrator)
            .await
            .expect("migrate the test database");
        let _ = migrator.close().await;
        Self {
            name,
            server,
            url,
            store,
        }
    }

    /// The database's URL (for a server under test).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database server's address (host and port of the URL).
    pub fn server_address(&self) -> std::net::SocketAddr {
        use std::net::ToSocketAddrs;
        let options = self.store.pool().connect_options();
        (options.get_host(), options.get_port())
            .to_socket_addrs()
            .expect("resolve the database host")
            .next()
            .expect("the database host has an address")
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store on this database.
    pub fn store(&self) -> PgStore {
        self.store.clone()
    }

    /// Makes a login role in [`SERVER_GROUP_ROLE`] (`atomic_login_<uuid>`, with a random
    /// password), as an operator makes the server's.
    pub async fn server_login(&self) -> ServerLogin {
        let name = format!("atomic_login_{}", uuid::Uuid::now_v7().simple());
        let password = uuid::Uuid::now_v7().simple().to_string();
        let mut admin = sqlx::PgConnection::connect(&self.server)
            .await
            .expect("connect to the test server");
        // Both are ours (UUIDs in hex): nothing to inject.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE {SERVER_GROUP_ROLE}"
        )))
        .execute(&mut admin)
        .await
        .expect("create the login role");
        let _ = admin.close().await;
        let url = with_user(&self.url, &name, &password);
        ServerLogin {
            name,
            server: self.server.clone(),
            url,
        }
    }

    /// The conformance kit on this database; the database lives as long as the kit.
    pub fn kit(self) -> StoreKit {
        let store = self.store();
        Self::kit_on(self, store, None)
    }

    /// The conformance kit with every port connected as a new login role in
    /// [`SERVER_GROUP_ROLE`] (as the server connects in production); time travel stays with
    /// the owner. The database and the role live as long as the kit.
    pub async fn server_kit(self) -> StoreKit {
        let login = self.server_login().await;
        let store = Self::store_as(&login).await;
        Self::kit_on(self, store, Some(login))
    }

    /// The conformance kit with every port connected as `login` (which the caller keeps, and
    /// must outlive the kit); time travel stays with the owner.
    pub async fn kit_as(self, login: &ServerLogin) -> StoreKit {
        let store = Self::store_as(login).await;
        Self::kit_on(self, store, None)
    }

    async fn store_as(login: &ServerLogin) -> PgStore {
        let mut config = PgConfig::new(login.url());
        config.max_connections = 8;
        PgStore::connect(&config)
            .await
            .expect("connect as the server role")
    }

    fn kit_on(db: Self, store: PgStore, login: Option<ServerLogin>) -> StoreKit {
        StoreKit::new(
            Arc::new(store),
            Arc::new(PgTimeTravel { db, _login: login }),
        )
    }

    /// The conformance kit, and the drain its uncoverable-refund case needs ([`drain`] on
    /// this database as its owner).
    pub fn kit_with_drain(self) -> (StoreKit, impl Fn(AccountId, Amount) -> Drained) {
        let owner = self.store.pool().clone();
        let drainer = move |account, amount| {
            let pool = owner.clone();
            Box::pin(async move { drain(&pool, account, amount).await }) as Drained
        };
        (self.kit(), drainer)
    }
}

/// A drain under way ([`drain`]).
pub type Drained = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Takes `amount` off a merchant account's balance without a journal entry, as a debit this
/// version has no port for (a payout) would: the conformance kit's drain (TEST-MATRIX row 35).
/// Done as the owner with triggers off for the transaction, since the database otherwise
/// refuses a balance the journal does not explain (L4); the non-negative CHECK still holds.
pub async fn drain(owner: &sqlx::PgPool, account: AccountId, amount: Amount) {
    let mut tx = owner.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    let drained = sqlx::query("UPDATE accounts SET balance = balance - $2 WHERE id = $1")
        .bind(account.as_uuid())
        .bind(amount.minor_units())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(drained.rows_affected(), 1, "no account {account}");
    tx.commit().await.unwrap();
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        as_admin(self.server.clone(), move |mut admin| async move {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await
            .ok()?;
            admin.close().await.ok()
        });
    }
}

/// Time travel for a PostgreSQL store, whose clock is the database's `now()`: every stored
/// time that a decision compares with `now()` (payment leases and sweep marks, idempotency
/// locks and expiry, refund leases and sweep marks, events, endpoints and the times of their
/// deliveries) is moved back by the interval. Triggers are bypassed for this session
/// only (`session_replication_role`), since the rows are otherwise immutable.
pub struct PgTimeTravel {
    db: TestDatabase,
    /// The login role the kit's ports use, if not the owner (dropped after the database).
    _login: Option<ServerLogin>,
}

#[async_trait]
impl TimeTravel for PgTimeTravel {
    async fn advance(&self, by: Duration) {
        let mut tx = self.db.store.pool().begin().await.unwrap();
        sqlx::query("SET LOCAL session_replication_role = replica")
            .execute(&mut *tx)
            .await
            .unwrap();
        let by = micros(by);
        sqlx::query(
            "UPDATE payments SET \
             created_at = created_at - $1 * interval '1 microsecond', \
             updated_at = updated_at - $1 * interval '1 microsecond', \
             touched_at = touched_at - $1 * interval '1 microsecond', \
             lease_until = lease_until - $1 * interval '1 microsecond'",
        )
        .bind(by)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "UPDATE refunds SET \
             created_at = created_at - $1 * interval '1 microsecond', \
             updated_at = updated_at - $1 * interval '1 microsecond', \
             touched_at = touched_at - $1 * interval '1 microsecond', \
             lease_until = lease_until - $1 * interval '1 microsecond'",
        )
        .bind(by)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "UPDATE idempotency_keys SET \
             locked_at = locked_at - $1 * interval '1 microsecond', \
             expires_at = expires_at - $1 * interval '1 microsecond'",
        )
        .bind(by)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query("UPDATE events SET created_at = created_at - $1 * interval '1 microsecond'")
            .bind(by)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(
            "UPDATE webhook_endpoints SET \
             created_at = created_at - $1 * interval '1 microsecond', \
             deleted_at = deleted_at - $1 * interval '1 microsecond'",
        )
        .bind(by)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "UPDATE webhook_deliveries SET \
             created_at = created_at - $1 * interval '1 microsecond', \
             last_attempt_at = last_attempt_at - $1 * interval '1 microsecond', \
             next_attempt_at = next_attempt_at - $1 * interval '1 microsecond', \
             resume_at = resume_at - $1 * interval '1 microsecond', \
             leased_until = leased_until - $1 * interval '1 microsecond'",
        )
        .bind(by)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::{with_address, with_database, with_user};

    #[test]
    fn database_name_is_replaced_and_the_rest_kept() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }

    #[test]
    fn user_and_password_are_replaced_and_the_rest_kept() {
        assert_eq!(
            with_user("postgres://u:p@h:5432/db?sslmode=disable", "r", "s"),
            "postgres://r:s@h:5432/db?sslmode=disable"
        );
        assert_eq!(
            with_user("postgres://h/db", "r", "s"),
            "postgres://r:s@h/db"
        );
    }

    #[test]
    fn host_and_port_are_replaced_and_the_rest_kept() {
        let to = "127.0.0.1:6000".parse().unwrap();
        assert_eq!(
            with_address("postgres://u:p@h:5432/db?sslmode=disable", to),
            "postgres://u:p@127.0.0.1:6000/db?sslmode=disable"
        );
        assert_eq!(
            with_address("postgres://h/db", to),
            "postgres://127.0.0.1:6000/db"
        );
    }
}
