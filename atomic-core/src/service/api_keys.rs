//! API keys: authentication (hash lookup, constant-time comparison with the platform key),
//! minting (merchant keys only), listing and revocation. An authenticated merchant key may be
//! remembered for a short, configured time so a request costs no store lookup; revocation
//! through this process takes effect from the next request on (the key is forgotten at once),
//! through another process within that time.

use std::sync::Arc;
use std::time::Duration;

use quick_cache::sync::Cache;

use crate::api_key::{ApiKey, KeyHash, RawApiKey};
use crate::error::{Error, Result};
use crate::id::{ApiKeyId, MerchantId};
use crate::idempotency::{Completion, IdempotencyKey, StoredResponse};
use crate::page::{CreatedRange, Page, PageRequest};
use crate::ports::{ApiKeyStore, Ports};
use crate::principal::Principal;
use crate::service::idempotent::{Idempotency, IdempotentWrites, Written};
use crate::time::{Clock, Timestamp};

/// Most keys remembered at once; past it the least used are evicted (a flood of distinct valid
/// keys cannot grow it).
const CACHE_CAPACITY: usize = 100_000;

/// API keys.
#[derive(Clone)]
pub struct ApiKeyService {
    keys: Arc<dyn ApiKeyStore>,
    clock: Arc<dyn Clock>,
    platform_key: Option<KeyHash>,
    cache_ttl: Duration,
    /// Active merchant keys recently found in the store, and until when to trust that. The
    /// deadline is read on the core's [`Clock`] (so a test's manual clock and a skewed process
    /// clock govern it), which no TTL cache crate can be given; the cache bounds the size.
    cache: Arc<Cache<KeyHash, (MerchantId, Timestamp)>>,
    writes: IdempotentWrites,
}

/// A key as minting answers it: raw when the minting ran now, without the secret when the
/// answer is a replay (a secret is shown once).
#[derive(Clone, Debug)]
pub struct Minted {
    /// The key's record.
    pub key: ApiKey,
    /// The key itself; `None` in a replay.
    pub raw_key: Option<RawApiKey>,
}

impl ApiKeyService {
    pub(super) fn new(
        ports: &Ports,
        platform_key: Option<KeyHash>,
        cache_ttl: Duration,
        writes: IdempotentWrites,
    ) -> Self {
        Self {
            keys: ports.store.api_keys().clone(),
            clock: ports.clock.clone(),
            platform_key,
            cache_ttl,
            cache: Arc::new(Cache::new(CACHE_CAPACITY)),
            writes,
        }
    }

    fn remembered(&self, hash: &KeyHash) -> Option<MerchantId> {
        if self.cache_ttl.is_zero() {
            return None;
        }
        let (merchant, until) = self.cache.get(hash)?;
        (self.clock.now() < until).then_some(merchant)
    }

    fn remember(&self, hash: KeyHash, merchant: MerchantId) {
        if self.cache_ttl.is_zero() {
            return;
        }
        let until = self.clock.now().saturating_add(self.cache_ttl);
        self.cache.insert(hash, (merchant, until));
    }

    fn forget(&self, hash: &KeyHash) {
        self.cache.remove(hash);
    }

    /// Who a presented key is: the platform, a merchant, or nobody (`None`). A merchant key
    /// checked within the cache window is trusted without a store read, so a key revoked
    /// through another process works here for at most that window.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<Principal>> {
        self.identify(presented, true).await
    }

    /// As [`Self::authenticate`], but always asks the store: for key management (minting,
    /// revoking, onboarding), where a revoked key must fail at once on every process, or it
    /// could mint its own replacement.
    pub async fn authenticate_fresh(&self, presented: &str) -> Result<Option<Principal>> {
        self.identify(presented, false).await
    }

    async fn identify(&self, presented: &str, trust_cache: bool) -> Result<Option<Principal>> {
        let raw = RawApiKey::from_presented(presented);
        let hash = raw.hash();
        if self.platform_key.is_some_and(|p| p.ct_eq(&hash)) {
            return Ok(Some(Principal::Platform));
        }
        // A key we did not mint cannot be in the store: no lookup for garbage.
        if !raw.is_well_formed() {
            return Ok(None);
        }
        if trust_cache && let Some(merchant) = self.remembered(&hash) {
            return Ok(Some(Principal::Merchant(merchant)));
        }
        let active = self
            .keys
            .key_by_hash(&hash)
            .await?
            .filter(ApiKey::is_active);
        match &active {
            Some(key) => self.remember(hash, key.merchant_id),
            None => self.forget(&hash),
        }
        Ok(active.map(|key| Principal::Merchant(key.merchant_id)))
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

    /// Mints a key for the caller's merchant: prepares and submits it in one call, idempotent
    /// under `key` as [`crate::service::PaymentService::create`] is. A replay finds the key by
    /// its hash, which is what the kept answer holds (never the secret).
    pub async fn create(&self, caller: Principal, key: Option<IdempotencyKey>) -> Result<Minted> {
        let idempotency = Idempotency::keyed(key, "api_key", &[]);
        let written = self
            .writes
            .run(
                caller,
                idempotency.as_ref(),
                |_| async { self.prepare(caller) },
                |(key, _)| StoredResponse {
                    status: 200,
                    body: bytes::Bytes::from(key.hash.to_hex()),
                },
                || {},
                |(key, raw), completion| {
                    let service = self.clone();
                    async move {
                        service.submit(&key, completion).await?;
                        Ok(Minted {
                            key,
                            raw_key: Some(raw),
                        })
                    }
                },
            )
            .await?;
        let stored = match written {
            Written::New(minted) => return Ok(minted),
            Written::Replayed(stored) => stored,
        };
        let hash = std::str::from_utf8(&stored.body)
            .ok()
            .and_then(|hex| KeyHash::from_hex(hex).ok())
            .ok_or(Error::IdempotencyKeyReused)?;
        let key = self.keys.key_by_hash(&hash).await?;
        let key = key
            .filter(|key| caller.merchant() == Some(key.merchant_id))
            .ok_or(Error::NotFound)?;
        Ok(Minted { key, raw_key: None })
    }

    /// Keys the caller may see, created in `created`, newest first.
    pub async fn list(
        &self,
        caller: Principal,
        created: CreatedRange,
        page: PageRequest<ApiKeyId>,
    ) -> Result<Page<ApiKey>> {
        self.keys.keys(caller, created, page).await
    }

    /// Revokes a key the caller may see; revoking twice keeps the first time.
    pub async fn revoke(&self, caller: Principal, id: ApiKeyId) -> Result<ApiKey> {
        let key = self
            .keys
            .revoke_key(id, caller, self.clock.now())
            .await?
            .ok_or(Error::NotFound)?;
        self.forget(&key.hash);
        tracing::info!(api_key_id = %key.id, merchant_id = %key.merchant_id, "api key revoked");
        Ok(key)
    }
}
