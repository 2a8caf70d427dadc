//! Opening and reading accounts and their ledger entries. An account belongs to whoever opens
//! it (the caller's merchant, or the platform).

use std::sync::Arc;

use crate::account::{Account, AccountName};
use crate::error::{Error, Result};
use crate::id::{AccountId, EntryId};
use crate::idempotency::Completion;
use crate::ledger::Entry;
use crate::money::Currency;
use crate::page::{Page, PageRequest};
use crate::ports::{LedgerStore, Ports};
use crate::principal::Principal;
use crate::time::Clock;

/// Accounts.
#[derive(Clone)]
pub struct AccountService {
    ledger: Arc<dyn LedgerStore>,
    clock: Arc<dyn Clock>,
}

impl AccountService {
    pub(super) fn new(ports: &Ports) -> Self {
        Self {
            ledger: ports.ledger.clone(),
            clock: ports.clock.clone(),
        }
    }

    /// Builds a new empty account owned by the caller; writes nothing.
    pub fn prepare(&self, caller: Principal, name: AccountName, currency: Currency) -> Account {
        Account::open(name, currency, caller.as_owner(), self.clock.now())
    }

    /// Stores a prepared account (and its idempotency completion) in one transaction.
    pub async fn submit(&self, account: &Account, completion: Option<Completion>) -> Result<()> {
        self.ledger.create_account(account, completion).await
    }

    /// The account, if the caller may see it.
    pub async fn get(&self, caller: Principal, id: AccountId) -> Result<Account> {
        self.ledger
            .account(id, caller)
            .await?
            .ok_or(Error::NotFound)
    }

    /// The account's entries, newest first, if the caller may see the account.
    pub async fn entries(
        &self,
        caller: Principal,
        id: AccountId,
        page: PageRequest<EntryId>,
    ) -> Result<Page<Entry>> {
        self.ledger
            .entries(id, caller, page)
            .await?
            .ok_or(Error::NotFound)
    }
}
