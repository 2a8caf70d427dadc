//! Conformance cases for [`crate::ports::MerchantStore`].

use super::{StoreKit, onboard};
use crate::account::{Account, AccountName};
use crate::api_key::ApiKey;
use crate::id::MerchantId;
use crate::merchant::{Merchant, MerchantName, Onboarding};
use crate::money::Currency;
use crate::principal::{Owner, Principal};
use crate::time::Timestamp;

pub async fn onboarding_round_trips(kit: &StoreKit) {
    let a = onboard(kit, Currency::EUR).await;
    assert_eq!(
        kit.store
            .merchants()
            .merchant(a.merchant.id)
            .await
            .unwrap()
            .as_ref(),
        Some(&a.merchant)
    );
    assert_eq!(
        kit.store
            .accounts()
            .account(a.account.id, a.principal())
            .await
            .unwrap()
            .as_ref(),
        Some(&a.account)
    );
    assert_eq!(
        kit.store
            .merchants()
            .merchant(MerchantId::generate())
            .await
            .unwrap(),
        None
    );
}

pub async fn onboarding_is_all_or_nothing(kit: &StoreKit) {
    let existing = onboard(kit, Currency::USD).await;
    let now = Timestamp::now();
    let id = MerchantId::generate();
    let account = Account::open(
        AccountName::parse("x").unwrap(),
        Currency::USD,
        Owner::Merchant(id),
        now,
    );
    let (mut key, _) = ApiKey::mint(id, now).unwrap();
    key.hash = existing.key.hash; // collides: the whole onboarding must fail
    let merchant = Merchant {
        id,
        name: MerchantName::parse("x").unwrap(),
        primary_account: account.id,
        created_at: now,
    };
    let onboarding = Onboarding {
        merchant,
        account: account.clone(),
        key,
    };
    assert!(
        kit.store
            .merchants()
            .onboard(&onboarding, None)
            .await
            .is_err()
    );
    assert_eq!(kit.store.merchants().merchant(id).await.unwrap(), None);
    assert_eq!(
        kit.store
            .accounts()
            .account(account.id, Principal::Platform)
            .await
            .unwrap(),
        None
    );
}

/// Generates the [`crate::ports::MerchantStore`] conformance tests for a `StoreKit` expression.
#[macro_export]
macro_rules! merchant_store_conformance {
    ($kit:expr) => {
        $crate::conformance_tests!(
            merchants,
            $kit,
            [onboarding_round_trips, onboarding_is_all_or_nothing,]
        );
    };
}
