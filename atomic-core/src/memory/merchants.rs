//! `MerchantStore` on [`MemoryStore`].

use async_trait::async_trait;

use super::store::MemoryStore;
use crate::error::{Invariant, Result};
use crate::fresh::Fresh;
use crate::id::MerchantId;
use crate::idempotency::Completion;
use crate::merchant::{Merchant, Onboarding};
use crate::ports::MerchantStore;

#[async_trait]
impl MerchantStore for MemoryStore {
    async fn onboard(
        &self,
        onboarding: &Fresh<Onboarding>,
        completion: Option<Completion>,
    ) -> Result<()> {
        let Onboarding {
            merchant,
            account,
            key,
        } = &**onboarding;
        let mut state = self.lock();
        if state.merchants.contains_key(&merchant.id) {
            return Err(Invariant::DuplicateId.into());
        }
        state.ensure_new_account_id(account.id)?;
        state.ensure_new_key(key)?;
        state.check_completion(completion.as_ref(), self.now())?;
        state.merchants.insert(merchant.id, merchant.clone());
        state.insert_account(account.clone());
        state.insert_key(key.clone());
        state.apply_completion(completion, self.now());
        Ok(())
    }

    async fn merchant(&self, id: MerchantId) -> Result<Option<Merchant>> {
        Ok(self.lock().merchants.get(&id).cloned())
    }
}
