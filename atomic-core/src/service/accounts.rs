//! Opening and reading accounts and their ledger entries. An account belongs to whoever opens
//! it (the caller's merchant, or the platform).

use std::sync::Arc;

use crate::account::{Account, AccountName};
use crate::error::{Error, Result};
use crate::id::{AccountId, EntryId};
use crate::idempotency::Completion;
use crate::ledger::Entry;
use crate::money::Currency;
use crate::page::{CreatedRange, Page, PageRequest};
use crate::ports::{AccountStore, Ports};
use crate::principal::Principal;
use crate::time::Clock;

/// Accounts.
#[derive(Clone)]
pub struct AccountService {
    accounts: Arc<dyn AccountStore>,
    clock: Arc<dyn Clock>,
}

impl AccountService {
    pub(super) fn new(ports: &Ports) -> Self {
        Self {
            accounts: ports.store.accounts().clone(),
            clock: ports.clock.clone(),
        }
    }

    /// Builds a new empty account owned by the caller; writes nothing.
    pub fn prepare(&self, caller: Principal, name: AccountName, currency: Currency) -> Account {
        Account::open(name, currency, caller.as_owner(), self.clock.now())
    }

    /// Stores a prepared account (and its idempotency completion) in one transaction.
    pub async fn submit(&self, account: &Account, completion: Option<Completion>) -> Result<()> {
        self.accounts.create_account(account, completion).await
    }

    /// The account, if the caller may see it.
    pub async fn get(&self, caller: Principal, id: AccountId) -> Result<Account> {
        self.accounts
            .account(id, caller)
            .await?
            .ok_or(Error::NotFound)
    }

    /// The account's entries created in `created`, newest first, if the caller may see the
    /// account.
    pub async fn entries(
        &self,
        caller: Principal,
        id: AccountId,
        created: CreatedRange,
        page: PageRequest<EntryId>,
    ) -> Result<Page<Entry>> {
        self.accounts
            .entries(id, caller, created, page)
            .await?
            .ok_or(Error::NotFound)
    }
}
