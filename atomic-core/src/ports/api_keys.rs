//! [`ApiKeyStore`]: API key records, found by hash.

use async_trait::async_trait;

use crate::api_key::{ApiKey, KeyHash};
use crate::error::Result;
use crate::id::ApiKeyId;
use crate::idempotency::Completion;
use crate::page::{CreatedRange, Page, PageRequest};
use crate::principal::Principal;
use crate::time::Timestamp;

/// Where API key records live (hashes only, never raw keys).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ApiKeyStore: Send + Sync + 'static {
    /// The key with this hash, revoked or not.
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<ApiKey>>;

    /// Stores a new key and completes `completion` in the same transaction. Hashes are unique.
    async fn create_key(&self, key: &ApiKey, completion: Option<Completion>) -> Result<()>;

    /// Keys `viewer` may see, created in `created`, newest first. A cursor the viewer cannot
    /// see is [`crate::Error::UnknownCursor`].
    async fn keys(
        &self,
        viewer: Principal,
        created: CreatedRange,
        page: PageRequest<ApiKeyId>,
    ) -> Result<Page<ApiKey>>;

    /// Revokes the key at `at` if `viewer` may see it (a revoked key stays revoked, with its
    /// first revocation time). `None` if there is no such key for this viewer.
    async fn revoke_key(
        &self,
        id: ApiKeyId,
        viewer: Principal,
        at: Timestamp,
    ) -> Result<Option<ApiKey>>;
}
