//! API keys: authentication (hash lookup, constant-time comparison with the platform key),
//! minting (merchant keys only), listing and revocation. Revocation takes effect from the next
//! request on: every request looks its key up.

use std::sync::Arc;

use crate::api_key::{ApiKey, KeyHash, RawApiKey};
use crate::error::{Error, Result};
use crate::id::ApiKeyId;
use crate::idempotency::Completion;
use crate::page::{Page, PageRequest};
use crate::ports::{ApiKeyStore, Ports};
use crate::principal::Principal;
use crate::time::Clock;

/// API keys.
#[derive(Clone)]
pub struct ApiKeyService {
    keys: Arc<dyn ApiKeyStore>,
    clock: Arc<dyn Clock>,
    platform_key: Option<KeyHash>,
}

impl ApiKeyService {
    pub(super) fn new(ports: &Ports, platform_key: Option<KeyHash>) -> Self {
        Self {
            keys: ports.api_keys.clone(),
            clock: ports.clock.clone(),
            platform_key,
        }
    }

    /// Who a presented key is: the platform, a merchant, or nobody (`None`).
    pub async fn authenticate(&self, presented: &str) -> Result<Option<Principal>> {
        let raw = RawApiKey::from_presented(presented);
        let hash = raw.hash();
        if self.platform_key.is_some_and(|p| p.ct_eq(&hash)) {
            return Ok(Some(Principal::Platform));
        }
        // A key we did not mint cannot be in the store: no lookup for garbage.
        if !raw.is_well_formed() {
            return Ok(None);
        }
        Ok(self
            .keys
            .key_by_hash(&hash)
            .await?
            .filter(ApiKey::is_active)
            .map(|key| Principal::Merchant(key.merchant_id)))
    }

    /// Builds a new key for the caller's merchant; writes nothing. The platform mints none.
    pub fn prepare(&self, caller: Principal) -> Result<(ApiKey, RawApiKey)> {
        let merchant = caller.merchant().ok_or(Error::Forbidden)?;
        ApiKey::mint(merchant, self.clock.now())
    }

    /// Stores a prepared key (and its idempotency completion) in one transaction.
    pub async fn submit(&self, key: &ApiKey, completion: Option<Completion>) -> Result<()> {
        self.keys.create_key(key, completion).await
    }

    /// Keys the caller may see, newest first.
    pub async fn list(
        &self,
        caller: Principal,
        page: PageRequest<ApiKeyId>,
    ) -> Result<Page<ApiKey>> {
        self.keys.keys(caller, page).await
    }

    /// Revokes a key the caller may see; revoking twice keeps the first time.
    pub async fn revoke(&self, caller: Principal, id: ApiKeyId) -> Result<ApiKey> {
        let key = self
            .keys
            .revoke_key(id, caller, self.clock.now())
            .await?
            .ok_or(Error::NotFound)?;
        tracing::info!(api_key_id = %key.id, merchant_id = %key.merchant_id, "api key revoked");
        Ok(key)
    }
}
