//! [`AccountStore`] on [`PgStore`]: accounts and the entries posted to them.

use async_trait::async_trait;
use atomic_core::account::Account;
use atomic_core::id::{AccountId, EntryId};
use atomic_core::idempotency::Completion;
use atomic_core::ledger::Entry;
use atomic_core::page::{CreatedRange, Page, PageRequest};
use atomic_core::ports::AccountStore;
use atomic_core::principal::Principal;
use atomic_core::{Error, Fresh, Result};
use sqlx::{PgConnection, Row};

use crate::error::from_sqlx;
use crate::idempotency::complete_in;
use crate::rows::{self, account_columns, entry_columns, owner_uuid, viewer_merchant};
use crate::store::PgStore;

const SELECT_SYSTEM_ACCOUNT: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE currency = $1 AND kind = 'system'"
);

const SELECT_ACCOUNT: &str = concat!(
    "SELECT ",
    account_columns!(),
    " FROM accounts WHERE id = $1 AND ($2::uuid IS NULL OR owner_merchant = $2)"
);

// Whether the viewer ($2, NULL for the platform) sees account $1, and whether cursor $3 (if
// any) is one of its entries.
const ENTRIES_VISIBLE: &str = "SELECT EXISTS (SELECT 1 FROM accounts \
     WHERE id = $1 AND ($2::uuid IS NULL OR owner_merchant = $2)) AS visible, \
     ($3::uuid IS NULL OR EXISTS (SELECT 1 FROM ledger_entries \
     WHERE id = $3 AND account_id = $1)) AS cursor_ok";

// A page of an account's entries, newest first, created in [$4, $5). Run unprepared, so each
// is planned with its values: an absent bound drops out of the plan, and a range is served by
// `ledger_entries_account_created` when it is narrower than the page walk on the primary order.
const SELECT_ENTRIES: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM ledger_entries WHERE account_id = $1 AND ($2::uuid IS NULL OR id < $2) \
     AND ($4::timestamptz IS NULL OR created_at >= $4) \
     AND ($5::timestamptz IS NULL OR created_at < $5) \
     ORDER BY id DESC LIMIT $3"
);

// As SELECT_ENTRIES, for a created range that holds fewer of the account's entries than are
// newer than it (ENTRY_RANGE_IS_NARROW): the page is taken from the range itself, as
// `LIST_PAYMENTS_IN_RANGE` does for payments.
const SELECT_ENTRIES_IN_RANGE: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM ledger_entries WHERE id IN (SELECT id FROM ledger_entries \
     WHERE account_id = $1 AND ($2::uuid IS NULL OR id < $2) \
     AND ($4::timestamptz IS NULL OR created_at >= $4) \
     AND ($5::timestamptz IS NULL OR created_at < $5) \
     ORDER BY id::text COLLATE \"C\" DESC LIMIT $3) \
     ORDER BY id DESC"
);

// Whether account $1's entries in [$2, $3) are fewer than those newer than it (each counted
// to at most 1,000 on `ledger_entries_account_created`).
const ENTRY_RANGE_IS_NARROW: &str = "SELECT \
     (SELECT count(*) FROM (SELECT 1 FROM ledger_entries WHERE account_id = $1 \
         AND ($2::timestamptz IS NULL OR created_at >= $2) \
         AND ($3::timestamptz IS NULL OR created_at < $3) LIMIT 1000) i) \
     < (SELECT count(*) FROM (SELECT 1 FROM ledger_entries WHERE account_id = $1 \
         AND $3::timestamptz IS NOT NULL AND created_at >= $3 LIMIT 1000) n) AS narrow";

pub(crate) fn limit_plus_one(page_limit: usize) -> i64 {
    i64::try_from(page_limit.saturating_add(1)).unwrap_or(i64::MAX)
}

/// Stores a new account (by account creation and onboarding).
pub(crate) async fn insert_account(conn: &mut PgConnection, account: &Account) -> Result<()> {
    sqlx::query(
        "INSERT INTO accounts (id, name, currency, kind, owner_merchant, balance, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(account.id.as_uuid())
    .bind(account.name.as_str())
    .bind(account.currency.as_str())
    .bind(account.kind.as_str())
    .bind(owner_uuid(account.owner))
    .bind(account.balance.minor_units())
    .bind(account.created_at.as_datetime())
    .execute(conn)
    .await
    .map_err(from_sqlx)?;
    Ok(())
}

fn row_flag(row: &sqlx::postgres::PgRow, column: &str) -> Result<bool> {
    row.try_get(column).map_err(from_sqlx)
}

#[async_trait]
impl AccountStore for PgStore {
    async fn ping(&self) -> Result<()> {
        self.call(async {
            sqlx::query("SELECT 1")
                .execute(self.pool())
                .await
                .map_err(from_sqlx)?;
            Ok(())
        })
        .await
    }

    async fn ensure_system_account(&self, candidate: &Fresh<Account>) -> Result<Account> {
        self.call(async {
            sqlx::query(
                "INSERT INTO accounts (id, name, currency, kind, owner_merchant, balance, \
                 created_at) VALUES ($1, $2, $3, 'system', NULL, 0, $4) \
                 ON CONFLICT (currency) WHERE kind = 'system' DO NOTHING",
            )
            .bind(candidate.id.as_uuid())
            .bind(candidate.name.as_str())
            .bind(candidate.currency.as_str())
            .bind(candidate.created_at.as_datetime())
            .execute(self.pool())
            .await
            .map_err(from_sqlx)?;
            let row = sqlx::query(SELECT_SYSTEM_ACCOUNT)
                .bind(candidate.currency.as_str())
                .fetch_one(self.pool())
                .await
                .map_err(from_sqlx)?;
            rows::account(&row)
        })
        .await
    }

    async fn create_account(
        &self,
        account: &Fresh<Account>,
        completion: Option<Completion>,
    ) -> Result<()> {
        self.call(async {
            let mut tx = self.begin().await?;
            if let Some(completion) = &completion {
                complete_in(&mut tx, completion).await?;
            }
            insert_account(&mut tx, account).await?;
            tx.commit().await.map_err(from_sqlx)
        })
        .await
    }

    async fn account(&self, id: AccountId, viewer: Principal) -> Result<Option<Account>> {
        self.call(async {
            let row = sqlx::query(SELECT_ACCOUNT)
                .bind(id.as_uuid())
                .bind(viewer_merchant(viewer))
                .fetch_optional(self.pool())
                .await
                .map_err(from_sqlx)?;
            row.as_ref().map(rows::account).transpose()
        })
        .await
    }

    async fn entries(
        &self,
        account: AccountId,
        viewer: Principal,
        created: CreatedRange,
        page: PageRequest<EntryId>,
    ) -> Result<Option<Page<Entry>>> {
        self.call(async {
            let cursor = page.starting_after.map(|c| c.as_uuid());
            let visible = sqlx::query(ENTRIES_VISIBLE)
                .bind(account.as_uuid())
                .bind(viewer_merchant(viewer))
                .bind(cursor)
                .fetch_one(self.pool())
                .await
                .map_err(from_sqlx)?;
            if !row_flag(&visible, "visible")? {
                return Ok(None);
            }
            if !row_flag(&visible, "cursor_ok")? {
                return Err(Error::UnknownCursor);
            }
            let narrow = self
                .narrow_range(ENTRY_RANGE_IS_NARROW, account.as_uuid(), created)
                .await?;
            let sql = if narrow {
                SELECT_ENTRIES_IN_RANGE
            } else {
                SELECT_ENTRIES
            };
            let found = sqlx::query(sql)
                .persistent(false)
                .bind(account.as_uuid())
                .bind(cursor)
                .bind(limit_plus_one(page.limit.get()))
                .bind(created.gte.map(|t| t.as_datetime()))
                .bind(created.lt.map(|t| t.as_datetime()))
                .fetch_all(self.pool())
                .await
                .map_err(from_sqlx)?;
            let items = found.iter().map(rows::entry).collect::<Result<Vec<_>>>()?;
            Ok(Some(Page::from_overfetch(items, page.limit)))
        })
        .await
    }
}
