//! [`AccountStore`] on [`MemoryStore`]: accounts and their entries.

use async_trait::async_trait;

use super::store::{MemoryStore, newest_first};
use crate::account::Account;
use crate::error::{Error, Invariant, Result};
use crate::fresh::Fresh;
use crate::id::{AccountId, EntryId};
use crate::idempotency::Completion;
use crate::ledger::Entry;
use crate::page::{CreatedRange, Page, PageRequest};
use crate::ports::AccountStore;
use crate::principal::Principal;

#[async_trait]
impl AccountStore for MemoryStore {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn ensure_system_account(&self, candidate: &Fresh<Account>) -> Result<Account> {
        let mut state = self.lock();
        if let Some(id) = state.system_accounts.get(&candidate.currency) {
            return state
                .accounts
                .get(id)
                .cloned()
                .ok_or(Invariant::MissingReference.into());
        }
        state.ensure_new_account_id(candidate.id)?;
        state
            .system_accounts
            .insert(candidate.currency, candidate.id);
        state.insert_account(Account::clone(candidate));
        Ok(Account::clone(candidate))
    }

    async fn create_account(
        &self,
        account: &Fresh<Account>,
        completion: Option<Completion>,
    ) -> Result<()> {
        let mut state = self.lock();
        state.ensure_new_account_id(account.id)?;
        state.check_completion(completion.as_ref(), self.now())?;
        state.insert_account(Account::clone(account));
        state.apply_completion(completion, self.now());
        Ok(())
    }

    async fn account(&self, id: AccountId, viewer: Principal) -> Result<Option<Account>> {
        let state = self.lock();
        Ok(state
            .accounts
            .get(&id)
            .filter(|a| viewer.can_access(a.owner))
            .cloned())
    }

    async fn entries(
        &self,
        account: AccountId,
        viewer: Principal,
        created: CreatedRange,
        page: PageRequest<EntryId>,
    ) -> Result<Option<Page<Entry>>> {
        let state = self.lock();
        let visible = state
            .accounts
            .get(&account)
            .is_some_and(|a| viewer.can_access(a.owner));
        let Some(ids) = state.account_entries.get(&account).filter(|_| visible) else {
            return Ok(None);
        };
        let keep = |id: &EntryId| {
            state
                .entries
                .get(id)
                .is_some_and(|e| created.contains(e.created_at))
        };
        let ids = match page.starting_after {
            Some(cursor) if !ids.contains(&cursor) => return Err(Error::UnknownCursor),
            Some(cursor) => newest_first(ids.range(..cursor), page.limit.get(), keep),
            None => newest_first(ids.iter(), page.limit.get(), keep),
        };
        let items = ids
            .iter()
            .filter_map(|id| state.entries.get(id).cloned())
            .collect();
        Ok(Some(Page::from_overfetch(items, page.limit)))
    }
}
