//! Opening and reading accounts and their ledger entries. An account belongs to whoever opens
//! it (the caller's merchant, or the platform).

use std::sync::Arc;

use crate::account::{Account, AccountName};
use crate::error::{Error, Result};
use crate::fresh::Fresh;
use crate::id::{AccountId, EntryId};
use crate::idempotency::{Completion, IdempotencyKey};
use crate::ledger::Entry;
use crate::money::Currency;
use crate::page::{CreatedRange, Page, PageRequest};
use crate::ports::{AccountStore, Ports};
use crate::principal::Principal;
use crate::service::idempotent::{
    Idempotency, IdempotentWrites, Written, id_response, replayed_id,
};
use crate::time::Clock;

/// Accounts.
#[derive(Clone)]
pub struct AccountService {
    accounts: Arc<dyn AccountStore>,
    clock: Arc<dyn Clock>,
    writes: IdempotentWrites,
}

impl AccountService {
    pub(super) fn new(ports: &Ports, writes: IdempotentWrites) -> Self {
        Self {
            accounts: ports.store.accounts().clone(),
            clock: ports.clock.clone(),
            writes,
        }
    }

    /// Builds a new empty account owned by the caller; writes nothing.
    pub fn prepare(
        &self,
        caller: Principal,
        name: AccountName,
        currency: Currency,
    ) -> Fresh<Account> {
        Account::open(name, currency, caller.as_owner(), self.clock.now())
    }

    /// Stores a prepared account (and its idempotency completion) in one transaction.
    pub async fn submit(
        &self,
        account: &Fresh<Account>,
        completion: Option<Completion>,
    ) -> Result<()> {
        self.accounts.create_account(account, completion).await
    }

    /// Opens an account: prepares and submits it in one call. Under an idempotency `key`, a
    /// second call with the same request answers the account the first one opened (as it
    /// stands now) and opens nothing; the same key with a different request is
    /// [`Error::IdempotencyKeyReused`].
    pub async fn create(
        &self,
        caller: Principal,
        name: AccountName,
        currency: Currency,
        key: Option<IdempotencyKey>,
    ) -> Result<Account> {
        let fields: [&[u8]; 2] = [name.as_str().as_bytes(), currency.as_str().as_bytes()];
        let idempotency = Idempotency::keyed(key, "account", &fields);
        let written = self
            .writes
            .run(
                caller,
                idempotency.as_ref(),
                |_| async { Ok(self.prepare(caller, name, currency)) },
                |account| id_response(account.id.as_uuid()),
                || {},
                |account, completion| {
                    let service = self.clone();
                    async move {
                        service.submit(&account, completion).await?;
                        Ok(account.into_inner())
                    }
                },
            )
            .await?;
        match written {
            Written::New(account) => Ok(account),
            Written::Replayed(stored) => {
                self.get(caller, AccountId::from_uuid(replayed_id(&stored)?))
                    .await
            }
        }
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
