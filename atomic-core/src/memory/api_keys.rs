//! `ApiKeyStore` on [`MemoryStore`].

use async_trait::async_trait;

use super::store::{MemoryStore, newest_first};
use crate::api_key::{ApiKey, KeyHash};
use crate::error::{Error, Invariant, Result};
use crate::id::ApiKeyId;
use crate::idempotency::Completion;
use crate::page::{CreatedRange, Page, PageRequest};
use crate::ports::ApiKeyStore;
use crate::principal::{Owner, Principal};
use crate::time::Timestamp;

#[async_trait]
impl ApiKeyStore for MemoryStore {
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<ApiKey>> {
        let state = self.lock();
        Ok(state
            .keys_by_hash
            .get(hash)
            .and_then(|id| state.keys.get(id))
            .cloned())
    }

    async fn create_key(&self, key: &ApiKey, completion: Option<Completion>) -> Result<()> {
        let mut state = self.lock();
        if !state.merchants.contains_key(&key.merchant_id) {
            return Err(Invariant::MissingReference.into());
        }
        state.ensure_new_key(key)?;
        state.check_completion(completion.as_ref(), self.now())?;
        state.insert_key(key.clone());
        state.apply_completion(completion, self.now());
        Ok(())
    }

    async fn keys(
        &self,
        viewer: Principal,
        created: CreatedRange,
        page: PageRequest<ApiKeyId>,
    ) -> Result<Page<ApiKey>> {
        let state = self.lock();
        let visible = |k: &ApiKey| viewer.can_access(Owner::Merchant(k.merchant_id));
        if page
            .starting_after
            .is_some_and(|cursor| !state.keys.get(&cursor).is_some_and(visible))
        {
            return Err(Error::UnknownCursor);
        }
        let wanted = |id: &ApiKeyId| {
            state
                .keys
                .get(id)
                .is_some_and(|k| visible(k) && created.contains(k.created_at))
        };
        let ids = match page.starting_after {
            Some(cursor) => newest_first(
                state.keys.range(..cursor).map(|(k, _)| k),
                page.limit.get(),
                wanted,
            ),
            None => newest_first(state.keys.keys(), page.limit.get(), wanted),
        };
        let items = ids
            .iter()
            .filter_map(|id| state.keys.get(id).cloned())
            .collect();
        Ok(Page::from_overfetch(items, page.limit))
    }

    async fn revoke_key(
        &self,
        id: ApiKeyId,
        viewer: Principal,
        at: Timestamp,
    ) -> Result<Option<ApiKey>> {
        let mut state = self.lock();
        let Some(key) = state
            .keys
            .get_mut(&id)
            .filter(|k| viewer.can_access(Owner::Merchant(k.merchant_id)))
        else {
            return Ok(None);
        };
        if key.revoked_at.is_none() {
            key.revoked_at = Some(at);
        }
        Ok(Some(key.clone()))
    }
}
