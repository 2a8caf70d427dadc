//! Conformance cases for the v1.1 list filters (API.md *Metadata and list filters*): status,
//! `createdGte`/`createdLt`, exact `metadata[k]=v` matches ANDed, `paymentId`, each combined
//! with the caller's scope and with cursors; and for the recovery sweep over refunds and
//! captures.

use std::collections::HashSet;
use std::time::Duration;

use super::flows::{
    amount, authorized, claim_and_post, claim_and_post_refund, claim_payment, metadata, refund_of,
    stored_payment_with, stored_refund, succeeded,
};
use super::{Onboarded, StoreKit, assert_books_clean, onboard, system_account};
use crate::error::Error;
use crate::id::{PaymentId, RefundId};
use crate::ledger::Transfer;
use crate::metadata::{Metadata, MetadataFilter};
use crate::money::Currency;
use crate::page::{CreatedRange, PageLimit, PageRequest};
use crate::payment::{CaptureMethod, Payment, PaymentStatus};
use crate::ports::{
    BeginOutcome, Job, LeaseId, PaymentFilter, RefundFilter, SettleOutcome, Settlement,
    SettlementResult,
};
use crate::principal::Principal;
use crate::refund::RefundStatus;
use crate::time::Timestamp;

/// Metadata pairs as a case writes them.
type Pairs<'a> = &'a [(&'a str, &'a str)];

fn page<C>(limit: i64, after: Option<C>) -> PageRequest<C> {
    PageRequest {
        limit: PageLimit::new(limit).unwrap(),
        starting_after: after,
    }
}

fn meta_filter(pairs: &[(&str, &str)]) -> MetadataFilter {
    MetadataFilter::new(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    )
    .unwrap()
}

fn by_meta(pairs: &[(&str, &str)]) -> PaymentFilter {
    PaymentFilter {
        metadata: meta_filter(pairs),
        ..PaymentFilter::default()
    }
}

/// A minute after `base`, `n` times.
fn at(base: Timestamp, minutes: u64) -> Timestamp {
    base.saturating_add(Duration::from_secs(60 * minutes))
}

async fn payment_ids(
    kit: &StoreKit,
    viewer: Principal,
    filter: &PaymentFilter,
    request: PageRequest<PaymentId>,
) -> (Vec<PaymentId>, bool) {
    let page = kit
        .store
        .payments()
        .payments(viewer, filter, request)
        .await
        .unwrap();
    (page.items.iter().map(|p| p.id).collect(), page.has_more)
}

async fn refund_ids(kit: &StoreKit, viewer: Principal, filter: &RefundFilter) -> Vec<RefundId> {
    kit.store
        .payments()
        .refunds(viewer, filter, page(100, None))
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| r.id)
        .collect()
}

/// Stores a payment created at `created_at` with `pairs` as its metadata.
async fn created_with(
    kit: &StoreKit,
    to: &Onboarded,
    created_at: Timestamp,
    pairs: &[(&str, &str)],
) -> Payment {
    let funding = system_account(kit, to.account.currency).await;
    let mut p = super::payment(&to.account, &funding, 100, "tok_visa");
    p.get_mut().created_at = created_at;
    p.get_mut().metadata = metadata(pairs);
    kit.store.payments().create_payment(&p, None).await.unwrap();
    p.into_inner()
}

/// Metadata filters match exactly (no pattern, no injection) and AND together; every list
/// stays within the caller's scope.
pub async fn payments_filter_by_metadata_exactly(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let b = onboard(kit, Currency::USD).await;
    let base = Timestamp::now();
    let pairs: [&[(&str, &str)]; 8] = [
        &[("orderId", "A-1"), ("shop", "x")],
        &[("orderId", "A-2"), ("shop", "x")],
        &[("orderId", "' OR 1=1 --")],
        &[("orderId", "%")],
        &[("orderId", "A-1"), ("shop", "y")],
        &[("orderId", "a-1")],
        &[("orderId", "A_1"), ("note", "")],
        &[],
    ];
    let mut p = Vec::new();
    for (i, pairs) in pairs.iter().enumerate() {
        p.push(created_with(kit, &a, at(base, i as u64), pairs).await.id);
    }
    let foreign = created_with(kit, &b, base, &[("orderId", "A-1")]).await.id;
    let mine = |pairs: &[(&str, &str)]| by_meta(pairs);
    let cases: Vec<(Pairs, Vec<PaymentId>)> = vec![
        (&[("orderId", "A-1")], vec![p[4], p[0]]),
        (&[("orderId", "A-1"), ("shop", "x")], vec![p[0]]),
        (&[("shop", "x"), ("orderId", "A-2")], vec![p[1]]),
        (&[("orderId", "A-1"), ("shop", "z")], vec![]),
        (&[("orderId", "' OR 1=1 --")], vec![p[2]]),
        (&[("orderId", "%")], vec![p[3]]),
        (&[("orderId", "A-%")], vec![]),
        (&[("orderId", "A_1")], vec![p[6]]),
        (&[("orderId", "A?1")], vec![]),
        (&[("note", "")], vec![p[6]]),
        (&[("shop", "")], vec![]),
        (&[("missing", "A-1")], vec![]),
        (&[("orderId", "a-1")], vec![p[5]]),
    ];
    for (pairs, expected) in cases {
        let (got, _) = payment_ids(kit, a.principal(), &mine(pairs), page(100, None)).await;
        assert_eq!(got, expected, "filter {pairs:?}");
    }
    let (b_sees, _) = payment_ids(
        kit,
        b.principal(),
        &mine(&[("orderId", "A-1")]),
        page(100, None),
    )
    .await;
    assert_eq!(
        b_sees,
        vec![foreign],
        "a merchant never sees another's rows"
    );
    let (platform, _) = payment_ids(
        kit,
        Principal::Platform,
        &mine(&[("orderId", "A-1")]),
        page(100, None),
    )
    .await;
    assert_eq!(
        platform.iter().copied().collect::<HashSet<_>>(),
        HashSet::from([p[0], p[4], foreign])
    );
    let (all, _) = payment_ids(
        kit,
        a.principal(),
        &PaymentFilter::default(),
        page(100, None),
    )
    .await;
    assert_eq!(all.len(), 8, "no filter: every own payment");
    assert_books_clean(kit).await;
}

/// Status and creation-time filters, alone and together with metadata, and cursors through
/// filtered lists.
pub async fn payments_filter_by_status_and_created_range_with_cursors(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let b = onboard(kit, Currency::USD).await;
    let base = Timestamp::now();
    let mut p = Vec::new();
    for i in 0..6u64 {
        let tag = if i % 2 == 0 { "even" } else { "odd" };
        p.push(created_with(kit, &a, at(base, i), &[("parity", tag)]).await);
    }
    let other = created_with(kit, &b, at(base, 2), &[("parity", "even")]).await;
    claim_and_post(kit, p[1].id).await;
    claim_and_post(kit, p[2].id).await;
    claim_and_post(kit, p[4].id).await;
    claim_and_post(kit, other.id).await;

    let success = PaymentFilter {
        status: Some(PaymentStatus::Success),
        ..PaymentFilter::default()
    };
    let ids = |v: &[usize]| v.iter().map(|i| p[*i].id).collect::<Vec<_>>();
    assert_eq!(
        payment_ids(kit, a.principal(), &success, page(100, None))
            .await
            .0,
        ids(&[4, 2, 1])
    );
    let range = CreatedRange {
        gte: Some(at(base, 1)),
        lt: Some(at(base, 4)),
    };
    let in_range = PaymentFilter {
        created: range,
        ..PaymentFilter::default()
    };
    assert_eq!(
        payment_ids(kit, a.principal(), &in_range, page(100, None))
            .await
            .0,
        ids(&[3, 2, 1]),
        "createdGte is inclusive, createdLt exclusive"
    );
    let only_gte = PaymentFilter {
        created: CreatedRange {
            gte: Some(at(base, 4)),
            lt: None,
        },
        ..PaymentFilter::default()
    };
    assert_eq!(
        payment_ids(kit, a.principal(), &only_gte, page(100, None))
            .await
            .0,
        ids(&[5, 4])
    );
    let only_lt = PaymentFilter {
        created: CreatedRange {
            gte: None,
            lt: Some(at(base, 1)),
        },
        ..PaymentFilter::default()
    };
    assert_eq!(
        payment_ids(kit, a.principal(), &only_lt, page(100, None))
            .await
            .0,
        ids(&[0])
    );
    let together = PaymentFilter {
        status: Some(PaymentStatus::Success),
        created: range,
        metadata: meta_filter(&[("parity", "even")]),
    };
    assert_eq!(
        payment_ids(kit, a.principal(), &together, page(100, None))
            .await
            .0,
        ids(&[2])
    );
    assert_eq!(
        payment_ids(kit, Principal::Platform, &together, page(100, None))
            .await
            .0,
        vec![other.id, p[2].id],
        "the platform sees every merchant's, newest first"
    );

    // Cursors walk a filtered list; a cursor need not pass the filter itself.
    let even = by_meta(&[("parity", "even")]);
    let (first, more) = payment_ids(kit, a.principal(), &even, page(2, None)).await;
    assert_eq!((first, more), (ids(&[4, 2]), true));
    let (rest, more) = payment_ids(kit, a.principal(), &even, page(2, Some(p[2].id))).await;
    assert_eq!((rest, more), (ids(&[0]), false));
    let (from_odd, _) = payment_ids(kit, a.principal(), &even, page(10, Some(p[3].id))).await;
    assert_eq!(from_odd, ids(&[2, 0]));
    assert!(matches!(
        kit.store
            .payments()
            .payments(a.principal(), &even, page(2, Some(other.id)))
            .await,
        Err(Error::UnknownCursor)
    ));
    let (none, more) = payment_ids(kit, a.principal(), &together, page(1, Some(p[2].id))).await;
    assert_eq!((none, more), (vec![], false));
    assert_books_clean(kit).await;
}

/// Refund lists: by payment (one the caller cannot see, or none, gives an empty list), by
/// status, by creation time and metadata, within the caller's scope, with cursors.
pub async fn refunds_filter_by_payment_status_and_scope(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let b = onboard(kit, Currency::USD).await;
    let p = succeeded(kit, &a, 1000).await;
    let q = succeeded(kit, &a, 1000).await;
    let theirs = succeeded(kit, &b, 1000).await;
    let base = Timestamp::now();
    let mut stored = Vec::new();
    for (i, (payment, meta)) in [
        (&p, "one"),
        (&p, "two"),
        (&q, "one"),
        (&p, "one"),
        (&q, "two"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut refund = refund_of(payment, 100);
        refund.get_mut().created_at = at(base, i as u64);
        refund.get_mut().metadata = metadata(&[("batch", meta)]);
        kit.store
            .payments()
            .create_refund(&refund, None)
            .await
            .unwrap();
        stored.push(refund.id);
    }
    let foreign = stored_refund(kit, &theirs, 100).await.id;
    assert!(matches!(
        claim_and_post_refund(kit, stored[0]).await,
        Ok(SettleOutcome::Refund(r)) if r.status() == RefundStatus::Success
    ));
    assert!(matches!(
        claim_and_post_refund(kit, stored[2]).await,
        Ok(SettleOutcome::Refund(r)) if r.status() == RefundStatus::Success
    ));

    let ids = |v: &[usize]| v.iter().map(|i| stored[*i]).collect::<Vec<_>>();
    let of = |payment: PaymentId| RefundFilter {
        payment: Some(payment),
        ..RefundFilter::default()
    };
    assert_eq!(
        refund_ids(kit, a.principal(), &of(p.id)).await,
        ids(&[3, 1, 0])
    );
    assert_eq!(
        refund_ids(kit, a.principal(), &of(q.id)).await,
        ids(&[4, 2])
    );
    assert!(
        refund_ids(kit, a.principal(), &of(theirs.id))
            .await
            .is_empty(),
        "a payment the caller cannot see gives an empty list"
    );
    assert!(
        refund_ids(kit, a.principal(), &of(PaymentId::generate()))
            .await
            .is_empty()
    );
    assert_eq!(
        refund_ids(kit, Principal::Platform, &of(theirs.id)).await,
        vec![foreign]
    );
    let all_mine = refund_ids(kit, a.principal(), &RefundFilter::default()).await;
    assert_eq!(all_mine, ids(&[4, 3, 2, 1, 0]), "never another merchant's");
    assert_eq!(
        refund_ids(kit, b.principal(), &RefundFilter::default()).await,
        vec![foreign]
    );

    let succeeded_only = RefundFilter {
        status: Some(RefundStatus::Success),
        ..RefundFilter::default()
    };
    assert_eq!(
        refund_ids(kit, a.principal(), &succeeded_only).await,
        ids(&[2, 0])
    );
    let pending_of_p = RefundFilter {
        payment: Some(p.id),
        status: Some(RefundStatus::Pending),
        ..RefundFilter::default()
    };
    assert_eq!(
        refund_ids(kit, a.principal(), &pending_of_p).await,
        ids(&[3, 1])
    );
    let ranged = RefundFilter {
        created: CreatedRange {
            gte: Some(at(base, 1)),
            lt: Some(at(base, 3)),
        },
        ..RefundFilter::default()
    };
    assert_eq!(refund_ids(kit, a.principal(), &ranged).await, ids(&[2, 1]));
    let batch_one = RefundFilter {
        metadata: meta_filter(&[("batch", "one")]),
        ..RefundFilter::default()
    };
    assert_eq!(
        refund_ids(kit, a.principal(), &batch_one).await,
        ids(&[3, 2, 0])
    );
    let batch_one_of_p = RefundFilter {
        payment: Some(p.id),
        ..batch_one.clone()
    };
    assert_eq!(
        refund_ids(kit, a.principal(), &batch_one_of_p).await,
        ids(&[3, 0])
    );

    let first = kit
        .store
        .payments()
        .refunds(a.principal(), &batch_one, page(1, None))
        .await
        .unwrap();
    assert_eq!(
        (
            first.items.iter().map(|r| r.id).collect::<Vec<_>>(),
            first.has_more
        ),
        (ids(&[3]), true)
    );
    let next = kit
        .store
        .payments()
        .refunds(a.principal(), &batch_one, page(5, Some(stored[3])))
        .await
        .unwrap();
    assert_eq!(
        (
            next.items.iter().map(|r| r.id).collect::<Vec<_>>(),
            next.has_more
        ),
        (ids(&[2, 0]), false)
    );
    assert!(matches!(
        kit.store
            .payments()
            .refunds(
                a.principal(),
                &RefundFilter::default(),
                page(5, Some(foreign))
            )
            .await,
        Err(Error::UnknownCursor)
    ));
    assert!(matches!(
        kit.store
            .payments()
            .refunds(
                a.principal(),
                &RefundFilter::default(),
                page(5, Some(RefundId::generate()))
            )
            .await,
        Err(Error::UnknownCursor)
    ));
    assert_books_clean(kit).await;
}

/// Entries filter by creation time, within the account's scope.
pub async fn entries_filter_by_created_range(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let b = onboard(kit, Currency::USD).await;
    let world = system_account(kit, Currency::USD).await;
    let base = Timestamp::now();
    let mut txs = Vec::new();
    for i in 0..4u64 {
        let p = stored_payment_with(
            kit,
            &a,
            10 + i as i64,
            CaptureMethod::Automatic,
            Metadata::default(),
        )
        .await;
        let (lease, held) = claim_payment(kit, p.id).await;
        let transfer = Transfer::for_payment(&held, at(base, i)).unwrap();
        txs.push(transfer.id());
        let settled = kit
            .store
            .settlement()
            .settle(&[Settlement::Payment {
                payment_id: p.id,
                lease,
                result: SettlementResult::Posted(transfer),
            }])
            .await;
        assert!(
            matches!(settled[0], Ok(SettleOutcome::Payment(_))),
            "{settled:?}"
        );
    }
    let range = CreatedRange {
        gte: Some(at(base, 1)),
        lt: Some(at(base, 3)),
    };
    let listed = |account, viewer, created, request| {
        let kit = kit.clone();
        async move {
            kit.store
                .accounts()
                .entries(account, viewer, created, request)
                .await
                .unwrap()
        }
    };
    let got = listed(a.account.id, a.principal(), range, page(100, None))
        .await
        .unwrap();
    assert_eq!(
        got.items
            .iter()
            .map(|e| e.transaction_id)
            .collect::<Vec<_>>(),
        vec![txs[2], txs[1]]
    );
    let first = listed(a.account.id, a.principal(), range, page(1, None))
        .await
        .unwrap();
    assert!(first.has_more);
    let rest = listed(
        a.account.id,
        a.principal(),
        range,
        page(1, Some(first.items[0].id)),
    )
    .await
    .unwrap();
    assert_eq!(
        rest.items
            .iter()
            .map(|e| e.transaction_id)
            .collect::<Vec<_>>(),
        vec![txs[1]]
    );
    assert!(!rest.has_more);
    let world_side = listed(world.id, Principal::Platform, range, page(100, None))
        .await
        .unwrap();
    let world_txs: HashSet<_> = world_side.items.iter().map(|e| e.transaction_id).collect();
    assert!(world_txs.contains(&txs[1]) && world_txs.contains(&txs[2]));
    assert!(!world_txs.contains(&txs[0]) && !world_txs.contains(&txs[3]));
    assert_eq!(
        listed(a.account.id, b.principal(), range, page(100, None)).await,
        None,
        "another merchant's account is invisible, filtered or not"
    );
    let empty = CreatedRange {
        gte: Some(at(base, 10)),
        lt: None,
    };
    assert!(
        listed(a.account.id, a.principal(), empty, page(100, None))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_books_clean(kit).await;
}

/// The sweep returns refunds left `PENDING` and captures asked but never claimed, as well as
/// held ones whose lease ran out, once per interval; it leaves fresh and held work alone.
pub async fn sweep_returns_stale_refunds_and_stuck_captures(kit: &StoreKit) {
    let stale_after = Duration::from_secs(60);
    let long = Duration::from_secs(3600);
    let a = onboard(kit, Currency::USD).await;
    let p = succeeded(kit, &a, 1000).await;
    let pending_refund = stored_refund(kit, &p, 100).await.id;
    let held_refund = stored_refund(kit, &p, 100).await.id;
    let done_refund = stored_refund(kit, &p, 100).await.id;
    kit.store
        .settlement()
        .begin_refunds(&[held_refund], LeaseId::generate(), long)
        .await
        .unwrap();
    claim_and_post_refund(kit, done_refund).await.unwrap();
    let capture = authorized(kit, &a, 500).await.id;
    kit.store
        .payments()
        .request_capture(capture, amount(500), Timestamp::now(), long, None)
        .await
        .unwrap();
    let held_capture = authorized(kit, &a, 500).await.id;
    kit.store
        .payments()
        .request_capture(held_capture, amount(500), Timestamp::now(), long, None)
        .await
        .unwrap();
    let begun = kit
        .store
        .settlement()
        .begin_payments(&[held_capture], LeaseId::generate(), long)
        .await
        .unwrap();
    assert!(
        matches!(&begun[..], [BeginOutcome::Claimed(_)]),
        "{begun:?}"
    );
    let waiting = authorized(kit, &a, 500).await.id;

    let ours: HashSet<Job> = [
        Job::Refund(pending_refund),
        Job::Refund(held_refund),
        Job::Refund(done_refund),
        Job::Payment(capture),
        Job::Payment(held_capture),
        Job::Payment(waiting),
        Job::Payment(p.id),
    ]
    .into();
    let sweep = || async {
        kit.store
            .settlement()
            .sweep(stale_after, 10_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|job| ours.contains(job))
            .collect::<HashSet<_>>()
    };
    assert!(sweep().await.is_empty(), "fresh work is left alone");
    kit.time.advance(stale_after + Duration::from_secs(1)).await;
    let due = HashSet::from([Job::Refund(pending_refund), Job::Payment(capture)]);
    assert_eq!(
        sweep().await,
        due,
        "a stale refund and a capture nobody claimed; not held, finished or authorized work"
    );
    assert!(
        sweep().await.is_empty(),
        "swept work waits another interval"
    );
    kit.time.advance(stale_after + Duration::from_secs(1)).await;
    assert_eq!(sweep().await, due);
    // Once their leases run out, the held ones are due too.
    kit.time.advance(long).await;
    assert_eq!(
        sweep().await,
        HashSet::from([
            Job::Refund(pending_refund),
            Job::Payment(capture),
            Job::Refund(held_refund),
            Job::Payment(held_capture),
        ])
    );
    assert_books_clean(kit).await;
}

/// Generates the list-filter and sweep conformance tests for a `StoreKit` expression.
#[macro_export]
macro_rules! list_conformance {
    ($kit:expr) => {
        $crate::conformance_tests!(
            lists,
            $kit,
            [
                payments_filter_by_metadata_exactly,
                payments_filter_by_status_and_created_range_with_cursors,
                refunds_filter_by_payment_status_and_scope,
                entries_filter_by_created_range,
                sweep_returns_stale_refunds_and_stuck_captures,
            ]
        );
    };
}
