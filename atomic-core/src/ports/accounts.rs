//! [`AccountStore`]: accounts and their journal, as onboarding and account reads use them.

use async_trait::async_trait;

use crate::account::Account;
use crate::error::Result;
use crate::fresh::Fresh;
use crate::id::{AccountId, EntryId};
use crate::idempotency::Completion;
use crate::ledger::Entry;
use crate::page::{CreatedRange, Page, PageRequest};
use crate::principal::Principal;

/// Accounts and the entries posted to them. Reads take the caller's [`Principal`] and filter by
/// it in the store, so a merchant never receives a record it may not see.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Checks that the store answers.
    async fn ping(&self) -> Result<()>;

    /// The system account of `candidate`'s currency; stores `candidate` (made by
    /// [`Account::system`]) when the currency has none yet. Safe to call from many processes at
    /// once: one system account per currency.
    async fn ensure_system_account(&self, candidate: &Fresh<Account>) -> Result<Account>;

    /// Stores a new account (made by [`Account::open`]) and, in the same transaction,
    /// completes `completion`.
    async fn create_account(
        &self,
        account: &Fresh<Account>,
        completion: Option<Completion>,
    ) -> Result<()>;

    /// The account, if `viewer` may see it.
    async fn account(&self, id: AccountId, viewer: Principal) -> Result<Option<Account>>;

    /// The account's entries created in `created`, newest first; `None` when `viewer` may not
    /// see the account. A cursor that is not an entry of this account is
    /// [`crate::Error::UnknownCursor`].
    async fn entries(
        &self,
        account: AccountId,
        viewer: Principal,
        created: CreatedRange,
        page: PageRequest<EntryId>,
    ) -> Result<Option<Page<Entry>>>;
}
