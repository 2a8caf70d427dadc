//! Conformance cases for refunds (API.md v1.1 *Refunds*): reservation on creation, settlement
//! posting DEBIT merchant / CREDIT World, release on failure, the refundable bound under
//! concurrency (TEST-MATRIX row 33), the uncoverable refund (row 35), and batches that mix
//! payments and refunds.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::flows::{
    LEASE, amount, authorized, claim_and_post_refund, claim_payment, claim_refund, posting,
    refund_of, refund_posting, reload, reload_refund, settle_one, stored_payment_with,
    stored_refund, succeeded,
};
use super::{StoreKit, acquire, assert_books_clean, completion, onboard, system_account};
use crate::error::{Error, Invariant};
use crate::fresh::Fresh;
use crate::id::{AccountId, PaymentId, RefundId};
use crate::idempotency::ClaimOutcome;
use crate::ledger::{Direction, Entry, Transfer};
use crate::metadata::Metadata;
use crate::money::{Amount, Currency};
use crate::page::{CreatedRange, PageLimit, PageRequest};
use crate::payment::{CaptureMethod, FailureReason, PaymentStatus};
use crate::ports::{
    Job, LeaseId, RefundBegin, RefundFilter, RefundResult, SettleOutcome, Settlement,
    SettlementResult,
};
use crate::principal::Principal;
use crate::refund::{RefundFailureReason, RefundStatus};
use crate::time::Timestamp;

async fn balance(kit: &StoreKit, account: AccountId) -> i64 {
    kit.store
        .accounts()
        .account(account, Principal::Platform)
        .await
        .unwrap()
        .unwrap()
        .balance
        .minor_units()
}

async fn entries(kit: &StoreKit, account: AccountId) -> Vec<Entry> {
    let page = PageRequest {
        limit: PageLimit::new(100).unwrap(),
        starting_after: None,
    };
    kit.store
        .accounts()
        .entries(account, Principal::Platform, CreatedRange::default(), page)
        .await
        .unwrap()
        .unwrap()
        .items
}

fn refund_entries(all: &[Entry], refund: RefundId) -> Vec<&Entry> {
    all.iter().filter(|e| e.refund_id == Some(refund)).collect()
}

fn refund_result(result: &crate::error::Result<SettleOutcome>) -> Option<RefundStatus> {
    match result {
        Ok(SettleOutcome::Refund(r)) => Some(r.status()),
        _ => None,
    }
}

/// A refund reserves its amount on its payment when it is created, with its completion; it
/// is stored `PENDING` and visible to its merchant only.
pub async fn creating_a_refund_reserves_its_amount(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let b = onboard(kit, Currency::USD).await;
    let p = succeeded(kit, &a, 1000).await;
    let claim = acquire(kit, a.principal()).await;
    let refund = refund_of(&p, 400);
    kit.store
        .payments()
        .create_refund(&refund, Some(completion(&claim, "refund")))
        .await
        .unwrap();
    let stored = kit
        .store
        .payments()
        .refund(refund.id, a.principal())
        .await
        .unwrap();
    assert_eq!(stored.as_ref(), Some(&*refund), "reads back equal");
    assert_eq!(stored.unwrap().status(), RefundStatus::Pending);
    assert_eq!(
        kit.store
            .payments()
            .refund(refund.id, b.principal())
            .await
            .unwrap(),
        None,
        "another merchant's refund is invisible"
    );
    let replay = kit
        .store
        .idempotency()
        .claim(
            claim.scope,
            &claim.key,
            super::fingerprint(1),
            super::policy(),
        )
        .await
        .unwrap();
    assert!(matches!(&replay, ClaimOutcome::Replay(r) if r.body == "refund"));

    let now = reload(kit, p.id).await;
    assert_eq!(now.status(), PaymentStatus::Success);
    assert_eq!(
        (
            now.amount_reserved(),
            now.amount_refunded(),
            now.refundable()
        ),
        (400, 0, 600)
    );
    assert_eq!(
        balance(kit, a.account.id).await,
        1000,
        "a request moves no money"
    );
    assert!(
        kit.store
            .payments()
            .create_refund(&refund, None)
            .await
            .is_err(),
        "a refund id is unique"
    );
    assert_eq!(reload(kit, p.id).await.amount_reserved(), 400);
    assert_books_clean(kit).await;
}

/// Above what is refundable is `AmountExceedsRefundable`; a payment not `SUCCESS` is
/// `InvalidState`; either way nothing is written, the completion included.
pub async fn refunds_beyond_the_refundable_or_of_unfinished_payments_are_refused(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = succeeded(kit, &a, 1000).await;
    stored_refund(kit, &p, 700).await;
    let pending =
        stored_payment_with(kit, &a, 500, CaptureMethod::Automatic, Metadata::default()).await;
    let auth = authorized(kit, &a, 500).await;
    let canceled = authorized(kit, &a, 500).await;
    kit.store
        .payments()
        .cancel(
            canceled.id,
            crate::payment::CancellationReason::Requested,
            Timestamp::now(),
            None,
        )
        .await
        .unwrap();
    let capturing = authorized(kit, &a, 500).await;
    kit.store
        .payments()
        .request_capture(
            capturing.id,
            amount(500),
            Timestamp::now(),
            Duration::from_secs(3600),
            None,
        )
        .await
        .unwrap();
    let failed =
        stored_payment_with(kit, &a, 500, CaptureMethod::Automatic, Metadata::default()).await;
    let (lease, _) = claim_payment(kit, failed.id).await;
    settle_one(
        kit,
        Settlement::Payment {
            payment_id: failed.id,
            lease,
            result: SettlementResult::Failed(FailureReason::CardDeclined),
        },
    )
    .await
    .unwrap();

    let over = refund_of(&p, 301);
    let mut attempts = vec![(over, None)];
    for (payment, status) in [
        (&pending, PaymentStatus::Pending),
        (&auth, PaymentStatus::Authorized),
        (&canceled, PaymentStatus::Canceled),
        (&capturing, PaymentStatus::Processing),
        (&failed, PaymentStatus::Failed),
    ] {
        let before = reload(kit, payment.id).await;
        attempts.push((refund_of(&before, 1), Some(status)));
    }
    for (refund, status) in attempts {
        let claim = acquire(kit, a.principal()).await;
        let before = reload(kit, refund.payment_id).await;
        let result = kit
            .store
            .payments()
            .create_refund(&refund, Some(completion(&claim, "x")))
            .await;
        match status {
            None => assert!(
                matches!(result, Err(Error::AmountExceedsRefundable)),
                "{result:?}"
            ),
            Some(status) => assert!(
                matches!(result, Err(Error::InvalidState { status: s }) if s == status),
                "refund of a {status} payment: {result:?}"
            ),
        }
        assert_eq!(
            kit.store
                .payments()
                .refund(refund.id, Principal::Platform)
                .await
                .unwrap(),
            None
        );
        assert_eq!(reload(kit, refund.payment_id).await, before);
        kit.store
            .idempotency()
            .complete(&completion(&claim, "later"))
            .await
            .expect("the refused refund left its claim unfinished");
    }
    // Exactly the rest is still refundable.
    stored_refund(kit, &p, 300).await;
    assert_eq!(reload(kit, p.id).await.refundable(), 0);
    assert_books_clean(kit).await;
}

/// A refund settled `Posted` ends `SUCCESS` with one posting of its amount, DEBIT merchant and
/// CREDIT World, carrying its id; the payment's `amountRefunded` counts it, its status stays.
pub async fn a_posted_refund_moves_money_back_once(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let world = system_account(kit, Currency::USD).await;
    let p = succeeded(kit, &a, 1000).await;
    let world_before = balance(kit, world.id).await;
    let refund = stored_refund(kit, &p, 250).await;

    let (lease, held) = claim_refund(kit, refund.id).await;
    assert_eq!(held.status(), RefundStatus::Processing);
    let busy = kit
        .store
        .settlement()
        .begin_refunds(
            &[refund.id, RefundId::generate()],
            LeaseId::generate(),
            LEASE,
        )
        .await
        .unwrap();
    assert_eq!(busy, vec![RefundBegin::Busy, RefundBegin::Missing]);

    let settlement = refund_posting(&held, lease);
    let done = settle_one(kit, settlement.clone()).await.unwrap();
    let SettleOutcome::Refund(done) = done else {
        panic!("{done:?}")
    };
    assert_eq!(done.status(), RefundStatus::Success);
    assert_eq!(reload_refund(kit, refund.id).await, done);
    let now = reload(kit, p.id).await;
    assert_eq!(
        now.status(),
        PaymentStatus::Success,
        "refunds never change it"
    );
    assert_eq!(
        (
            now.amount_captured(),
            now.amount_refunded(),
            now.amount_reserved()
        ),
        (1000, 250, 250)
    );
    assert_eq!(balance(kit, a.account.id).await, 750);
    assert_eq!(balance(kit, world.id).await, world_before + 250);

    let merchant_entries = entries(kit, a.account.id).await;
    let debit = refund_entries(&merchant_entries, refund.id);
    assert_eq!(debit.len(), 1);
    assert_eq!(
        (debit[0].direction, debit[0].amount, debit[0].payment_id),
        (Direction::Debit, amount(250), p.id)
    );
    let world_entries = entries(kit, world.id).await;
    let credit = refund_entries(&world_entries, refund.id);
    assert_eq!(credit.len(), 1);
    assert_eq!(
        (
            credit[0].direction,
            credit[0].amount,
            credit[0].transaction_id
        ),
        (Direction::Credit, amount(250), debit[0].transaction_id)
    );

    // Settling again writes nothing; claiming again finds it finished.
    assert_eq!(
        settle_one(kit, settlement).await.unwrap(),
        SettleOutcome::NotHeld
    );
    let again = kit
        .store
        .settlement()
        .begin_refunds(&[refund.id], LeaseId::generate(), LEASE)
        .await
        .unwrap();
    assert!(
        matches!(&again[..], [RefundBegin::Finished(r)] if r.status() == RefundStatus::Success)
    );
    assert_eq!(balance(kit, a.account.id).await, 750);
    assert_books_clean(kit).await;
}

/// A refund settled `Failed` posts nothing and releases its reservation: the amount is
/// refundable again.
pub async fn a_failed_refund_releases_its_reservation(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = succeeded(kit, &a, 1000).await;
    let refund = stored_refund(kit, &p, 1000).await;
    assert_eq!(reload(kit, p.id).await.refundable(), 0);
    let (lease, _) = claim_refund(kit, refund.id).await;
    let failed = settle_one(
        kit,
        Settlement::Refund {
            refund_id: refund.id,
            lease,
            result: RefundResult::Failed(RefundFailureReason::ProcessingError),
        },
    )
    .await
    .unwrap();
    assert!(
        matches!(&failed, SettleOutcome::Refund(r) if r.status() == RefundStatus::Failed
            && r.failure_reason() == Some(RefundFailureReason::ProcessingError)),
        "{failed:?}"
    );
    let now = reload(kit, p.id).await;
    assert_eq!(
        (
            now.amount_refunded(),
            now.amount_reserved(),
            now.refundable()
        ),
        (0, 0, 1000)
    );
    assert_eq!(balance(kit, a.account.id).await, 1000);
    assert!(refund_entries(&entries(kit, a.account.id).await, refund.id).is_empty());
    // The whole amount can be refunded again.
    let again = stored_refund(kit, &p, 1000).await;
    assert!(matches!(
        claim_and_post_refund(kit, again.id).await,
        Ok(SettleOutcome::Refund(r)) if r.status() == RefundStatus::Success
    ));
    assert_eq!(balance(kit, a.account.id).await, 0);
    assert_eq!(reload(kit, p.id).await.amount_refunded(), 1000);
    assert_books_clean(kit).await;
}

/// Refund leases behave as payment leases: a stale holder cannot settle, release hands the
/// refund to the next attempt at once, a lease that ran out can be taken over.
pub async fn refund_leases_are_compare_and_set(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = succeeded(kit, &a, 1000).await;
    let refund = stored_refund(kit, &p, 100).await;
    let (first, held) = claim_refund(kit, refund.id).await;
    kit.store
        .settlement()
        .release(Job::Refund(refund.id), LeaseId::generate())
        .await
        .unwrap();
    let busy = kit
        .store
        .settlement()
        .begin_refunds(&[refund.id], LeaseId::generate(), LEASE)
        .await
        .unwrap();
    assert_eq!(
        busy,
        vec![RefundBegin::Busy],
        "releasing another's lease is a no-op"
    );
    kit.store
        .settlement()
        .release(Job::Refund(refund.id), first)
        .await
        .unwrap();
    let (second, _) = claim_refund(kit, refund.id).await;
    assert_eq!(
        settle_one(kit, refund_posting(&held, first)).await.unwrap(),
        SettleOutcome::NotHeld,
        "the released holder no longer settles"
    );
    kit.time.advance(LEASE + Duration::from_secs(1)).await;
    let (third, _) = claim_refund(kit, refund.id).await;
    assert_eq!(
        settle_one(kit, refund_posting(&held, second))
            .await
            .unwrap(),
        SettleOutcome::NotHeld
    );
    assert_eq!(
        refund_result(&settle_one(kit, refund_posting(&held, third)).await),
        Some(RefundStatus::Success)
    );
    assert_eq!(balance(kit, a.account.id).await, 900);
    assert_books_clean(kit).await;
}

/// A posting that is not the refund's (another amount, another refund) is refused and writes
/// nothing.
pub async fn a_refund_posting_that_does_not_match_is_refused(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = succeeded(kit, &a, 1000).await;
    let refund = stored_refund(kit, &p, 300).await;
    let other = stored_refund(kit, &p, 200).await;
    let (lease, _) = claim_refund(kit, refund.id).await;
    let wrong = Settlement::Refund {
        refund_id: refund.id,
        lease,
        result: RefundResult::Posted(Transfer::for_refund(&other, Timestamp::now()).unwrap()),
    };
    assert!(settle_one(kit, wrong).await.is_err());
    assert_eq!(
        reload_refund(kit, refund.id).await.status(),
        RefundStatus::Processing
    );
    assert_eq!(reload(kit, p.id).await.amount_refunded(), 0);
    assert_eq!(balance(kit, a.account.id).await, 1000);
    assert_books_clean(kit).await;
}

/// TEST-MATRIX row 33 at the store: 50 concurrent refunds of 30% each of one `SUCCESS`
/// payment; exactly three fit, the rest are `AmountExceedsRefundable`, and once settled
/// `amountRefunded` is their sum.
pub async fn concurrent_refunds_never_exceed_the_captured_amount(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = succeeded(kit, &a, 1000).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (kit, barrier, p) = (kit.clone(), barrier.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            let refund = refund_of(&p, 300);
            barrier.wait().await;
            let created = kit.store.payments().create_refund(&refund, None).await;
            (refund.id, created)
        }));
    }
    let mut accepted = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (id, Ok(())) => accepted.push(id),
            (_, Err(Error::AmountExceedsRefundable)) => {}
            (_, Err(other)) => panic!("a refused refund is AmountExceedsRefundable: {other:?}"),
        }
    }
    assert_eq!(
        accepted.len(),
        3,
        "exactly the refunds that fit are accepted"
    );
    let now = reload(kit, p.id).await;
    assert_eq!((now.amount_reserved(), now.refundable()), (900, 100));
    let listed = kit
        .store
        .payments()
        .refunds(
            Principal::Platform,
            &RefundFilter {
                payment: Some(p.id),
                ..RefundFilter::default()
            },
            PageRequest {
                limit: PageLimit::new(100).unwrap(),
                starting_after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 3, "refused refunds were not stored");

    let lease = LeaseId::generate();
    let claimed = kit
        .store
        .settlement()
        .begin_refunds(&accepted, lease, LEASE)
        .await
        .unwrap();
    let settlements: Vec<_> = claimed
        .iter()
        .map(|begin| match begin {
            RefundBegin::Claimed(r) => refund_posting(r, lease),
            other => panic!("{other:?}"),
        })
        .collect();
    for result in kit.store.settlement().settle(&settlements).await {
        assert_eq!(
            refund_result(&result),
            Some(RefundStatus::Success),
            "{result:?}"
        );
    }
    let now = reload(kit, p.id).await;
    assert_eq!((now.amount_refunded(), now.amount_reserved()), (900, 900));
    assert_eq!(balance(kit, a.account.id).await, 100);
    assert_books_clean(kit).await;
}

/// TEST-MATRIX row 35: a refund the merchant's balance cannot cover when it is posted (the
/// account was drained by a debit the ports cannot express, e.g. a payout) is refused by the
/// store with [`Invariant::InsufficientFunds`] and writes nothing, while the rest of its batch
/// is written; settled `Failed(InsufficientBalance)` it restores the refundable amount.
///
/// `drain(account, amount)` takes `amount` out of the account's balance directly, as the
/// adapter's own test can (the in-memory store's `testkit_drain`, SQL on PostgreSQL).
pub async fn a_refund_the_balance_cannot_cover_fails_and_restores_the_refundable<D, F>(
    kit: &StoreKit,
    drain: D,
) where
    D: Fn(AccountId, Amount) -> F,
    F: Future<Output = ()>,
{
    let a = onboard(kit, Currency::USD).await;
    let big = succeeded(kit, &a, 1000).await;
    let small = succeeded(kit, &a, 100).await;
    let uncovered = stored_refund(kit, &big, 800).await;
    let covered = stored_refund(kit, &small, 100).await;
    drain(a.account.id, amount(600)).await;
    assert_eq!(balance(kit, a.account.id).await, 500, "the drain took 600");

    let lease = LeaseId::generate();
    let claimed = kit
        .store
        .settlement()
        .begin_refunds(&[uncovered.id, covered.id], lease, LEASE)
        .await
        .unwrap();
    let settlements: Vec<_> = claimed
        .iter()
        .map(|begin| match begin {
            RefundBegin::Claimed(r) => refund_posting(r, lease),
            other => panic!("{other:?}"),
        })
        .collect();
    let results = kit.store.settlement().settle(&settlements).await;
    assert!(
        matches!(
            results[0],
            Err(Error::Invariant(Invariant::InsufficientFunds))
        ),
        "{:?}",
        results[0]
    );
    assert_eq!(refund_result(&results[1]), Some(RefundStatus::Success));
    assert_eq!(
        balance(kit, a.account.id).await,
        400,
        "only the covered one"
    );
    assert!(refund_entries(&entries(kit, a.account.id).await, uncovered.id).is_empty());
    assert_eq!(
        reload_refund(kit, uncovered.id).await.status(),
        RefundStatus::Processing,
        "the refused one is left as it was"
    );
    let before = reload(kit, big.id).await;
    assert_eq!((before.amount_refunded(), before.refundable()), (0, 200));

    let failed = settle_one(
        kit,
        Settlement::Refund {
            refund_id: uncovered.id,
            lease,
            result: RefundResult::Failed(RefundFailureReason::InsufficientBalance),
        },
    )
    .await
    .unwrap();
    assert!(
        matches!(&failed, SettleOutcome::Refund(r) if r.status() == RefundStatus::Failed
            && r.failure_reason() == Some(RefundFailureReason::InsufficientBalance)),
        "{failed:?}"
    );
    let after = reload(kit, big.id).await;
    assert_eq!(
        (
            after.amount_refunded(),
            after.amount_reserved(),
            after.refundable()
        ),
        (0, 0, 1000)
    );
    assert_eq!(balance(kit, a.account.id).await, 400);
    // The drain itself is outside the journal, so only the refund invariants are audited.
    if let Some(audit) = &kit.audit {
        let report = audit.audit(Duration::from_secs(24 * 3600)).await.unwrap();
        assert_eq!(
            (
                report.negative_balances,
                report.refund_posting_mismatch,
                report.refund_over_capture,
                report.illegal_transitions
            ),
            (0, 0, 0, 0),
            "{report}"
        );
    }
}

/// One `settle` call mixing charges, an authorization, a capture, refunds posted and failed,
/// a stale lease and one refused posting: the refused one writes nothing, every other is
/// written, and balances add up.
pub async fn a_mixed_batch_writes_all_but_the_refused(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let world = system_account(kit, Currency::USD).await;
    let refunded = succeeded(kit, &a, 1000).await;
    let to_capture = authorized(kit, &a, 800).await;
    kit.store
        .payments()
        .request_capture(
            to_capture.id,
            amount(500),
            Timestamp::now(),
            Duration::from_secs(3600),
            None,
        )
        .await
        .unwrap();
    let charge =
        stored_payment_with(kit, &a, 300, CaptureMethod::Automatic, Metadata::default()).await;
    let manual =
        stored_payment_with(kit, &a, 200, CaptureMethod::Manual, Metadata::default()).await;
    let declined =
        stored_payment_with(kit, &a, 50, CaptureMethod::Automatic, Metadata::default()).await;
    let poisoned =
        stored_payment_with(kit, &a, 70, CaptureMethod::Automatic, Metadata::default()).await;
    let stray =
        stored_payment_with(kit, &a, 90, CaptureMethod::Automatic, Metadata::default()).await;
    let good_refund = stored_refund(kit, &refunded, 400).await;
    let failed_refund = stored_refund(kit, &refunded, 100).await;
    let balance_before = balance(kit, a.account.id).await;
    let world_before = balance(kit, world.id).await;

    let lease = LeaseId::generate();
    let ids = [
        to_capture.id,
        charge.id,
        manual.id,
        declined.id,
        poisoned.id,
        stray.id,
    ];
    let begun = kit
        .store
        .settlement()
        .begin_payments(&ids, lease, LEASE)
        .await
        .unwrap();
    let held: Vec<_> = begun
        .into_iter()
        .map(|b| match b {
            crate::ports::BeginOutcome::Claimed(p) => p,
            other => panic!("{other:?}"),
        })
        .collect();
    let refunds = kit
        .store
        .settlement()
        .begin_refunds(&[good_refund.id, failed_refund.id], lease, LEASE)
        .await
        .unwrap();
    let RefundBegin::Claimed(good_held) = &refunds[0] else {
        panic!("{refunds:?}")
    };
    let pay = |id: PaymentId, result| Settlement::Payment {
        payment_id: id,
        lease,
        result,
    };
    let batch = vec![
        posting(&held[0], lease),
        refund_posting(good_held, lease),
        posting(&held[1], lease),
        pay(manual.id, SettlementResult::Authorized),
        // The charge's transfer under another payment: refused.
        pay(
            poisoned.id,
            SettlementResult::Posted(Transfer::for_payment(&held[1], Timestamp::now()).unwrap()),
        ),
        pay(
            declined.id,
            SettlementResult::Failed(FailureReason::CardDeclined),
        ),
        Settlement::Refund {
            refund_id: failed_refund.id,
            lease,
            result: RefundResult::Failed(RefundFailureReason::ProcessingError),
        },
        // Not held under this lease: nothing written.
        Settlement::Payment {
            payment_id: stray.id,
            lease: LeaseId::generate(),
            result: SettlementResult::Failed(FailureReason::CardDeclined),
        },
    ];
    let results = kit.store.settlement().settle(&batch).await;
    assert_eq!(results.len(), batch.len());
    let status = |i: usize| match &results[i] {
        Ok(SettleOutcome::Payment(p)) => format!("{}", p.status()),
        Ok(SettleOutcome::Refund(r)) => format!("refund {}", r.status()),
        other => format!("{other:?}"),
    };
    let expected = [
        (0, PaymentStatus::Success.to_string()),
        (1, format!("refund {}", RefundStatus::Success)),
        (2, PaymentStatus::Success.to_string()),
        (3, PaymentStatus::Authorized.to_string()),
        (5, PaymentStatus::Failed.to_string()),
        (6, format!("refund {}", RefundStatus::Failed)),
    ];
    for (i, want) in expected {
        assert_eq!(status(i), want, "settlement {i}: {:?}", results[i]);
    }
    assert!(results[4].is_err(), "{:?}", results[4]);
    assert_eq!(results[7].as_ref().unwrap(), &SettleOutcome::NotHeld);

    assert_eq!(
        reload(kit, poisoned.id).await.status(),
        PaymentStatus::Processing
    );
    assert_eq!(
        reload(kit, stray.id).await.status(),
        PaymentStatus::Processing
    );
    assert_eq!(reload(kit, to_capture.id).await.amount_captured(), 500);
    let now = reload(kit, refunded.id).await;
    assert_eq!((now.amount_refunded(), now.amount_reserved()), (400, 400));
    // +500 capture, +300 charge, -400 refund.
    assert_eq!(balance(kit, a.account.id).await, balance_before + 400);
    assert_eq!(balance(kit, world.id).await, world_before - 400);
    // The refused and the stray settle on their own afterwards.
    let fixed = settle_one(kit, posting(&held[4], lease)).await.unwrap();
    assert!(matches!(fixed, SettleOutcome::Payment(p) if p.status() == PaymentStatus::Success));
    let stray_done = settle_one(
        kit,
        Settlement::Payment {
            payment_id: stray.id,
            lease,
            result: SettlementResult::Failed(FailureReason::CardDeclined),
        },
    )
    .await
    .unwrap();
    assert!(matches!(stray_done, SettleOutcome::Payment(p) if p.status() == PaymentStatus::Failed));
    assert_books_clean(kit).await;
}

/// A partially captured payment refunds at most what was captured, not what was authorized.
pub async fn refunds_are_bounded_by_the_captured_amount(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = authorized(kit, &a, 1000).await;
    kit.store
        .payments()
        .request_capture(
            p.id,
            amount(600),
            Timestamp::now(),
            Duration::from_secs(3600),
            None,
        )
        .await
        .unwrap();
    let captured = super::flows::claim_and_post(kit, p.id).await;
    assert_eq!(
        (captured.amount_captured(), captured.refundable()),
        (600, 600)
    );
    let over = kit
        .store
        .payments()
        .create_refund(&refund_of(&captured, 601), None)
        .await;
    assert!(
        matches!(over, Err(Error::AmountExceedsRefundable)),
        "{over:?}"
    );
    let all = stored_refund(kit, &captured, 600).await;
    assert!(matches!(
        claim_and_post_refund(kit, all.id).await,
        Ok(SettleOutcome::Refund(r)) if r.status() == RefundStatus::Success
    ));
    let now = reload(kit, p.id).await;
    assert_eq!((now.amount_refunded(), now.refundable()), (600, 0));
    assert_eq!(balance(kit, a.account.id).await, 0);
    assert_books_clean(kit).await;
}

/// A batch naming one payment or refund twice settles it once: the second is `NotHeld`.
pub async fn a_batch_naming_one_item_twice_settles_it_once(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = succeeded(kit, &a, 1000).await;
    let refund = stored_refund(kit, &p, 300).await;
    let charge =
        stored_payment_with(kit, &a, 200, CaptureMethod::Automatic, Metadata::default()).await;
    let lease = LeaseId::generate();
    let begun = kit
        .store
        .settlement()
        .begin_payments(&[charge.id], lease, LEASE)
        .await
        .unwrap();
    let [crate::ports::BeginOutcome::Claimed(held)] = &begun[..] else {
        panic!("{begun:?}")
    };
    let claimed = kit
        .store
        .settlement()
        .begin_refunds(&[refund.id], lease, LEASE)
        .await
        .unwrap();
    let [RefundBegin::Claimed(held_refund)] = &claimed[..] else {
        panic!("{claimed:?}")
    };
    let batch = [
        posting(held, lease),
        refund_posting(held_refund, lease),
        posting(held, lease),
        refund_posting(held_refund, lease),
    ];
    let results = kit.store.settlement().settle(&batch).await;
    assert!(
        matches!(&results[0], Ok(SettleOutcome::Payment(p)) if p.status() == PaymentStatus::Success),
        "{results:?}"
    );
    assert_eq!(refund_result(&results[1]), Some(RefundStatus::Success));
    assert!(
        matches!(results[2], Ok(SettleOutcome::NotHeld)),
        "{results:?}"
    );
    assert!(
        matches!(results[3], Ok(SettleOutcome::NotHeld)),
        "{results:?}"
    );
    assert_eq!(balance(kit, a.account.id).await, 1000 + 200 - 300);
    assert_eq!(reload(kit, p.id).await.amount_refunded(), 300);
    assert_books_clean(kit).await;
}

/// A refund that disagrees with its payment (accounts, owner, currency) or names no payment
/// is refused, and reserves nothing.
pub async fn create_refund_refuses_inconsistent_references(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let b = onboard(kit, Currency::USD).await;
    let p = succeeded(kit, &a, 1000).await;
    let theirs = succeeded(kit, &b, 1000).await;
    let mut other_account = refund_of(&p, 10).into_inner();
    other_account.merchant_account = b.account.id;
    let mut other_owner = refund_of(&p, 10).into_inner();
    other_owner.owner = theirs.owner;
    let mut other_currency = refund_of(&p, 10).into_inner();
    other_currency.currency = Currency::EUR;
    let mut other_funding = refund_of(&p, 10).into_inner();
    other_funding.funding_account = a.account.id;
    let mut no_payment = refund_of(&p, 10).into_inner();
    no_payment.payment_id = PaymentId::generate();
    for bad in [
        other_account,
        other_owner,
        other_currency,
        other_funding,
        no_payment,
    ] {
        // Vouched for as core never would: the store's own guards must refuse it.
        let bad = Fresh::new(bad);
        assert!(
            kit.store
                .payments()
                .create_refund(&bad, None)
                .await
                .is_err(),
            "accepted {bad:?}"
        );
        assert_eq!(
            kit.store
                .payments()
                .refund(bad.id, Principal::Platform)
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(reload(kit, p.id).await.amount_reserved(), 0);
    assert_eq!(reload(kit, theirs.id).await.amount_reserved(), 0);
    assert_books_clean(kit).await;
}

/// Sixteen workers racing to claim and post one refund: it is posted once.
pub async fn concurrent_settlement_of_one_refund_happens_once(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = succeeded(kit, &a, 1000).await;
    let refund = stored_refund(kit, &p, 700).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (kit, barrier, id) = (kit.clone(), barrier.clone(), refund.id);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let lease = LeaseId::generate();
            let begun = kit
                .store
                .settlement()
                .begin_refunds(&[id], lease, LEASE)
                .await
                .unwrap();
            let [RefundBegin::Claimed(held)] = &begun[..] else {
                return false;
            };
            let settled = settle_one(&kit, refund_posting(held, lease)).await;
            refund_result(&settled) == Some(RefundStatus::Success)
        }));
    }
    let mut settled = 0;
    for task in tasks {
        settled += usize::from(task.await.unwrap());
    }
    assert_eq!(settled, 1);
    assert_eq!(balance(kit, a.account.id).await, 300);
    assert_eq!(reload(kit, p.id).await.amount_refunded(), 700);
    assert_books_clean(kit).await;
}

/// A refund asked while its payment's capture is being posted: it is refused
/// (`InvalidState`, the payment still `PROCESSING`) or accepted against the captured amount,
/// never anything in between.
pub async fn a_refund_racing_the_capture_posting_sees_one_state(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    for _ in 0..10 {
        let p = authorized(kit, &a, 1000).await;
        kit.store
            .payments()
            .request_capture(
                p.id,
                amount(800),
                Timestamp::now(),
                Duration::from_secs(3600),
                None,
            )
            .await
            .unwrap();
        let (lease, held) = claim_payment(kit, p.id).await;
        let refund = refund_of(&held, 800);
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let (k1, b1) = (kit.clone(), barrier.clone());
        let post = tokio::spawn(async move {
            b1.wait().await;
            settle_one(&k1, posting(&held, lease)).await
        });
        let (k2, b2, r) = (kit.clone(), barrier.clone(), refund.clone());
        let ask = tokio::spawn(async move {
            b2.wait().await;
            k2.store.payments().create_refund(&r, None).await
        });
        let posted = post.await.unwrap();
        assert!(
            matches!(&posted, Ok(SettleOutcome::Payment(done)) if done.amount_captured() == 800),
            "{posted:?}"
        );
        let asked = ask.await.unwrap();
        let now = reload(kit, p.id).await;
        match asked {
            Ok(()) => assert_eq!((now.amount_reserved(), now.refundable()), (800, 0)),
            Err(Error::InvalidState {
                status: PaymentStatus::Processing,
            }) => assert_eq!((now.amount_reserved(), now.refundable()), (0, 800)),
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_books_clean(kit).await;
}

/// Batches that only add to balances (charges) and batches whose refunds need the balance to
/// cover them settle at the same time into the same accounts, in every combination of two
/// merchants: every batch is written (none deadlocks or times out on another's locks), and
/// each balance is exactly its charges less its refunds.
pub async fn charge_and_refund_batches_settle_together(kit: &StoreKit) {
    let merchants = [
        onboard(kit, Currency::USD).await,
        onboard(kit, Currency::USD).await,
    ];
    let mut expected = [0i64; 2];
    for round in 0..3 {
        let mut batches: Vec<Vec<Settlement>> = Vec::new();
        for shape in 0..12 {
            // Shapes: charges into one merchant, refunds of one, and both across the two.
            let (charges, refunds): (&[usize], &[usize]) = match shape % 4 {
                0 => (&[0, 0], &[]),
                1 => (&[], &[1]),
                2 => (&[0, 1], &[]),
                _ => (&[1], &[0]),
            };
            let mut batch = Vec::new();
            for &m in charges {
                let p = stored_payment_with(
                    kit,
                    &merchants[m],
                    100,
                    CaptureMethod::Automatic,
                    Metadata::default(),
                )
                .await;
                let (lease, held) = claim_payment(kit, p.id).await;
                batch.push(posting(&held, lease));
                expected[m] += 100;
            }
            for &m in refunds {
                let paid = succeeded(kit, &merchants[m], 100).await;
                let refund = stored_refund(kit, &paid, 40).await;
                let (lease, held) = claim_refund(kit, refund.id).await;
                batch.push(refund_posting(&held, lease));
                expected[m] += 60;
            }
            batches.push(batch);
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(batches.len()));
        let tasks: Vec<_> = batches
            .into_iter()
            .map(|batch| {
                let (kit, barrier) = (kit.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    kit.store.settlement().settle(&batch).await
                })
            })
            .collect();
        for task in tasks {
            for result in task.await.unwrap() {
                assert!(
                    matches!(
                        &result,
                        Ok(SettleOutcome::Payment(p)) if p.status() == PaymentStatus::Success
                    ) || refund_result(&result) == Some(RefundStatus::Success),
                    "round {round}: every settlement is written: {result:?}"
                );
            }
        }
        for (merchant, expected) in merchants.iter().zip(expected) {
            assert_eq!(
                balance(kit, merchant.account.id).await,
                expected,
                "round {round}: charges less refunds"
            );
        }
    }
    assert_books_clean(kit).await;
}

/// Generates the refund conformance tests for a `StoreKit` expression (row 35, which needs a
/// drain, has its own macro: [`crate::refund_drain_conformance`]).
#[macro_export]
macro_rules! refund_conformance {
    ($kit:expr) => {
        $crate::conformance_tests!(
            refunds,
            $kit,
            [
                creating_a_refund_reserves_its_amount,
                refunds_beyond_the_refundable_or_of_unfinished_payments_are_refused,
                a_posted_refund_moves_money_back_once,
                a_failed_refund_releases_its_reservation,
                refund_leases_are_compare_and_set,
                a_refund_posting_that_does_not_match_is_refused,
                concurrent_refunds_never_exceed_the_captured_amount,
                a_mixed_batch_writes_all_but_the_refused,
                refunds_are_bounded_by_the_captured_amount,
                a_batch_naming_one_item_twice_settles_it_once,
                create_refund_refuses_inconsistent_references,
                concurrent_settlement_of_one_refund_happens_once,
                a_refund_racing_the_capture_posting_sees_one_state,
                charge_and_refund_batches_settle_together,
            ]
        );
    };
}

/// Generates TEST-MATRIX row 35's test. `$setup` is an expression (usually an `async` block)
/// producing `(kit, drain)`, where `drain(account_id, amount)` returns a future that takes
/// `amount` out of the account's balance directly.
#[macro_export]
macro_rules! refund_drain_conformance {
    ($setup:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_refund_the_balance_cannot_cover_fails_and_restores_the_refundable() {
            let (kit, drain) = $setup;
            $crate::testkit::refunds::a_refund_the_balance_cannot_cover_fails_and_restores_the_refundable(
                &kit, drain,
            )
            .await;
        }
    };
}
