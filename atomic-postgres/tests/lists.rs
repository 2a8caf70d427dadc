//! A merchant's created range that holds fewer payments than are newer than it is listed from
//! the range itself (`LIST_PAYMENTS_IN_RANGE`), not by walking every newer payment: the pages
//! must be exactly those of the newest-first walk, cursors and other filters included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use atomic_core::id::PaymentId;
use atomic_core::money::Currency;
use atomic_core::page::{CreatedRange, PageLimit, PageRequest};
use atomic_core::ports::PaymentFilter;
use atomic_core::testkit::flows::metadata;
use atomic_core::testkit::{onboard, payment, system_account, vouched};
use atomic_core::time::Timestamp;
use atomic_postgres::testkit::TestDatabase;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_narrow_range_pages_exactly_like_the_walk() {
    let kit = TestDatabase::create().await.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    let funding = system_account(&kit, Currency::USD).await;
    let base = Timestamp::now().saturating_sub(Duration::from_secs(3600));
    let mut ids = Vec::new();
    for i in 0..30_u64 {
        let mut p = payment(&merchant.account, &funding, 100, "tok_visa").into_inner();
        p.created_at = base.saturating_add(Duration::from_secs(60 * i));
        if i % 2 == 0 {
            p.metadata = metadata(&[("parity", "even")]);
        }
        let p = vouched(p);
        kit.store.payments().create_payment(&p, None).await.unwrap();
        ids.push(p.id);
    }
    let range = CreatedRange {
        gte: Some(base.saturating_add(Duration::from_secs(60 * 5))),
        lt: Some(base.saturating_add(Duration::from_secs(60 * 15))),
    };
    let pages = |filter: PaymentFilter| {
        let kit = kit.clone();
        let principal = merchant.principal();
        async move {
            let mut seen: Vec<PaymentId> = Vec::new();
            let mut flags = Vec::new();
            loop {
                let page = kit
                    .store
                    .payments()
                    .payments(
                        principal,
                        &filter,
                        PageRequest {
                            limit: PageLimit::new(4).unwrap(),
                            starting_after: seen.last().copied(),
                        },
                    )
                    .await
                    .unwrap();
                seen.extend(page.items.iter().map(|p| p.id));
                flags.push(page.has_more);
                if !page.has_more {
                    return (seen, flags);
                }
            }
        }
    };
    let (all, flags) = pages(PaymentFilter {
        created: range,
        ..PaymentFilter::default()
    })
    .await;
    let expected: Vec<PaymentId> = (5..15).rev().map(|i| ids[i]).collect();
    assert_eq!(all, expected);
    assert_eq!(flags, [true, true, false]);

    let (even, _) = pages(PaymentFilter {
        created: range,
        metadata: atomic_core::MetadataFilter::new(vec![("parity".into(), "even".into())]).unwrap(),
        ..PaymentFilter::default()
    })
    .await;
    let expected: Vec<PaymentId> = (5..15)
        .rev()
        .filter(|i| i % 2 == 0)
        .map(|i| ids[i])
        .collect();
    assert_eq!(even, expected);

    // Only a lower bound: the range reaches the newest payments (the walk).
    let (recent, _) = pages(PaymentFilter {
        created: CreatedRange {
            gte: range.lt,
            lt: None,
        },
        ..PaymentFilter::default()
    })
    .await;
    let expected: Vec<PaymentId> = (15..30).rev().map(|i| ids[i]).collect();
    assert_eq!(recent, expected);
}

/// The same for refunds and for an account's entries (`LIST_REFUNDS_IN_RANGE`,
/// `SELECT_ENTRIES_IN_RANGE`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_narrow_ranges_of_refunds_and_entries_page_exactly_like_the_walk() {
    use atomic_core::ledger::Transfer;
    use atomic_core::ports::{RefundFilter, Settlement, SettlementResult};
    use atomic_core::testkit::flows::{claim_payment, refund_of, settle_one};

    let kit = TestDatabase::create().await.kit();
    let merchant = onboard(&kit, Currency::USD).await;
    let funding = system_account(&kit, Currency::USD).await;
    let base = Timestamp::now().saturating_sub(Duration::from_secs(3600));
    let at = |i: usize| base.saturating_add(Duration::from_secs(60 * i as u64));
    let (mut entries, mut refunds) = (Vec::new(), Vec::new());
    for i in 0..30 {
        let p = payment(&merchant.account, &funding, 100, "tok_visa");
        kit.store.payments().create_payment(&p, None).await.unwrap();
        let (lease, held) = claim_payment(&kit, p.id).await;
        let transfer = Transfer::for_payment(&held, at(i)).unwrap();
        entries.push(transfer.entries()[1].id);
        let settled = settle_one(
            &kit,
            Settlement::Payment {
                payment_id: p.id,
                lease,
                result: SettlementResult::Posted(transfer),
            },
        )
        .await
        .unwrap();
        let atomic_core::ports::SettleOutcome::Payment(paid) = settled else {
            panic!("{settled:?}");
        };
        let mut refund = refund_of(&paid, 10).into_inner();
        refund.created_at = at(i);
        let refund = vouched(refund);
        kit.store
            .payments()
            .create_refund(&refund, None)
            .await
            .unwrap();
        refunds.push(refund.id);
    }
    let range = CreatedRange {
        gte: Some(at(5)),
        lt: Some(at(15)),
    };
    let limit = PageLimit::new(4).unwrap();
    let principal = merchant.principal();

    let mut seen = Vec::new();
    loop {
        let page = kit
            .store
            .payments()
            .refunds(
                principal,
                &RefundFilter {
                    created: range,
                    ..RefundFilter::default()
                },
                PageRequest {
                    limit,
                    starting_after: seen.last().copied(),
                },
            )
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|r| r.id));
        if !page.has_more {
            break;
        }
    }
    let expected: Vec<_> = (5..15).rev().map(|i| refunds[i]).collect();
    assert_eq!(seen, expected);

    let mut seen = Vec::new();
    loop {
        let page = kit
            .store
            .accounts()
            .entries(
                merchant.account.id,
                principal,
                range,
                PageRequest {
                    limit,
                    starting_after: seen.last().copied(),
                },
            )
            .await
            .unwrap()
            .unwrap();
        seen.extend(page.items.iter().map(|e| e.id));
        if !page.has_more {
            break;
        }
    }
    let expected: Vec<_> = (5..15).rev().map(|i| entries[i]).collect();
    assert_eq!(seen, expected);
}
