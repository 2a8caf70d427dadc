//! Conformance cases for [`crate::ports::ApiKeyStore`].

use super::{StoreKit, completion, onboard, taken_by_another};
use crate::api_key::ApiKey;
use crate::error::Error;
use crate::id::ApiKeyId;
use crate::money::Currency;
use crate::page::{CreatedRange, PageLimit, PageRequest};
use crate::principal::Principal;
use crate::time::Timestamp;

fn page(limit: i64, after: Option<ApiKeyId>) -> PageRequest<ApiKeyId> {
    PageRequest {
        limit: PageLimit::new(limit).unwrap(),
        starting_after: after,
    }
}

pub async fn keys_are_found_by_hash(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    assert_eq!(
        kit.store
            .api_keys()
            .key_by_hash(&a.key.hash)
            .await
            .unwrap()
            .as_ref(),
        Some(&a.key)
    );
    let (extra, raw) = ApiKey::mint(a.merchant.id, Timestamp::now()).unwrap();
    kit.store.api_keys().create_key(&extra, None).await.unwrap();
    assert_eq!(
        kit.store
            .api_keys()
            .key_by_hash(&raw.hash())
            .await
            .unwrap()
            .map(|k| k.id),
        Some(extra.id)
    );
    let (_, stranger) = ApiKey::mint(a.merchant.id, Timestamp::now()).unwrap();
    assert_eq!(
        kit.store
            .api_keys()
            .key_by_hash(&stranger.hash())
            .await
            .unwrap(),
        None
    );
}

pub async fn key_hashes_are_unique(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let mut copy = a.key.clone();
    copy.id = ApiKeyId::generate();
    assert!(kit.store.api_keys().create_key(&copy, None).await.is_err());
}

pub async fn keys_list_newest_first_and_scoped(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let b = onboard(kit, Currency::USD).await;
    let mut ids = vec![a.key.id];
    for _ in 0..3 {
        let (k, _) = ApiKey::mint(a.merchant.id, Timestamp::now()).unwrap();
        kit.store.api_keys().create_key(&k, None).await.unwrap();
        ids.push(k.id);
    }
    ids.reverse();
    let first = kit
        .store
        .api_keys()
        .keys(a.principal(), CreatedRange::default(), page(3, None))
        .await
        .unwrap();
    assert_eq!(
        first.items.iter().map(|k| k.id).collect::<Vec<_>>(),
        ids[..3].to_vec()
    );
    assert!(first.has_more);
    let rest = kit
        .store
        .api_keys()
        .keys(
            a.principal(),
            CreatedRange::default(),
            page(3, Some(ids[2])),
        )
        .await
        .unwrap();
    assert_eq!(
        rest.items.iter().map(|k| k.id).collect::<Vec<_>>(),
        ids[3..].to_vec()
    );
    assert!(!rest.has_more);
    assert!(matches!(
        kit.store
            .api_keys()
            .keys(
                a.principal(),
                CreatedRange::default(),
                page(3, Some(b.key.id))
            )
            .await,
        Err(Error::UnknownCursor)
    ));
    let platform = kit
        .store
        .api_keys()
        .keys(
            Principal::Platform,
            CreatedRange::default(),
            page(100, None),
        )
        .await
        .unwrap();
    assert!(
        platform.items.iter().any(|k| k.id == b.key.id)
            && platform.items.iter().any(|k| k.id == a.key.id)
    );
}

/// `createdGte` is inclusive and `createdLt` exclusive; the range pages with its cursor.
pub async fn keys_list_by_created_range(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let base = Timestamp::now().saturating_sub(std::time::Duration::from_secs(3600));
    let at = |minutes: u64| base.saturating_add(std::time::Duration::from_secs(60 * minutes));
    let mut ids = Vec::new();
    for minute in 0..4 {
        let (k, _) = ApiKey::mint(a.merchant.id, at(minute)).unwrap();
        kit.store.api_keys().create_key(&k, None).await.unwrap();
        ids.push(k.id);
    }
    let range = CreatedRange {
        gte: Some(at(1)),
        lt: Some(at(3)),
    };
    let principal = a.principal();
    let list = |after| async move {
        kit.store
            .api_keys()
            .keys(principal, range, page(1, after))
            .await
            .unwrap()
    };
    let first = list(None).await;
    assert_eq!(
        first.items.iter().map(|k| k.id).collect::<Vec<_>>(),
        [ids[2]]
    );
    assert!(first.has_more);
    let second = list(Some(ids[2])).await;
    assert_eq!(
        second.items.iter().map(|k| k.id).collect::<Vec<_>>(),
        [ids[1]]
    );
    assert!(!second.has_more, "{second:?}");
}

pub async fn revocation_is_scoped_and_keeps_the_first_time(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let b = onboard(kit, Currency::USD).await;
    assert_eq!(
        kit.store
            .api_keys()
            .revoke_key(a.key.id, b.principal(), Timestamp::now())
            .await
            .unwrap(),
        None
    );
    assert!(
        kit.store
            .api_keys()
            .key_by_hash(&a.key.hash)
            .await
            .unwrap()
            .unwrap()
            .is_active()
    );
    let first = kit
        .store
        .api_keys()
        .revoke_key(a.key.id, a.principal(), Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    let when = first.revoked_at.expect("revoked");
    let again = kit
        .store
        .api_keys()
        .revoke_key(a.key.id, Principal::Platform, Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked_at, Some(when));
    assert!(
        !kit.store
            .api_keys()
            .key_by_hash(&a.key.hash)
            .await
            .unwrap()
            .unwrap()
            .is_active()
    );
}

pub async fn create_key_completes_its_idempotency_claim_atomically(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let lost = taken_by_another(kit, a.principal()).await;
    let (k, _) = ApiKey::mint(a.merchant.id, Timestamp::now()).unwrap();
    assert!(matches!(
        kit.store
            .api_keys()
            .create_key(&k, Some(completion(&lost, "x")))
            .await,
        Err(Error::IdempotencyClaimLost)
    ));
    assert_eq!(
        kit.store.api_keys().key_by_hash(&k.hash).await.unwrap(),
        None
    );
}

/// Generates the [`crate::ports::ApiKeyStore`] conformance tests for a `StoreKit` expression.
#[macro_export]
macro_rules! api_key_store_conformance {
    ($kit:expr) => {
        $crate::conformance_tests!(
            api_keys,
            $kit,
            [
                keys_are_found_by_hash,
                key_hashes_are_unique,
                keys_list_newest_first_and_scoped,
                keys_list_by_created_range,
                revocation_is_scoped_and_keeps_the_first_time,
                create_key_completes_its_idempotency_claim_atomically,
            ]
        );
    };
}
