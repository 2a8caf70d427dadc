//! Conformance cases for [`crate::ports::MerchantStore`].

use super::{StoreKit, onboard};
use crate::id::MerchantId;
use crate::merchant::{MerchantName, Onboarding};
use crate::money::Currency;
use crate::principal::Principal;
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
    let name = MerchantName::parse("x").unwrap();
    let (mut onboarding, _) = Onboarding::new(name, Currency::USD, Timestamp::now()).unwrap();
    onboarding.get_mut().key.hash = existing.key.hash; // collides: the whole onboarding must fail
    let (id, account) = (onboarding.merchant.id, onboarding.account.clone());
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
