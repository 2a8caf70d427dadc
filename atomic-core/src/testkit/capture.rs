//! Conformance cases for authorize-now-capture-later (API.md v1.1): authorization, capture
//! requests, cancellation and expiry, as [`crate::ports::PaymentStore`] and
//! [`crate::ports::SettlementStore`] decide them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::flows::{
    LEASE, amount, authorized, claim_and_post, claim_payment, posting, reload, settle_one,
    stored_payment_with, succeeded,
};
use super::{
    StoreKit, acquire, assert_books_clean, completion, fingerprint, onboard, policy,
    taken_by_another,
};
use crate::error::{Error, Invariant};
use crate::idempotency::{Claim, ClaimOutcome};
use crate::ledger::{Direction, Transfer};
use crate::metadata::Metadata;
use crate::money::Currency;
use crate::page::{CreatedRange, PageLimit, PageRequest};
use crate::payment::{
    CancellationReason, CaptureMethod, Payment, PaymentParts, PaymentState, PaymentStatus,
};
use crate::ports::{BeginOutcome, LeaseId, SettleOutcome, Settlement, SettlementResult};
use crate::principal::Principal;
use crate::time::Timestamp;
use crate::{AccountId, PaymentId};

/// The authorization TTL the cases use.
const TTL: Duration = Duration::from_secs(3600);

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

async fn entry_count(kit: &StoreKit, account: AccountId) -> usize {
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
        .len()
}

/// Asserts `claim` was not completed: its key still answers "in progress", and completing it
/// now still works.
async fn assert_not_completed(kit: &StoreKit, claim: &Claim) {
    let again = kit
        .store
        .idempotency()
        .claim(claim.scope, &claim.key, fingerprint(1), policy())
        .await
        .unwrap();
    assert!(
        matches!(again, ClaimOutcome::InProgress),
        "a refused decision must not complete its idempotency claim: {again:?}"
    );
    kit.store
        .idempotency()
        .complete(&completion(claim, "later"))
        .await
        .unwrap();
}

/// Asserts a replay of `claim`'s key answers `body`.
async fn assert_replays(kit: &StoreKit, claim: &Claim, body: &str) {
    let replay = kit
        .store
        .idempotency()
        .claim(claim.scope, &claim.key, fingerprint(1), policy())
        .await
        .unwrap();
    assert!(
        matches!(&replay, ClaimOutcome::Replay(r) if r.body == body),
        "{replay:?}"
    );
}

/// A copy of `p` that claims to be an automatic charge still processing, so that its transfer
/// posts the whole amount: what a buggy worker would post instead of the capture.
fn as_whole_charge(p: &Payment) -> Payment {
    Payment::restore(PaymentParts {
        id: p.id,
        merchant_account: p.merchant_account,
        funding_account: p.funding_account,
        owner: p.owner,
        amount: p.amount,
        currency: p.currency,
        source: p.source.clone(),
        description: p.description.clone(),
        capture_method: CaptureMethod::Automatic,
        metadata: p.metadata.clone(),
        idempotency_key: p.idempotency_key.clone(),
        created_by: p.created_by,
        created_at: p.created_at,
        state: PaymentState::Processing,
        amount_refunded: 0,
        amount_reserved: 0,
        updated_at: p.updated_at(),
    })
    .unwrap()
}

/// Manual capture end to end: authorizing posts nothing; a partial capture is requested,
/// claimed and posted; the payment ends `SUCCESS` with `amountCaptured` and one posting of it.
pub async fn a_partial_capture_posts_only_the_captured_amount(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = authorized(kit, &a, 1000).await;
    assert_eq!(p.amount_captured(), 0);
    assert_eq!(
        balance(kit, a.account.id).await,
        0,
        "authorizing posts nothing"
    );
    assert_eq!(entry_count(kit, a.account.id).await, 0);
    let finished = kit
        .store
        .settlement()
        .begin_payments(&[p.id], LeaseId::generate(), LEASE)
        .await
        .unwrap();
    assert!(
        matches!(&finished[..], [BeginOutcome::Finished(f)] if f.status() == PaymentStatus::Authorized),
        "an authorization nobody asked to capture is no work: {finished:?}"
    );

    let claim = acquire(kit, a.principal()).await;
    let at = p.updated_at().saturating_add(Duration::from_millis(7));
    let requested = kit
        .store
        .payments()
        .request_capture(
            p.id,
            amount(600),
            at,
            TTL,
            Some(completion(&claim, "capture")),
        )
        .await
        .unwrap();
    assert_eq!(requested.updated_at(), at, "stamped as the caller answered");
    assert_eq!(requested.status(), PaymentStatus::Processing);
    assert_eq!(requested.state(), PaymentState::Capturing(amount(600)));
    assert_eq!(reload(kit, p.id).await, requested);
    assert_replays(kit, &claim, "capture").await;
    assert_eq!(
        balance(kit, a.account.id).await,
        0,
        "a request moves no money"
    );

    let (lease, held) = claim_payment(kit, p.id).await;
    assert_eq!(held.amount_to_post(), Some(amount(600)));
    // Posting the whole authorization instead of the capture is refused, and writes nothing.
    let whole = Settlement::Payment {
        payment_id: p.id,
        lease,
        result: SettlementResult::Posted(
            Transfer::for_payment(&as_whole_charge(&held), Timestamp::now()).unwrap(),
        ),
    };
    let refused = settle_one(kit, whole).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(reload(kit, p.id).await.status(), PaymentStatus::Processing);
    assert_eq!(balance(kit, a.account.id).await, 0);

    let done = match settle_one(kit, posting(&held, lease)).await {
        Ok(SettleOutcome::Payment(done)) => done,
        other => panic!("{other:?}"),
    };
    assert_eq!(done.status(), PaymentStatus::Success);
    assert_eq!(done.amount_captured(), 600);
    assert_eq!(done.refundable(), 600);
    assert_eq!(reload(kit, p.id).await, done);
    assert_eq!(balance(kit, a.account.id).await, 600);
    let page = PageRequest {
        limit: PageLimit::new(10).unwrap(),
        starting_after: None,
    };
    let entries = kit
        .store
        .accounts()
        .entries(a.account.id, a.principal(), CreatedRange::default(), page)
        .await
        .unwrap()
        .unwrap()
        .items;
    assert_eq!(entries.len(), 1);
    let credit = &entries[0];
    assert_eq!(
        (
            credit.direction,
            credit.amount,
            credit.payment_id,
            credit.refund_id
        ),
        (Direction::Credit, amount(600), p.id, None)
    );
    assert_books_clean(kit).await;
}

/// A capture of the whole authorization, asked without a completion.
pub async fn a_full_capture_posts_the_whole_amount(kit: &StoreKit) {
    let a = onboard(kit, Currency::EUR).await;
    let p = authorized(kit, &a, 2500).await;
    kit.store
        .payments()
        .request_capture(p.id, amount(2500), Timestamp::now(), TTL, None)
        .await
        .unwrap();
    let done = claim_and_post(kit, p.id).await;
    assert_eq!(done.amount_captured(), 2500);
    assert_eq!(balance(kit, a.account.id).await, 2500);
    assert_books_clean(kit).await;
}

/// Capturing more than was authorized is refused and changes nothing.
pub async fn a_capture_above_the_authorization_is_refused(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = authorized(kit, &a, 1000).await;
    let claim = acquire(kit, a.principal()).await;
    let refused = kit
        .store
        .payments()
        .request_capture(
            p.id,
            amount(1001),
            Timestamp::now(),
            TTL,
            Some(completion(&claim, "x")),
        )
        .await;
    assert!(
        matches!(refused, Err(Error::AmountExceedsCapturable)),
        "{refused:?}"
    );
    assert_eq!(reload(kit, p.id).await, p, "nothing changed");
    assert_not_completed(kit, &claim).await;
    // The authorization can still be captured in full.
    let ok = kit
        .store
        .payments()
        .request_capture(p.id, amount(1000), Timestamp::now(), TTL, None)
        .await
        .unwrap();
    assert_eq!(ok.state(), PaymentState::Capturing(amount(1000)));
    assert_books_clean(kit).await;
}

/// Capture and cancel need an `AUTHORIZED` payment: any other state is `InvalidState` naming
/// it, and nothing is written (the idempotency completion included).
pub async fn capture_and_cancel_need_an_authorized_payment(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let pending =
        stored_payment_with(kit, &a, 100, CaptureMethod::Manual, Metadata::default()).await;
    let processing =
        stored_payment_with(kit, &a, 200, CaptureMethod::Manual, Metadata::default()).await;
    claim_payment(kit, processing.id).await;
    let success = succeeded(kit, &a, 300).await;
    let capturing = authorized(kit, &a, 400).await;
    kit.store
        .payments()
        .request_capture(capturing.id, amount(400), Timestamp::now(), TTL, None)
        .await
        .unwrap();
    let canceled = authorized(kit, &a, 500).await;
    kit.store
        .payments()
        .cancel(
            canceled.id,
            CancellationReason::Requested,
            Timestamp::now(),
            None,
        )
        .await
        .unwrap();
    let failed =
        stored_payment_with(kit, &a, 600, CaptureMethod::Manual, Metadata::default()).await;
    let (lease, _) = claim_payment(kit, failed.id).await;
    settle_one(
        kit,
        Settlement::Payment {
            payment_id: failed.id,
            lease,
            result: SettlementResult::Failed(crate::payment::FailureReason::CardDeclined),
        },
    )
    .await
    .unwrap();

    let cases = [
        (pending.id, PaymentStatus::Pending),
        (processing.id, PaymentStatus::Processing),
        (success.id, PaymentStatus::Success),
        (capturing.id, PaymentStatus::Processing),
        (canceled.id, PaymentStatus::Canceled),
        (failed.id, PaymentStatus::Failed),
    ];
    for (id, status) in cases {
        let before = reload(kit, id).await;
        let claim = acquire(kit, a.principal()).await;
        let capture = kit
            .store
            .payments()
            .request_capture(
                id,
                amount(50),
                Timestamp::now(),
                TTL,
                Some(completion(&claim, "capture")),
            )
            .await;
        assert!(
            matches!(capture, Err(Error::InvalidState { status: s }) if s == status),
            "capture of a {status} payment: {capture:?}"
        );
        let cancel = kit
            .store
            .payments()
            .cancel(
                id,
                CancellationReason::Requested,
                Timestamp::now(),
                Some(completion(&claim, "cancel")),
            )
            .await;
        assert!(
            matches!(cancel, Err(Error::InvalidState { status: s }) if s == status),
            "cancel of a {status} payment: {cancel:?}"
        );
        assert_eq!(reload(kit, id).await, before, "nothing changed");
        assert_not_completed(kit, &claim).await;
    }
    assert_eq!(balance(kit, a.account.id).await, 300);
    assert_books_clean(kit).await;
}

/// Cancel: `AUTHORIZED -> CANCELED` (requested) with its completion; once only.
pub async fn cancel_ends_an_authorization_once(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = authorized(kit, &a, 1000).await;
    let claim = acquire(kit, a.principal()).await;
    let canceled = kit
        .store
        .payments()
        .cancel(
            p.id,
            CancellationReason::Requested,
            p.updated_at().saturating_add(Duration::from_millis(7)),
            Some(completion(&claim, "canceled")),
        )
        .await
        .unwrap();
    assert_eq!(
        canceled.updated_at(),
        p.updated_at().saturating_add(Duration::from_millis(7)),
        "stamped as the caller answered"
    );
    assert_eq!(canceled.status(), PaymentStatus::Canceled);
    assert_eq!(
        canceled.cancellation_reason(),
        Some(CancellationReason::Requested)
    );
    assert_eq!(reload(kit, p.id).await, canceled);
    assert_replays(kit, &claim, "canceled").await;

    let again = kit
        .store
        .payments()
        .cancel(p.id, CancellationReason::Requested, Timestamp::now(), None)
        .await;
    assert!(
        matches!(
            again,
            Err(Error::InvalidState {
                status: PaymentStatus::Canceled
            })
        ),
        "{again:?}"
    );
    let capture = kit
        .store
        .payments()
        .request_capture(p.id, amount(1000), Timestamp::now(), TTL, None)
        .await;
    assert!(
        matches!(
            capture,
            Err(Error::InvalidState {
                status: PaymentStatus::Canceled
            })
        ),
        "{capture:?}"
    );
    let begun = kit
        .store
        .settlement()
        .begin_payments(&[p.id], LeaseId::generate(), LEASE)
        .await
        .unwrap();
    assert!(
        matches!(&begun[..], [BeginOutcome::Finished(f)] if f.status() == PaymentStatus::Canceled),
        "{begun:?}"
    );
    assert_eq!(balance(kit, a.account.id).await, 0);
    assert_eq!(entry_count(kit, a.account.id).await, 0);
    assert_books_clean(kit).await;
}

/// Capture racing cancel on one authorization: exactly one wins, the other is
/// `InvalidState`.
pub async fn capture_and_cancel_race_with_one_winner(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    for _ in 0..10 {
        let p = authorized(kit, &a, 1000).await;
        let barrier = Arc::new(tokio::sync::Barrier::new(4));
        let mut tasks = Vec::new();
        for i in 0..4 {
            let (kit, barrier) = (kit.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let payments = kit.store.payments();
                if i % 2 == 0 {
                    payments
                        .request_capture(p.id, amount(700), Timestamp::now(), TTL, None)
                        .await
                } else {
                    payments
                        .cancel(p.id, CancellationReason::Requested, Timestamp::now(), None)
                        .await
                }
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(won) => winners.push(won.status()),
                Err(Error::InvalidState { .. }) => {}
                Err(other) => panic!("a loser must be InvalidState, got {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one decision wins: {winners:?}");
        assert_eq!(reload(kit, p.id).await.status(), winners[0]);
        if winners[0] == PaymentStatus::Processing {
            claim_and_post(kit, p.id).await;
        }
    }
    assert_books_clean(kit).await;
}

/// Expiry: authorizations older than the TTL are canceled `expired`, each exactly once
/// however many sweeps run at once, never before the TTL, and never one whose capture was
/// asked; a capture after the TTL is refused even before the sweep ran.
pub async fn expiry_cancels_old_authorizations_exactly_once(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let mut old = Vec::new();
    for i in 0..6 {
        old.push(authorized(kit, &a, 100 + i).await.id);
    }
    let late = authorized(kit, &a, 900).await;
    let captured = authorized(kit, &a, 800).await;
    let capturing = authorized(kit, &a, 700).await;
    kit.store
        .payments()
        .request_capture(captured.id, amount(800), Timestamp::now(), TTL, None)
        .await
        .unwrap();
    claim_and_post(kit, captured.id).await;
    kit.store
        .payments()
        .request_capture(capturing.id, amount(500), Timestamp::now(), TTL, None)
        .await
        .unwrap();
    let ours: HashSet<PaymentId> = old
        .iter()
        .copied()
        .chain([late.id, captured.id, capturing.id])
        .collect();
    let expire = |kit: StoreKit, limit: usize| async move {
        kit.store
            .settlement()
            .expire_authorizations(TTL, limit)
            .await
            .unwrap()
    };

    assert!(
        expire(kit.clone(), 1000)
            .await
            .iter()
            .all(|p| !ours.contains(&p.id)),
        "nothing expires before its TTL"
    );
    kit.time.advance(TTL + Duration::from_secs(1)).await;

    let refused = kit
        .store
        .payments()
        .request_capture(late.id, amount(900), Timestamp::now(), TTL, None)
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::InvalidState {
                status: PaymentStatus::Authorized
            })
        ),
        "a capture after the TTL is refused before the sweep: {refused:?}"
    );
    // Refused means unchanged (compared by state and amounts: a store whose time travel
    // ages stored times moves the timestamps, not the payment).
    let after = reload(kit, late.id).await;
    assert_eq!(
        (
            after.state(),
            after.amount_reserved(),
            after.amount_refunded()
        ),
        (late.state(), late.amount_reserved(), late.amount_refunded())
    );

    // A limited sweep takes at most its limit.
    let first = expire(kit.clone(), 2).await;
    assert!(first.len() <= 2, "{first:?}");
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (kit, barrier) = (kit.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut all = Vec::new();
            // Seven payments, three a call: a sweep that keeps returning work is a bug.
            for _ in 0..10 {
                let got = expire(kit.clone(), 3).await;
                if got.is_empty() {
                    return all;
                }
                all.extend(got);
            }
            panic!("expiry keeps returning payments: {all:?}")
        }));
    }
    let mut expired = first;
    for task in tasks {
        expired.extend(task.await.unwrap());
    }
    let mut seen = HashSet::new();
    for p in &expired {
        assert!(seen.insert(p.id), "{} expired twice", p.id);
        assert_eq!(p.status(), PaymentStatus::Canceled);
        assert_eq!(p.cancellation_reason(), Some(CancellationReason::Expired));
    }
    let expected: HashSet<PaymentId> = old.iter().copied().chain([late.id]).collect();
    assert_eq!(
        seen.intersection(&ours).copied().collect::<HashSet<_>>(),
        expected,
        "every old authorization expires once; captured ones never"
    );
    for id in &expected {
        let p = reload(kit, *id).await;
        assert_eq!(p.cancellation_reason(), Some(CancellationReason::Expired));
    }
    assert!(expire(kit.clone(), 1000).await.is_empty());
    let after = kit
        .store
        .payments()
        .request_capture(late.id, amount(900), Timestamp::now(), TTL, None)
        .await;
    assert!(
        matches!(
            after,
            Err(Error::InvalidState {
                status: PaymentStatus::Canceled
            })
        ),
        "{after:?}"
    );
    assert_eq!(
        reload(kit, captured.id).await.status(),
        PaymentStatus::Success
    );
    // The capture asked before the TTL still settles.
    let done = claim_and_post(kit, capturing.id).await;
    assert_eq!(done.amount_captured(), 500);
    assert_eq!(balance(kit, a.account.id).await, 1300);
    assert_books_clean(kit).await;
}

/// An authorization's capture fails (the card network refuses it): the payment ends `FAILED`
/// and nothing is posted.
pub async fn a_failed_capture_posts_nothing(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = authorized(kit, &a, 1000).await;
    kit.store
        .payments()
        .request_capture(p.id, amount(300), Timestamp::now(), TTL, None)
        .await
        .unwrap();
    let (lease, _) = claim_payment(kit, p.id).await;
    let failed = settle_one(
        kit,
        Settlement::Payment {
            payment_id: p.id,
            lease,
            result: SettlementResult::Failed(crate::payment::FailureReason::ProcessingError),
        },
    )
    .await
    .unwrap();
    assert!(
        matches!(&failed, SettleOutcome::Payment(f) if f.status() == PaymentStatus::Failed && f.amount_captured() == 0),
        "{failed:?}"
    );
    assert_eq!(balance(kit, a.account.id).await, 0);
    assert_books_clean(kit).await;
}

/// An automatic payment cannot be settled `Authorized`, and a manual one cannot be posted
/// before its capture is asked.
pub async fn settlement_follows_the_capture_method(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let auto =
        stored_payment_with(kit, &a, 100, CaptureMethod::Automatic, Metadata::default()).await;
    let (lease, _) = claim_payment(kit, auto.id).await;
    let refused = settle_one(
        kit,
        Settlement::Payment {
            payment_id: auto.id,
            lease,
            result: SettlementResult::Authorized,
        },
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        reload(kit, auto.id).await.status(),
        PaymentStatus::Processing
    );

    let manual =
        stored_payment_with(kit, &a, 200, CaptureMethod::Manual, Metadata::default()).await;
    let (lease, held) = claim_payment(kit, manual.id).await;
    assert_eq!(
        held.amount_to_post(),
        None,
        "nothing to post before a capture"
    );
    let posted = settle_one(
        kit,
        Settlement::Payment {
            payment_id: manual.id,
            lease,
            result: SettlementResult::Posted(
                Transfer::for_payment(&as_whole_charge(&held), Timestamp::now()).unwrap(),
            ),
        },
    )
    .await;
    assert!(posted.is_err(), "{posted:?}");
    assert_eq!(
        reload(kit, manual.id).await.status(),
        PaymentStatus::Processing
    );
    assert_eq!(balance(kit, a.account.id).await, 0);
    assert_books_clean(kit).await;
}

/// A capture, cancel or refund whose idempotency claim was lost (taken over, released) is
/// `IdempotencyClaimLost` and writes nothing.
pub async fn decisions_whose_claim_was_lost_write_nothing(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = authorized(kit, &a, 1000).await;
    let lost = taken_by_another(kit, a.principal()).await;
    let capture = kit
        .store
        .payments()
        .request_capture(
            p.id,
            amount(500),
            Timestamp::now(),
            TTL,
            Some(completion(&lost, "x")),
        )
        .await;
    assert!(
        matches!(capture, Err(Error::IdempotencyClaimLost)),
        "{capture:?}"
    );
    let cancel = kit
        .store
        .payments()
        .cancel(
            p.id,
            CancellationReason::Requested,
            Timestamp::now(),
            Some(completion(&lost, "x")),
        )
        .await;
    assert!(
        matches!(cancel, Err(Error::IdempotencyClaimLost)),
        "{cancel:?}"
    );
    assert_eq!(reload(kit, p.id).await, p, "nothing changed");

    let s = succeeded(kit, &a, 1000).await;
    let refund = super::flows::refund_of(&s, 100);
    let created = kit
        .store
        .payments()
        .create_refund(&refund, Some(completion(&lost, "x")))
        .await;
    assert!(
        matches!(created, Err(Error::IdempotencyClaimLost)),
        "{created:?}"
    );
    assert_eq!(
        kit.store
            .payments()
            .refund(refund.id, Principal::Platform)
            .await
            .unwrap(),
        None
    );
    assert_eq!(reload(kit, s.id).await.amount_reserved(), 0);
    assert_books_clean(kit).await;
}

/// A capture asked late in a long authorization is new work, not stuck work: the audit
/// measures it from the request, and it settles like any other.
pub async fn a_capture_asked_late_in_its_authorization_is_not_stuck(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let week = Duration::from_secs(7 * 24 * 3600);
    let p = authorized(kit, &a, 1000).await;
    let later = Duration::from_secs(2 * 24 * 3600);
    kit.time.advance(later).await;
    assert_books_clean(kit).await;
    kit.store
        .payments()
        .request_capture(
            p.id,
            amount(1000),
            p.updated_at().saturating_add(later),
            week,
            None,
        )
        .await
        .unwrap();
    assert_books_clean(kit).await;
    let done = claim_and_post(kit, p.id).await;
    assert_eq!(done.amount_captured(), 1000);
    assert_books_clean(kit).await;
}

/// After the TTL, requested cancels racing the expiry sweep: each payment is canceled once,
/// for one reason; a losing cancel sees it `CANCELED`.
pub async fn cancel_and_expiry_race_with_one_winner(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let mut payments = Vec::new();
    for _ in 0..10 {
        payments.push(authorized(kit, &a, 100).await);
    }
    kit.time.advance(TTL + Duration::from_secs(1)).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(payments.len() + 1));
    let mut cancels = Vec::new();
    for p in &payments {
        let (kit, barrier, id) = (kit.clone(), barrier.clone(), p.id);
        cancels.push(tokio::spawn(async move {
            barrier.wait().await;
            kit.store
                .payments()
                .cancel(id, CancellationReason::Requested, Timestamp::now(), None)
                .await
        }));
    }
    let (k, b) = (kit.clone(), barrier.clone());
    let expire = tokio::spawn(async move {
        b.wait().await;
        k.store
            .settlement()
            .expire_authorizations(TTL, 1000)
            .await
            .unwrap()
    });
    let expired = expire.await.unwrap();
    for (p, cancel) in payments.iter().zip(cancels) {
        let by_expiry = expired.iter().filter(|e| e.id == p.id).count();
        let now = reload(kit, p.id).await;
        assert_eq!(now.status(), PaymentStatus::Canceled);
        match cancel.await.unwrap() {
            Ok(c) => {
                assert_eq!(by_expiry, 0, "{} canceled twice", p.id);
                assert_eq!(c, now);
                assert_eq!(
                    now.cancellation_reason(),
                    Some(CancellationReason::Requested)
                );
            }
            Err(Error::InvalidState {
                status: PaymentStatus::Canceled,
            }) => {
                assert_eq!(by_expiry, 1, "{} canceled by nobody", p.id);
                assert_eq!(now.cancellation_reason(), Some(CancellationReason::Expired));
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_books_clean(kit).await;
}

/// An authorization whose void has begun can only fail: settling it `Authorized` is refused
/// like a posting, alone or in a batch, and every later claim names the attempt being voided.
pub async fn an_authorization_whose_void_began_can_only_fail(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = stored_payment_with(kit, &a, 1000, CaptureMethod::Manual, Metadata::default()).await;
    let (lease, _) = claim_payment(kit, p.id).await;
    assert!(
        kit.store
            .settlement()
            .begin_void(p.id, lease, LEASE)
            .await
            .unwrap()
    );
    let authorize = Settlement::Payment {
        payment_id: p.id,
        lease,
        result: SettlementResult::Authorized,
    };
    let refused = settle_one(kit, authorize).await;
    assert!(
        matches!(refused, Err(Error::Invariant(Invariant::Voided))),
        "{refused:?}"
    );
    assert_eq!(reload(kit, p.id).await.status(), PaymentStatus::Processing);
    kit.time.advance(LEASE + Duration::from_secs(1)).await;
    let next = LeaseId::generate();
    let begun = kit
        .store
        .settlement()
        .begin_payments(&[p.id], next, LEASE)
        .await
        .unwrap();
    assert!(
        matches!(&begun[..], [BeginOutcome::Voiding { attempt, .. }] if *attempt == lease),
        "{begun:?}"
    );
    let failed = settle_one(
        kit,
        Settlement::Payment {
            payment_id: p.id,
            lease: next,
            result: SettlementResult::Failed(crate::payment::FailureReason::ProcessingError),
        },
    )
    .await
    .unwrap();
    assert!(matches!(failed, SettleOutcome::Payment(f) if f.status() == PaymentStatus::Failed));
    assert_books_clean(kit).await;
}

/// Generates the capture, cancel and expiry conformance tests for a `StoreKit` expression.
#[macro_export]
macro_rules! capture_conformance {
    ($kit:expr) => {
        $crate::conformance_tests!(
            capture,
            $kit,
            [
                a_partial_capture_posts_only_the_captured_amount,
                a_full_capture_posts_the_whole_amount,
                a_capture_above_the_authorization_is_refused,
                capture_and_cancel_need_an_authorized_payment,
                cancel_ends_an_authorization_once,
                capture_and_cancel_race_with_one_winner,
                expiry_cancels_old_authorizations_exactly_once,
                a_failed_capture_posts_nothing,
                settlement_follows_the_capture_method,
                decisions_whose_claim_was_lost_write_nothing,
                a_capture_asked_late_in_its_authorization_is_not_stuck,
                cancel_and_expiry_race_with_one_winner,
                an_authorization_whose_void_began_can_only_fail,
            ]
        );
    };
}
