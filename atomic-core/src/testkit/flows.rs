//! Settlement flows the cases share: a payment driven to a state through the ports, as a
//! worker would drive it (claim, then settle), and refunds built and settled the same way.

use std::time::Duration;

use super::{Onboarded, StoreKit, payment, system_account};
use crate::error::Result;
use crate::fresh::Fresh;
use crate::id::{PaymentId, RefundId};
use crate::ledger::Transfer;
use crate::metadata::Metadata;
use crate::money::Amount;
use crate::payment::{CaptureMethod, Payment, PaymentStatus};
use crate::ports::{
    BeginOutcome, LeaseId, RefundBegin, RefundResult, SettleOutcome, Settlement, SettlementResult,
};
use crate::principal::Principal;
use crate::refund::{Refund, RefundReason, RefundRequest};
use crate::time::Timestamp;

/// The lease the flows claim with.
pub const LEASE: Duration = Duration::from_secs(30);

/// `minor_units` as an amount.
pub fn amount(minor_units: i64) -> Amount {
    Amount::new(minor_units).unwrap()
}

/// Metadata from pairs.
pub fn metadata(pairs: &[(&str, &str)]) -> Metadata {
    Metadata::new(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    )
    .unwrap()
}

/// Stores a `PENDING` payment of `minor_units` into the merchant's primary account, captured
/// `method`, with `meta`.
pub async fn stored_payment_with(
    kit: &StoreKit,
    to: &Onboarded,
    minor_units: i64,
    method: CaptureMethod,
    meta: Metadata,
) -> Payment {
    let funding = system_account(kit, to.account.currency).await;
    let mut p = payment(&to.account, &funding, minor_units, "tok_visa");
    p.get_mut().capture_method = method;
    p.get_mut().metadata = meta;
    kit.store.payments().create_payment(&p, None).await.unwrap();
    p.into_inner()
}

/// The payment as the platform sees it now.
pub async fn reload(kit: &StoreKit, id: PaymentId) -> Payment {
    kit.store
        .payments()
        .payment(id, Principal::Platform)
        .await
        .unwrap()
        .expect("the payment exists")
}

/// The refund as the platform sees it now.
pub async fn reload_refund(kit: &StoreKit, id: RefundId) -> Refund {
    kit.store
        .payments()
        .refund(id, Principal::Platform)
        .await
        .unwrap()
        .expect("the refund exists")
}

/// Claims one payment under a new lease; panics unless it is claimed.
pub async fn claim_payment(kit: &StoreKit, id: PaymentId) -> (LeaseId, Payment) {
    let lease = LeaseId::generate();
    let outcome = kit
        .store
        .settlement()
        .begin_payments(&[id], lease, LEASE)
        .await
        .unwrap();
    match <[BeginOutcome; 1]>::try_from(outcome) {
        Ok([BeginOutcome::Claimed(p)]) => (lease, p),
        other => panic!("expected to claim {id}, got {other:?}"),
    }
}

/// Claims one refund under a new lease; panics unless it is claimed.
pub async fn claim_refund(kit: &StoreKit, id: RefundId) -> (LeaseId, Refund) {
    let lease = LeaseId::generate();
    let outcome = kit
        .store
        .settlement()
        .begin_refunds(&[id], lease, LEASE)
        .await
        .unwrap();
    match <[RefundBegin; 1]>::try_from(outcome) {
        Ok([RefundBegin::Claimed(r)]) => (lease, r),
        other => panic!("expected to claim refund {id}, got {other:?}"),
    }
}

/// Settles one settlement alone.
pub async fn settle_one(kit: &StoreKit, settlement: Settlement) -> Result<SettleOutcome> {
    let results = kit.store.settlement().settle(&[settlement]).await;
    assert_eq!(results.len(), 1, "one result per settlement");
    results.into_iter().next().unwrap()
}

/// The settlement posting what `held` calls for (a charge or a capture).
pub fn posting(held: &Payment, lease: LeaseId) -> Settlement {
    Settlement::Payment {
        payment_id: held.id,
        lease,
        result: SettlementResult::Posted(Transfer::for_payment(held, Timestamp::now()).unwrap()),
    }
}

/// The settlement posting `held`.
pub fn refund_posting(held: &Refund, lease: LeaseId) -> Settlement {
    Settlement::Refund {
        refund_id: held.id,
        lease,
        result: RefundResult::Posted(Transfer::for_refund(held, Timestamp::now()).unwrap()),
    }
}

/// Claims the payment and posts what it calls for; returns it as it now stands.
pub async fn claim_and_post(kit: &StoreKit, id: PaymentId) -> Payment {
    let (lease, held) = claim_payment(kit, id).await;
    match settle_one(kit, posting(&held, lease)).await {
        Ok(SettleOutcome::Payment(p)) => p,
        other => panic!("posting {id}: {other:?}"),
    }
}

/// A `SUCCESS` automatic payment of `minor_units`.
pub async fn succeeded(kit: &StoreKit, to: &Onboarded, minor_units: i64) -> Payment {
    let p = stored_payment_with(
        kit,
        to,
        minor_units,
        CaptureMethod::Automatic,
        Metadata::default(),
    )
    .await;
    let done = claim_and_post(kit, p.id).await;
    assert_eq!(done.status(), PaymentStatus::Success);
    done
}

/// An `AUTHORIZED` manual-capture payment of `minor_units`.
pub async fn authorized(kit: &StoreKit, to: &Onboarded, minor_units: i64) -> Payment {
    let p = stored_payment_with(
        kit,
        to,
        minor_units,
        CaptureMethod::Manual,
        Metadata::default(),
    )
    .await;
    let (lease, _) = claim_payment(kit, p.id).await;
    let settled = settle_one(
        kit,
        Settlement::Payment {
            payment_id: p.id,
            lease,
            result: SettlementResult::Authorized,
        },
    )
    .await;
    match settled {
        Ok(SettleOutcome::Payment(done)) if done.status() == PaymentStatus::Authorized => done,
        other => panic!("authorizing {}: {other:?}", p.id),
    }
}

/// A `PENDING` refund of `minor_units` of `payment` (not stored).
pub fn refund_of(payment: &Payment, minor_units: i64) -> Fresh<Refund> {
    Refund::new(
        payment,
        amount(minor_units),
        RefundRequest {
            amount: Some(amount(minor_units)),
            reason: Some(RefundReason::RequestedByCustomer),
            metadata: Metadata::default(),
        },
        None,
        Principal::Platform,
        Timestamp::now(),
    )
}

/// Stores a `PENDING` refund of `minor_units` of `payment`.
pub async fn stored_refund(kit: &StoreKit, payment: &Payment, minor_units: i64) -> Refund {
    let refund = refund_of(payment, minor_units);
    kit.store
        .payments()
        .create_refund(&refund, None)
        .await
        .unwrap();
    refund.into_inner()
}

/// Claims the refund and posts it; returns the result of the settlement.
pub async fn claim_and_post_refund(kit: &StoreKit, id: RefundId) -> Result<SettleOutcome> {
    let (lease, held) = claim_refund(kit, id).await;
    settle_one(kit, refund_posting(&held, lease)).await
}
