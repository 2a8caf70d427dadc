//! Conformance cases for the ledger side of the store ports: [`crate::ports::AccountStore`],
//! payments in [`crate::ports::PaymentStore`], and [`crate::ports::SettlementStore`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{
    StoreKit, acquire, assert_books_clean, completion, onboard, payment, stored_payment,
    system_account, taken_by_another,
};
use crate::account::{Account, AccountName};
use crate::error::{Error, Invariant, Result};
use crate::fresh::Fresh;
use crate::idempotency::{ClaimOutcome, IdempotencyPolicy};
use crate::ledger::{Direction, Transfer};
use crate::money::Currency;
use crate::page::{CreatedRange, PageLimit, PageRequest};
use crate::payment::{FailureReason, PaymentStatus};
use crate::ports::{
    BeginOutcome, Job, LeaseId, OpenPayments, PaymentFilter, SettleOutcome, Settlement,
    SettlementResult,
};
use crate::principal::{Owner, Principal};
use crate::time::Timestamp;
use crate::{Balance, PaymentId};

const LEASE: Duration = Duration::from_secs(30);

fn page<C>(limit: i64, after: Option<C>) -> PageRequest<C> {
    PageRequest {
        limit: PageLimit::new(limit).unwrap(),
        starting_after: after,
    }
}

/// Claims one payment under `lease`.
async fn begin(kit: &StoreKit, id: PaymentId, lease: LeaseId) -> BeginOutcome {
    let mut outcomes = kit
        .store
        .settlement()
        .begin_payments(&[id], lease, LEASE)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 1, "one outcome per id");
    outcomes.remove(0)
}

/// Settles one settlement alone.
async fn settle_one(kit: &StoreKit, settlement: &Settlement) -> Result<SettleOutcome> {
    let mut results = kit
        .store
        .settlement()
        .settle(std::slice::from_ref(settlement))
        .await;
    assert_eq!(results.len(), 1, "one result per settlement");
    results.remove(0)
}

/// `p` as a worker holds it (`PROCESSING`), not stored: to build its transfer.
fn processing(p: &crate::Payment) -> crate::Payment {
    let mut held = p.clone();
    held.start_processing(Timestamp::now()).unwrap();
    held
}

fn payment_of(settlement: &Settlement) -> Option<PaymentId> {
    match settlement {
        Settlement::Payment { payment_id, .. } => Some(*payment_id),
        Settlement::Refund { .. } => None,
    }
}

fn status_is(status: PaymentStatus) -> PaymentFilter {
    PaymentFilter {
        status: Some(status),
        ..PaymentFilter::default()
    }
}

async fn claim(kit: &StoreKit, id: PaymentId) -> (LeaseId, crate::Payment) {
    let lease = LeaseId::generate();
    match begin(kit, id, lease).await {
        BeginOutcome::Claimed(p) => (lease, p),
        other => panic!("expected to claim {id}, got {other:?}"),
    }
}

async fn post(kit: &StoreKit, id: PaymentId) -> SettleOutcome {
    let (lease, p) = claim(kit, id).await;
    let transfer = Transfer::for_payment(&p, Timestamp::now()).unwrap();
    settle_one(
        kit,
        &Settlement::Payment {
            payment_id: id,
            lease,
            result: SettlementResult::Posted(transfer),
        },
    )
    .await
    .unwrap()
}

async fn balance(kit: &StoreKit, account: &Account) -> i64 {
    kit.store
        .accounts()
        .account(account.id, Principal::Platform)
        .await
        .unwrap()
        .unwrap()
        .balance
        .minor_units()
}

pub async fn system_account_is_unique_per_currency(kit: &StoreKit) {
    let first = system_account(kit, Currency::EUR).await;
    let again = system_account(kit, Currency::EUR).await;
    assert_eq!(first.id, again.id);
    assert!(first.allow_negative());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = kit.store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .accounts()
                .ensure_system_account(&Account::system(Currency::INR, Timestamp::now()))
                .await
                .unwrap()
                .id
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap());
    }
    assert_eq!(
        ids.len(),
        1,
        "concurrent start-ups must agree on one system account"
    );
}

pub async fn accounts_round_trip_and_are_scoped(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let b = onboard(kit, Currency::USD).await;
    let extra = Account::open(
        AccountName::parse("savings ✓ \u{200b}").unwrap(),
        Currency::USD,
        a.account.owner,
        Timestamp::now(),
    );
    kit.store
        .accounts()
        .create_account(&extra, None)
        .await
        .unwrap();

    let read = kit
        .store
        .accounts()
        .account(extra.id, a.principal())
        .await
        .unwrap();
    assert_eq!(
        read.as_ref(),
        Some(&*extra),
        "stored account must read back equal, byte for byte"
    );
    assert_eq!(
        kit.store
            .accounts()
            .account(extra.id, Principal::Platform)
            .await
            .unwrap()
            .as_ref(),
        Some(&*extra)
    );
    assert_eq!(
        kit.store
            .accounts()
            .account(extra.id, b.principal())
            .await
            .unwrap(),
        None,
        "another merchant's account is invisible"
    );
    let world = system_account(kit, Currency::USD).await;
    assert_eq!(
        kit.store
            .accounts()
            .account(world.id, a.principal())
            .await
            .unwrap(),
        None,
        "system accounts are the platform's"
    );
    assert_eq!(
        kit.store
            .accounts()
            .account(crate::AccountId::generate(), Principal::Platform)
            .await
            .unwrap(),
        None
    );
    assert!(
        kit.store
            .accounts()
            .create_account(&extra, None)
            .await
            .is_err(),
        "an account id is unique"
    );
}

pub async fn payments_round_trip_and_are_scoped(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let b = onboard(kit, Currency::USD).await;
    let p = stored_payment(kit, &a, 1234).await;
    assert_eq!(
        kit.store
            .payments()
            .payment(p.id, a.principal())
            .await
            .unwrap()
            .as_ref(),
        Some(&p)
    );
    assert_eq!(
        kit.store
            .payments()
            .payment(p.id, Principal::Platform)
            .await
            .unwrap()
            .as_ref(),
        Some(&p)
    );
    assert_eq!(
        kit.store
            .payments()
            .payment(p.id, b.principal())
            .await
            .unwrap(),
        None
    );
    assert!(
        kit.store
            .payments()
            .create_payment(&Fresh::new(p.clone()), None)
            .await
            .is_err(),
        "a payment id is unique"
    );
}

pub async fn payments_list_newest_first_with_cursor_and_filter(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let b = onboard(kit, Currency::USD).await;
    let mut mine = Vec::new();
    for i in 0..5 {
        mine.push(stored_payment(kit, &a, 100 + i).await);
        stored_payment(kit, &b, 1).await;
    }
    post(kit, mine[1].id).await;
    post(kit, mine[3].id).await;

    let first = kit
        .store
        .payments()
        .payments(a.principal(), &PaymentFilter::default(), page(2, None))
        .await
        .unwrap();
    let ids: Vec<_> = first.items.iter().map(|p| p.id).collect();
    assert_eq!(ids, vec![mine[4].id, mine[3].id]);
    assert!(first.has_more);
    let second = kit
        .store
        .payments()
        .payments(
            a.principal(),
            &PaymentFilter::default(),
            page(2, Some(mine[3].id)),
        )
        .await
        .unwrap();
    assert_eq!(
        second.items.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![mine[2].id, mine[1].id]
    );
    assert!(second.has_more);
    let last = kit
        .store
        .payments()
        .payments(
            a.principal(),
            &PaymentFilter::default(),
            page(2, Some(mine[1].id)),
        )
        .await
        .unwrap();
    assert_eq!(
        last.items.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![mine[0].id]
    );
    assert!(!last.has_more);

    let succeeded = kit
        .store
        .payments()
        .payments(
            a.principal(),
            &status_is(PaymentStatus::Success),
            page(10, None),
        )
        .await
        .unwrap();
    assert_eq!(
        succeeded.items.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![mine[3].id, mine[1].id]
    );
    assert!(
        succeeded
            .items
            .iter()
            .all(|p| p.status() == PaymentStatus::Success)
    );

    let all = kit
        .store
        .payments()
        .payments(a.principal(), &PaymentFilter::default(), page(100, None))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 5, "a merchant lists only its own payments");

    let foreign = kit
        .store
        .payments()
        .payments(b.principal(), &PaymentFilter::default(), page(1, None))
        .await
        .unwrap()
        .items[0]
        .id;
    assert!(matches!(
        kit.store
            .payments()
            .payments(
                a.principal(),
                &PaymentFilter::default(),
                page(2, Some(foreign))
            )
            .await,
        Err(Error::UnknownCursor)
    ));
    assert!(matches!(
        kit.store
            .payments()
            .payments(
                a.principal(),
                &PaymentFilter::default(),
                page(2, Some(PaymentId::generate()))
            )
            .await,
        Err(Error::UnknownCursor)
    ));
    assert!(
        kit.store
            .payments()
            .payments(
                Principal::Platform,
                &PaymentFilter::default(),
                page(2, Some(foreign))
            )
            .await
            .is_ok()
    );
}

pub async fn create_payment_refuses_inconsistent_accounts(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let euros = onboard(kit, Currency::EUR).await;
    let usd_world = system_account(kit, Currency::USD).await;
    let eur_world = system_account(kit, Currency::EUR).await;

    let mut wrong_currency = payment(&euros.account, &usd_world, 10, "tok_visa").into_inner();
    wrong_currency.currency = Currency::USD;
    let mut wrong_owner = payment(&a.account, &usd_world, 10, "tok_visa").into_inner();
    wrong_owner.owner = Owner::Platform;
    let funded_by_merchant = payment(&a.account, &euros.account, 10, "tok_visa").into_inner();
    let into_world = payment(&usd_world, &eur_world, 10, "tok_visa").into_inner();
    let mut missing = payment(&a.account, &usd_world, 10, "tok_visa").into_inner();
    missing.merchant_account = crate::AccountId::generate();

    for bad in [
        wrong_currency,
        wrong_owner,
        funded_by_merchant,
        into_world,
        missing,
    ] {
        // Vouched for as core never would: the store's own guards must refuse it.
        let bad = Fresh::new(bad);
        assert!(
            kit.store
                .payments()
                .create_payment(&bad, None)
                .await
                .is_err(),
            "accepted {bad:?}"
        );
        assert_eq!(
            kit.store
                .payments()
                .payment(bad.id, Principal::Platform)
                .await
                .unwrap(),
            None
        );
    }
}

pub async fn concurrent_creates_succeed_or_fail_each_on_its_own(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let world = system_account(kit, Currency::USD).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(52));
    let mut tasks = Vec::new();
    for i in 0..52_i64 {
        let (kit, a, world, barrier) = (kit.clone(), a.clone(), world.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let mut p = payment(&a.account, &world, 1 + i, "tok_visa");
            let bad = i % 13 == 5;
            if bad {
                // Credits an account that does not exist: refused, alone.
                p.get_mut().merchant_account = crate::AccountId::generate();
            }
            let completion = if i % 2 == 0 && !bad {
                let claim = acquire(&kit, a.principal()).await;
                p.get_mut().idempotency_key = Some(claim.key.clone());
                Some(completion(&claim, "{}"))
            } else {
                None
            };
            barrier.wait().await;
            let created = kit.store.payments().create_payment(&p, completion).await;
            (p.id, bad, created.is_ok())
        }));
    }
    let mut stored = 0;
    for task in tasks {
        let (id, bad, ok) = task.await.unwrap();
        assert_eq!(ok, !bad, "payment {id}: bad={bad}");
        let found = kit
            .store
            .payments()
            .payment(id, Principal::Platform)
            .await
            .unwrap();
        assert_eq!(found.is_some(), !bad);
        stored += usize::from(found.is_some());
    }
    assert_eq!(stored, 48);
}

/// Concurrent payments under one key nobody claimed first (the accept path takes the key in
/// the statement that writes the payment): exactly one is written, every other is
/// `IdempotencyClaimLost` and writes nothing, and the key replays the one written.
pub async fn concurrent_payments_under_one_free_key_write_one(kit: &StoreKit) {
    const N: usize = 24;
    let a = onboard(kit, Currency::USD).await;
    let world = system_account(kit, Currency::USD).await;
    let key = super::unique_key();
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for i in 0..N {
        let (kit, a, world, barrier, key) = (
            kit.clone(),
            a.clone(),
            world.clone(),
            barrier.clone(),
            key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut p = payment(&a.account, &world, 100, "tok_visa");
            p.get_mut().idempotency_key = Some(key.clone());
            let claim = crate::idempotency::Claim {
                scope: a.principal(),
                key,
                token: crate::idempotency::ClaimToken::generate(),
            };
            let body: &'static str = if i % 2 == 0 { "even" } else { "odd" };
            barrier.wait().await;
            let created = kit
                .store
                .payments()
                .create_payment(&p, Some(completion(&claim, body)))
                .await;
            (p.id, body, created)
        }));
    }
    let mut written = Vec::new();
    for task in tasks {
        let (id, body, created) = task.await.unwrap();
        match created {
            Ok(()) => written.push((id, body)),
            Err(Error::IdempotencyClaimLost) => {}
            Err(other) => panic!("a payment under a taken key is refused, got {other:?}"),
        }
        let found = kit.store.payments().payment(id, Principal::Platform).await;
        assert_eq!(
            found.unwrap().is_some(),
            written.last().is_some_and(|(w, _)| *w == id)
        );
    }
    assert_eq!(written.len(), 1, "exactly one payment per key: {written:?}");
    let replay = kit
        .store
        .idempotency()
        .claim(a.principal(), &key, super::fingerprint(1), super::policy())
        .await
        .unwrap();
    assert!(
        matches!(&replay, ClaimOutcome::Replay(r) if r.body == written[0].1),
        "the key replays the payment written: {replay:?}"
    );
    assert_books_clean(kit).await;
}

pub async fn create_payment_completes_its_idempotency_claim_atomically(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let world = system_account(kit, Currency::USD).await;

    let claim = acquire(kit, a.principal()).await;
    let p = payment(&a.account, &world, 500, "tok_visa");
    kit.store
        .payments()
        .create_payment(&p, Some(completion(&claim, "stored")))
        .await
        .unwrap();
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
    assert!(matches!(replay, ClaimOutcome::Replay(r) if r.body == "stored"));

    // A claim that is no longer held: the payment must not be written either.
    let lost = taken_by_another(kit, a.principal()).await;
    let orphan = payment(&a.account, &world, 500, "tok_visa");
    let err = kit
        .store
        .payments()
        .create_payment(&orphan, Some(completion(&lost, "x")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::IdempotencyClaimLost), "{err:?}");
    assert_eq!(
        kit.store
            .payments()
            .payment(orphan.id, Principal::Platform)
            .await
            .unwrap(),
        None
    );

    // The same for accounts.
    let held = taken_by_another(kit, a.principal()).await;
    let acct = Account::open(
        AccountName::parse("x").unwrap(),
        Currency::USD,
        a.account.owner,
        Timestamp::now(),
    );
    assert!(
        kit.store
            .accounts()
            .create_account(&acct, Some(completion(&held, "x")))
            .await
            .is_err()
    );
    assert_eq!(
        kit.store
            .accounts()
            .account(acct.id, Principal::Platform)
            .await
            .unwrap(),
        None
    );
}

pub async fn a_key_creates_a_new_payment_once_its_window_has_passed(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let world = system_account(kit, Currency::USD).await;
    let policy = super::policy();
    let key = super::unique_key();
    let keyed = |p: &mut crate::Payment| {
        p.idempotency_key = Some(key.clone());
        p.created_by = a.principal();
    };
    let ClaimOutcome::Acquired(first) = kit
        .store
        .idempotency()
        .claim(a.principal(), &key, super::fingerprint(1), policy)
        .await
        .unwrap()
    else {
        panic!("fresh key")
    };
    let mut p1 = payment(&a.account, &world, 100, "tok_visa");
    keyed(p1.get_mut());
    kit.store
        .payments()
        .create_payment(&p1, Some(completion(&first, "one")))
        .await
        .unwrap();

    kit.time.advance(policy.ttl + Duration::from_secs(1)).await;
    let ClaimOutcome::Acquired(second) = kit
        .store
        .idempotency()
        .claim(a.principal(), &key, super::fingerprint(1), policy)
        .await
        .unwrap()
    else {
        panic!("after its window the key is new")
    };
    let mut p2 = payment(&a.account, &world, 100, "tok_visa");
    keyed(p2.get_mut());
    // Created after the window, as the service would stamp it on a clock that moved on too.
    p2.get_mut().created_at = p1
        .created_at
        .saturating_add(policy.ttl + Duration::from_secs(1));
    kit.store
        .payments()
        .create_payment(&p2, Some(completion(&second, "two")))
        .await
        .unwrap();
    assert!(
        kit.store
            .payments()
            .payment(p2.id, Principal::Platform)
            .await
            .unwrap()
            .is_some()
    );
    assert_books_clean(kit).await;
}

pub async fn begin_processing_is_a_compare_and_set_with_a_lease(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = stored_payment(kit, &a, 700).await;
    let (first, claimed) = claim(kit, p.id).await;
    assert_eq!(claimed.status(), PaymentStatus::Processing);
    assert_eq!(
        begin(kit, p.id, LeaseId::generate()).await,
        BeginOutcome::Busy
    );
    assert_eq!(
        begin(kit, PaymentId::generate(), LeaseId::generate()).await,
        BeginOutcome::Missing
    );

    // The first holder dies; once its lease runs out another worker takes over.
    kit.time.advance(LEASE + Duration::from_secs(1)).await;
    let (second, _) = claim(kit, p.id).await;
    let stale = Settlement::Payment {
        payment_id: p.id,
        lease: first,
        result: SettlementResult::Failed(FailureReason::CardDeclined),
    };
    assert_eq!(
        settle_one(kit, &stale).await.unwrap(),
        SettleOutcome::NotHeld
    );
    let fresh = Settlement::Payment {
        payment_id: p.id,
        lease: second,
        result: SettlementResult::Failed(FailureReason::CardDeclined),
    };
    assert!(matches!(
        settle_one(kit, &fresh).await.unwrap(),
        SettleOutcome::Payment(_)
    ));
    assert!(
        matches!(begin(kit, p.id, LeaseId::generate()).await, BeginOutcome::Finished(f) if f.status() == PaymentStatus::Failed)
    );
}

pub async fn a_payment_whose_void_began_can_only_fail(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = stored_payment(kit, &a, 700).await;
    let (lease, held) = claim(kit, p.id).await;
    assert!(
        !kit.store
            .settlement()
            .begin_void(p.id, LeaseId::generate(), LEASE)
            .await
            .unwrap(),
        "not the holder"
    );
    assert!(
        kit.store
            .settlement()
            .begin_void(p.id, lease, LEASE)
            .await
            .unwrap()
    );
    assert!(
        kit.store
            .settlement()
            .begin_void(p.id, lease, LEASE)
            .await
            .unwrap(),
        "a second mark by the holder is harmless"
    );
    let posted = |lease| Settlement::Payment {
        payment_id: p.id,
        lease,
        result: SettlementResult::Posted(Transfer::for_payment(&held, Timestamp::now()).unwrap()),
    };
    // Neither alone nor in a batch (whose other settlements still go through).
    let refused = settle_one(kit, &posted(lease)).await;
    assert!(
        matches!(refused, Err(Error::Invariant(Invariant::Voided))),
        "{refused:?}"
    );
    let other = stored_payment(kit, &a, 300).await;
    let (other_lease, other_held) = claim(kit, other.id).await;
    let results = kit
        .store
        .settlement()
        .settle(&[
            posted(lease),
            Settlement::Payment {
                payment_id: other.id,
                lease: other_lease,
                result: SettlementResult::Posted(
                    Transfer::for_payment(&other_held, Timestamp::now()).unwrap(),
                ),
            },
        ])
        .await;
    assert!(
        matches!(results[0], Err(Error::Invariant(Invariant::Voided))),
        "{:?}",
        results[0]
    );
    assert!(
        matches!(&results[1], Ok(SettleOutcome::Payment(s)) if s.status() == PaymentStatus::Success)
    );
    assert_eq!(
        balance(kit, &a.account).await,
        300,
        "only the other was posted"
    );
    // The mark outlives the lease: whoever takes the payment over is told, and cannot post it
    // either.
    kit.time.advance(LEASE + Duration::from_secs(1)).await;
    let next = LeaseId::generate();
    let taken = begin(kit, p.id, next).await;
    assert!(
        matches!(&taken, BeginOutcome::Voiding { attempt, .. } if *attempt == lease),
        "{taken:?}"
    );
    assert!(matches!(
        settle_one(kit, &posted(next)).await,
        Err(Error::Invariant(Invariant::Voided))
    ));
    let failed = settle_one(
        kit,
        &Settlement::Payment {
            payment_id: p.id,
            lease: next,
            result: SettlementResult::Failed(FailureReason::ProcessingError),
        },
    )
    .await
    .unwrap();
    assert!(matches!(failed, SettleOutcome::Payment(f) if f.status() == PaymentStatus::Failed));
    assert!(
        !kit.store
            .settlement()
            .begin_void(p.id, next, LEASE)
            .await
            .unwrap(),
        "a finished payment is held by no lease"
    );
    assert_books_clean(kit).await;
}

pub async fn release_lets_the_next_attempt_claim_at_once(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = stored_payment(kit, &a, 700).await;
    let (lease, _) = claim(kit, p.id).await;
    kit.store
        .settlement()
        .release(Job::Payment(p.id), LeaseId::generate())
        .await
        .unwrap();
    assert_eq!(
        begin(kit, p.id, LeaseId::generate()).await,
        BeginOutcome::Busy,
        "releasing someone else's lease is a no-op"
    );
    kit.store
        .settlement()
        .release(Job::Payment(p.id), lease)
        .await
        .unwrap();
    let (_, again) = claim(kit, p.id).await;
    assert_eq!(again.status(), PaymentStatus::Processing);
}

pub async fn settle_posts_one_balanced_transfer_and_sets_success(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let world = system_account(kit, Currency::USD).await;
    let world_before = balance(kit, &world).await;
    let p = stored_payment(kit, &a, 2500).await;
    let (lease, held) = claim(kit, p.id).await;
    let transfer = Transfer::for_payment(&held, Timestamp::now()).unwrap();
    let settlement = Settlement::Payment {
        payment_id: p.id,
        lease,
        result: SettlementResult::Posted(transfer.clone()),
    };
    let SettleOutcome::Payment(done) = settle_one(kit, &settlement).await.unwrap() else {
        panic!("not settled")
    };
    assert_eq!(done.status(), PaymentStatus::Success);
    assert_eq!(
        kit.store
            .payments()
            .payment(p.id, Principal::Platform)
            .await
            .unwrap()
            .unwrap()
            .status(),
        PaymentStatus::Success
    );
    assert_eq!(balance(kit, &a.account).await, 2500);
    assert_eq!(balance(kit, &world).await, world_before - 2500);

    let entries = kit
        .store
        .accounts()
        .entries(
            a.account.id,
            a.principal(),
            CreatedRange::default(),
            page(10, None),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entries.items.len(), 1);
    let credit = &entries.items[0];
    assert_eq!(
        (
            credit.direction,
            credit.amount.minor_units(),
            credit.payment_id,
            credit.transaction_id
        ),
        (Direction::Credit, 2500, p.id, transfer.id())
    );
    let world_entries = kit
        .store
        .accounts()
        .entries(
            world.id,
            Principal::Platform,
            CreatedRange::default(),
            page(100, None),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        world_entries
            .items
            .iter()
            .any(|e| e.transaction_id == transfer.id() && e.direction == Direction::Debit)
    );

    // Settling again, under the same lease or any other, writes nothing.
    assert_eq!(
        settle_one(kit, &settlement).await.unwrap(),
        SettleOutcome::NotHeld
    );
    assert_eq!(balance(kit, &a.account).await, 2500);
    assert_books_clean(kit).await;
}

pub async fn settle_failure_posts_nothing(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = stored_payment(kit, &a, 900).await;
    let (lease, _) = claim(kit, p.id).await;
    let s = Settlement::Payment {
        payment_id: p.id,
        lease,
        result: SettlementResult::Failed(FailureReason::InsufficientFunds),
    };
    let SettleOutcome::Payment(done) = settle_one(kit, &s).await.unwrap() else {
        panic!("not settled")
    };
    assert_eq!(
        done.failure_reason(),
        Some(FailureReason::InsufficientFunds)
    );
    assert_eq!(balance(kit, &a.account).await, 0);
    assert!(
        kit.store
            .accounts()
            .entries(
                a.account.id,
                a.principal(),
                CreatedRange::default(),
                page(10, None)
            )
            .await
            .unwrap()
            .unwrap()
            .items
            .is_empty()
    );
    assert_books_clean(kit).await;
}

pub async fn settle_refuses_a_transfer_that_does_not_match(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = stored_payment(kit, &a, 100).await;
    let other = stored_payment(kit, &a, 999).await;
    let (lease, _) = claim(kit, p.id).await;
    let wrong = Transfer::for_payment(&processing(&other), Timestamp::now()).unwrap();
    let s = Settlement::Payment {
        payment_id: p.id,
        lease,
        result: SettlementResult::Posted(wrong),
    };
    assert!(settle_one(kit, &s).await.is_err());
    assert_eq!(
        kit.store
            .payments()
            .payment(p.id, Principal::Platform)
            .await
            .unwrap()
            .unwrap()
            .status(),
        PaymentStatus::Processing
    );
    assert_eq!(balance(kit, &a.account).await, 0);
}

pub async fn concurrent_settlement_of_one_payment_happens_once(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = stored_payment(kit, &a, 4200).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (kit, barrier) = (kit.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let lease = LeaseId::generate();
            let BeginOutcome::Claimed(held) = begin(&kit, p.id, lease).await else {
                return false;
            };
            let transfer = Transfer::for_payment(&held, Timestamp::now()).unwrap();
            let s = Settlement::Payment {
                payment_id: p.id,
                lease,
                result: SettlementResult::Posted(transfer),
            };
            matches!(
                settle_one(&kit, &s).await.unwrap(),
                SettleOutcome::Payment(_)
            )
        }));
    }
    let mut settled = 0;
    for task in tasks {
        settled += usize::from(task.await.unwrap());
    }
    assert_eq!(settled, 1);
    assert_eq!(balance(kit, &a.account).await, 4200);
    assert_books_clean(kit).await;
}

pub async fn concurrent_settlements_into_one_account_add_up_exactly(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let world = system_account(kit, Currency::USD).await;
    let world_before = balance(kit, &world).await;
    let mut tasks = Vec::new();
    for t in 0..32_i64 {
        let kit = kit.clone();
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            let mut total = 0;
            for i in 0..8 {
                let amount = 1 + t * 8 + i;
                let p = stored_payment(&kit, &a, amount).await;
                assert!(matches!(post(&kit, p.id).await, SettleOutcome::Payment(_)));
                total += amount;
            }
            total
        }));
    }
    let mut expected = 0;
    for task in tasks {
        expected += task.await.unwrap();
    }
    assert_eq!(balance(kit, &a.account).await, expected);
    assert_eq!(balance(kit, &world).await, world_before - expected);
    assert_books_clean(kit).await;
}

pub async fn entries_list_newest_first_with_cursor_and_are_scoped(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let b = onboard(kit, Currency::USD).await;
    for amount in [1, 2, 3] {
        let p = stored_payment(kit, &a, amount).await;
        post(kit, p.id).await;
    }
    let first = kit
        .store
        .accounts()
        .entries(
            a.account.id,
            a.principal(),
            CreatedRange::default(),
            page(2, None),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first
            .items
            .iter()
            .map(|e| e.amount.minor_units())
            .collect::<Vec<_>>(),
        vec![3, 2]
    );
    assert!(first.has_more);
    let rest = kit
        .store
        .accounts()
        .entries(
            a.account.id,
            a.principal(),
            CreatedRange::default(),
            page(2, Some(first.items[1].id)),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rest.items
            .iter()
            .map(|e| e.amount.minor_units())
            .collect::<Vec<_>>(),
        vec![1]
    );
    assert!(!rest.has_more);
    assert_eq!(
        kit.store
            .accounts()
            .entries(
                a.account.id,
                b.principal(),
                CreatedRange::default(),
                page(2, None)
            )
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        kit.store
            .accounts()
            .entries(
                a.account.id,
                a.principal(),
                CreatedRange::default(),
                page(2, Some(crate::EntryId::generate()))
            )
            .await,
        Err(Error::UnknownCursor)
    ));
    let b_entry_owner = stored_payment(kit, &b, 5).await;
    post(kit, b_entry_owner.id).await;
    let foreign = kit
        .store
        .accounts()
        .entries(
            b.account.id,
            b.principal(),
            CreatedRange::default(),
            page(1, None),
        )
        .await
        .unwrap()
        .unwrap()
        .items[0]
        .id;
    assert!(matches!(
        kit.store
            .accounts()
            .entries(
                a.account.id,
                a.principal(),
                CreatedRange::default(),
                page(2, Some(foreign))
            )
            .await,
        Err(Error::UnknownCursor)
    ));
}

/// The backlog the sweep reports: payments `PENDING` or `PROCESSING` (held or not), never
/// finished ones, and the creation of the one waiting longest.
pub async fn open_payments_are_counted_with_the_oldest(kit: &StoreKit) {
    let settlement = kit.store.settlement();
    assert_eq!(
        settlement.open_payments().await.unwrap(),
        OpenPayments::default(),
        "a new store has nothing open"
    );
    let a = onboard(kit, Currency::USD).await;
    let first = stored_payment(kit, &a, 1).await;
    let held = stored_payment(kit, &a, 2).await;
    let done = stored_payment(kit, &a, 3).await;
    let (lease, claimed) = claim(kit, held.id).await;
    post(kit, done.id).await;
    let created = |id| async move {
        kit.store
            .payments()
            .payment(id, Principal::Platform)
            .await
            .unwrap()
            .unwrap()
            .created_at
    };
    let open = settlement.open_payments().await.unwrap();
    assert_eq!(
        open.count, 2,
        "pending and held count, the settled one does not"
    );
    assert_eq!(open.oldest, Some(created(first.id).await));

    post(kit, first.id).await;
    let open = settlement.open_payments().await.unwrap();
    assert_eq!((open.count, open.oldest), (1, Some(created(held.id).await)));
    let transfer = Transfer::for_payment(&claimed, Timestamp::now()).unwrap();
    settle_one(
        kit,
        &Settlement::Payment {
            payment_id: held.id,
            lease,
            result: SettlementResult::Posted(transfer),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        settlement.open_payments().await.unwrap(),
        OpenPayments::default()
    );
}

pub async fn sweep_returns_stale_work_once_per_interval(kit: &StoreKit) {
    let stale_after = Duration::from_secs(60);
    let a = onboard(kit, Currency::USD).await;
    let pending = stored_payment(kit, &a, 1).await;
    let held = stored_payment(kit, &a, 2).await;
    let done = stored_payment(kit, &a, 3).await;
    claim(kit, held.id).await;
    post(kit, done.id).await;

    let swept = |jobs: Vec<Job>| {
        jobs.into_iter()
            .filter_map(|job| match job {
                Job::Payment(id) if [pending.id, held.id, done.id].contains(&id) => Some(id),
                _ => None,
            })
            .collect::<HashSet<_>>()
    };
    assert!(
        swept(
            kit.store
                .settlement()
                .sweep(stale_after, 10_000)
                .await
                .unwrap()
        )
        .is_empty(),
        "fresh work is left alone"
    );
    kit.time.advance(stale_after + Duration::from_secs(1)).await;
    let due = swept(
        kit.store
            .settlement()
            .sweep(stale_after, 10_000)
            .await
            .unwrap(),
    );
    // The lease (30 s) ran out too, so the held payment is due as well; finished ones never are.
    assert_eq!(due, HashSet::from([pending.id, held.id]));
    assert!(
        swept(
            kit.store
                .settlement()
                .sweep(stale_after, 10_000)
                .await
                .unwrap()
        )
        .is_empty(),
        "swept work waits another interval"
    );
    kit.time.advance(stale_after + Duration::from_secs(1)).await;
    assert_eq!(
        swept(
            kit.store
                .settlement()
                .sweep(stale_after, 10_000)
                .await
                .unwrap()
        ),
        HashSet::from([pending.id, held.id])
    );
}

pub async fn begin_payments_claims_the_free_and_reports_the_rest(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let free = stored_payment(kit, &a, 1).await;
    let held = stored_payment(kit, &a, 2).await;
    let done = stored_payment(kit, &a, 3).await;
    let also_free = stored_payment(kit, &a, 4).await;
    claim(kit, held.id).await;
    post(kit, done.id).await;
    let missing = PaymentId::generate();
    let lease = LeaseId::generate();
    let outcomes = kit
        .store
        .settlement()
        .begin_payments(
            &[free.id, held.id, done.id, missing, also_free.id],
            lease,
            LEASE,
        )
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 5);
    assert!(
        matches!(&outcomes[0], BeginOutcome::Claimed(p) if p.id == free.id && p.status() == PaymentStatus::Processing)
    );
    assert_eq!(outcomes[1], BeginOutcome::Busy);
    assert!(matches!(&outcomes[2], BeginOutcome::Finished(p) if p.id == done.id));
    assert_eq!(outcomes[3], BeginOutcome::Missing);
    assert!(matches!(&outcomes[4], BeginOutcome::Claimed(p) if p.id == also_free.id));
    // Both are held under the one lease.
    for id in [free.id, also_free.id] {
        let s = Settlement::Payment {
            payment_id: id,
            lease,
            result: SettlementResult::Failed(FailureReason::CardDeclined),
        };
        assert!(matches!(
            settle_one(kit, &s).await.unwrap(),
            SettleOutcome::Payment(_)
        ));
    }
}

pub async fn settle_many_settles_each_once_and_sums_balances(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let b = onboard(kit, Currency::USD).await;
    let world = system_account(kit, Currency::USD).await;
    let world_before = balance(kit, &world).await;
    let mut settlements = Vec::new();
    let mut expected = (0, 0);
    for (i, to) in [&a, &a, &b, &a, &b, &a, &a, &b].into_iter().enumerate() {
        let amount = 100 + i64::try_from(i).unwrap();
        let p = stored_payment(kit, to, amount).await;
        let (lease, held) = claim(kit, p.id).await;
        let result = if i == 3 {
            SettlementResult::Failed(FailureReason::CardDeclined)
        } else {
            if to.account.id == a.account.id {
                expected.0 += amount;
            } else {
                expected.1 += amount;
            }
            SettlementResult::Posted(Transfer::for_payment(&held, Timestamp::now()).unwrap())
        };
        settlements.push(Settlement::Payment {
            payment_id: p.id,
            lease,
            result,
        });
    }
    // One whose lease is not held, and one already settled: neither writes anything.
    let stray = stored_payment(kit, &a, 5000).await;
    claim(kit, stray.id).await;
    settlements.push(Settlement::Payment {
        payment_id: stray.id,
        lease: LeaseId::generate(),
        result: SettlementResult::Failed(FailureReason::CardDeclined),
    });
    let results = kit.store.settlement().settle(&settlements).await;
    assert_eq!(results.len(), settlements.len());
    for (i, result) in results.iter().enumerate().take(8) {
        let expected_status = if i == 3 {
            PaymentStatus::Failed
        } else {
            PaymentStatus::Success
        };
        assert!(
            matches!(result, Ok(SettleOutcome::Payment(p)) if Some(p.id) == payment_of(&settlements[i]) && p.status() == expected_status),
            "settlement {i}: {result:?}"
        );
    }
    assert_eq!(results[8].as_ref().unwrap(), &SettleOutcome::NotHeld);
    assert_eq!(balance(kit, &a.account).await, expected.0);
    assert_eq!(balance(kit, &b.account).await, expected.1);
    assert_eq!(
        balance(kit, &world).await,
        world_before - expected.0 - expected.1
    );
    // The same batch again (a replayed job): nothing more is written.
    for (settlement, result) in settlements[..8]
        .iter()
        .zip(kit.store.settlement().settle(&settlements[..8]).await)
    {
        assert!(matches!(result, Ok(SettleOutcome::NotHeld)), "{result:?}");
        let id = payment_of(settlement).unwrap();
        let now = kit.store.payments().payment(id, Principal::Platform).await;
        assert!(now.unwrap().unwrap().status().is_terminal());
    }
    assert_eq!(balance(kit, &a.account).await, expected.0);
    assert_eq!(balance(kit, &b.account).await, expected.1);
    assert_books_clean(kit).await;
}

pub async fn settle_many_isolates_a_refused_posting(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let mut settlements = Vec::new();
    for amount in [10, 20, 30] {
        let p = stored_payment(kit, &a, amount).await;
        let (lease, held) = claim(kit, p.id).await;
        settlements.push(Settlement::Payment {
            payment_id: p.id,
            lease,
            result: SettlementResult::Posted(
                Transfer::for_payment(&held, Timestamp::now()).unwrap(),
            ),
        });
    }
    let poisoned = stored_payment(kit, &a, 40).await;
    let other = stored_payment(kit, &a, 999).await;
    let (lease, _) = claim(kit, poisoned.id).await;
    settlements.insert(
        1,
        Settlement::Payment {
            payment_id: poisoned.id,
            lease,
            result: SettlementResult::Posted(
                Transfer::for_payment(&processing(&other), Timestamp::now()).unwrap(),
            ),
        },
    );
    let results = kit.store.settlement().settle(&settlements).await;
    assert!(
        results[1].is_err(),
        "the mismatched posting is refused: {:?}",
        results[1]
    );
    for i in [0, 2, 3] {
        assert!(
            matches!(&results[i], Ok(SettleOutcome::Payment(p)) if p.status() == PaymentStatus::Success),
            "settlement {i}: {:?}",
            results[i]
        );
    }
    assert_eq!(balance(kit, &a.account).await, 60);
    assert_eq!(
        kit.store
            .payments()
            .payment(poisoned.id, Principal::Platform)
            .await
            .unwrap()
            .unwrap()
            .status(),
        PaymentStatus::Processing,
        "the refused one is left as it was"
    );
    assert_books_clean(kit).await;
}

pub async fn concurrent_batches_into_one_account_add_up_exactly(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let world = system_account(kit, Currency::USD).await;
    let world_before = balance(kit, &world).await;
    let mut tasks = Vec::new();
    for t in 0..8_i64 {
        let kit = kit.clone();
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            let mut total = 0;
            for round in 0..4 {
                let mut settlements = Vec::new();
                for i in 0..8 {
                    let amount = 1 + t * 100 + round * 10 + i;
                    let p = stored_payment(&kit, &a, amount).await;
                    let (lease, held) = claim(&kit, p.id).await;
                    settlements.push(Settlement::Payment {
                        payment_id: p.id,
                        lease,
                        result: SettlementResult::Posted(
                            Transfer::for_payment(&held, Timestamp::now()).unwrap(),
                        ),
                    });
                    total += amount;
                }
                for result in kit.store.settlement().settle(&settlements).await {
                    assert!(
                        matches!(result, Ok(SettleOutcome::Payment(_))),
                        "{result:?}"
                    );
                }
            }
            total
        }));
    }
    let mut expected = 0;
    for task in tasks {
        expected += task.await.unwrap();
    }
    assert_eq!(balance(kit, &a.account).await, expected);
    assert_eq!(balance(kit, &world).await, world_before - expected);
    assert_books_clean(kit).await;
}

pub async fn balances_start_at_zero(kit: &StoreKit) {
    let a = onboard(kit, Currency::INR).await;
    assert_eq!(
        kit.store
            .accounts()
            .account(a.account.id, Principal::Platform)
            .await
            .unwrap()
            .unwrap()
            .balance,
        Balance::ZERO
    );
}

/// Every claim after a void began says so, naming the attempt being voided (the first one
/// marked), whether the payment is claimed alone or in a batch.
pub async fn a_claim_after_a_void_began_names_the_attempt_being_voided(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = stored_payment(kit, &a, 700).await;
    let free = stored_payment(kit, &a, 300).await;
    let (first, _) = claim(kit, p.id).await;
    assert!(
        kit.store
            .settlement()
            .begin_void(p.id, first, LEASE)
            .await
            .unwrap()
    );
    kit.store
        .settlement()
        .release(Job::Payment(p.id), first)
        .await
        .unwrap();

    let second = LeaseId::generate();
    let again = begin(kit, p.id, second).await;
    assert!(
        matches!(&again, BeginOutcome::Voiding { payment, attempt }
            if payment.id == p.id && payment.status() == PaymentStatus::Processing
                && *attempt == first),
        "{again:?}"
    );
    // A second mark, by the new holder, keeps the first attempt.
    assert!(
        kit.store
            .settlement()
            .begin_void(p.id, second, LEASE)
            .await
            .unwrap()
    );
    kit.store
        .settlement()
        .release(Job::Payment(p.id), second)
        .await
        .unwrap();

    let third = LeaseId::generate();
    let batch = kit
        .store
        .settlement()
        .begin_payments(&[free.id, p.id], third, LEASE)
        .await
        .unwrap();
    assert!(
        matches!(&batch[0], BeginOutcome::Claimed(c) if c.id == free.id),
        "{batch:?}"
    );
    assert!(
        matches!(&batch[1], BeginOutcome::Voiding { payment, attempt }
            if payment.id == p.id && *attempt == first),
        "{batch:?}"
    );
}
/// L8 finds two payments of one key created within one window even when a takeover made the
/// second: the record then holds the second claim, which began after the first payment.
pub async fn the_audit_finds_two_payments_of_one_key_window_across_a_takeover(kit: &StoreKit) {
    let Some(audit) = &kit.audit else {
        return;
    };
    let a = onboard(kit, Currency::USD).await;
    let world = system_account(kit, Currency::USD).await;
    let key = super::unique_key();
    // No lock timeout: an unfinished claim is taken over at once.
    let takeover = IdempotencyPolicy {
        ttl: Duration::from_secs(3600),
        lock_timeout: Duration::ZERO,
    };
    let claim_key = || async {
        match kit
            .store
            .idempotency()
            .claim(a.principal(), &key, super::fingerprint(1), takeover)
            .await
            .unwrap()
        {
            ClaimOutcome::Acquired(claim) => claim,
            other => panic!("the key must be taken, got {other:?}"),
        }
    };
    let keyed = |at: Timestamp| {
        let mut new = super::payment(&a.account, &world, 500, "tok_visa");
        let record = new.get_mut();
        record.idempotency_key = Some(key.clone());
        record.created_by = a.principal();
        record.created_at = at;
        new
    };
    let first = claim_key().await;
    // The first claimant's payment, written without its completion (the duplicate a bug or a
    // lost claim would make), a second before the takeover.
    let early = keyed(Timestamp::now().saturating_sub(Duration::from_secs(1)));
    kit.store
        .payments()
        .create_payment(&early, None)
        .await
        .unwrap();
    let second = claim_key().await;
    assert_ne!(
        first.token, second.token,
        "the key must have been taken over"
    );
    let late = keyed(Timestamp::now());
    kit.store
        .payments()
        .create_payment(&late, Some(completion(&second, "late")))
        .await
        .unwrap();
    let report = audit.audit(Duration::from_secs(24 * 3600)).await.unwrap();
    assert_eq!(report.duplicate_idempotency_keys, 1, "{report}");
}

/// Generates the ledger conformance tests (accounts, payments, settlement) for a `StoreKit`
/// expression.
#[macro_export]
macro_rules! ledger_store_conformance {
    ($kit:expr) => {
        $crate::conformance_tests!(
            ledger,
            $kit,
            [
                system_account_is_unique_per_currency,
                accounts_round_trip_and_are_scoped,
                payments_round_trip_and_are_scoped,
                payments_list_newest_first_with_cursor_and_filter,
                create_payment_refuses_inconsistent_accounts,
                concurrent_creates_succeed_or_fail_each_on_its_own,
                create_payment_completes_its_idempotency_claim_atomically,
                concurrent_payments_under_one_free_key_write_one,
                a_key_creates_a_new_payment_once_its_window_has_passed,
                begin_processing_is_a_compare_and_set_with_a_lease,
                a_payment_whose_void_began_can_only_fail,
                a_claim_after_a_void_began_names_the_attempt_being_voided,
                release_lets_the_next_attempt_claim_at_once,
                settle_posts_one_balanced_transfer_and_sets_success,
                settle_failure_posts_nothing,
                settle_refuses_a_transfer_that_does_not_match,
                concurrent_settlement_of_one_payment_happens_once,
                concurrent_settlements_into_one_account_add_up_exactly,
                entries_list_newest_first_with_cursor_and_are_scoped,
                sweep_returns_stale_work_once_per_interval,
                open_payments_are_counted_with_the_oldest,
                begin_payments_claims_the_free_and_reports_the_rest,
                settle_many_settles_each_once_and_sums_balances,
                settle_many_isolates_a_refused_posting,
                concurrent_batches_into_one_account_add_up_exactly,
                balances_start_at_zero,
                the_audit_finds_two_payments_of_one_key_window_across_a_takeover,
            ]
        );
    };
}
