//! Conformance cases for the outbox (API.md *Events* and *Webhooks*; TEST-MATRIX L15, L16):
//! each state change writes its event in the same store step, with one delivery per endpoint
//! that receives it; events are read by their owner and the platform; endpoints are limited per
//! owner and hidden once deleted; due deliveries are claimed by one holder at a time, at most
//! `per_endpoint` of one endpoint, and written back only under the lease that claimed them.
//!
//! An adapter's [`super::TimeTravel`] must age events, endpoints and deliveries too (their
//! times and leases), as it ages payments.

use std::collections::HashSet;
use std::time::Duration;

use super::flows::{
    authorized, claim_payment, reload, reload_refund, settle_one, stored_payment_with, succeeded,
};
use super::{StoreKit, acquire, completion, onboard};
use crate::error::Error;
use crate::event::{Event, EventFilter, EventType, PaymentView, RefundView};
use crate::fresh::Fresh;
use crate::id::{EventId, PaymentId};
use crate::idempotency::ClaimOutcome;
use crate::metadata::Metadata;
use crate::money::Currency;
use crate::page::{CreatedRange, Page, PageLimit, PageRequest};
use crate::payment::{CancellationReason, CaptureMethod, FailureReason};
use crate::ports::{
    DeliveryFilter, LeaseId, SendOutcome, SettleOutcome, Settlement, SettlementResult,
};
use crate::principal::{Owner, Principal};
use crate::refund::RefundFailureReason;
use crate::time::Timestamp;
use crate::webhook::{
    DeliveryStatus, MAX_ENDPOINTS_PER_OWNER, RetrySchedule, Subscription, WebhookDelivery,
    WebhookEndpoint, WebhookUrl,
};

const CLAIM: Duration = Duration::from_secs(60);

/// Claims what is due under `lease` (10 at most, 10 per endpoint).
async fn claim(kit: &StoreKit, lease: LeaseId) -> Vec<crate::ports::DueDelivery> {
    kit.store
        .outbox()
        .claim_deliveries(lease, CLAIM, 10, 10)
        .await
        .unwrap()
}

/// Whether nothing is due for a new claim.
async fn nothing_due(kit: &StoreKit) -> bool {
    claim(kit, LeaseId::generate()).await.is_empty()
}

/// A merchant with an endpoint on every event and one settled payment, its delivery due.
async fn one_due(kit: &StoreKit) -> (super::Onboarded, WebhookEndpoint) {
    let a = onboard(kit, Currency::USD).await;
    let e = stored_endpoint(kit, a.account.owner, &["*"]).await;
    succeeded(kit, &a, 100).await;
    then(kit).await;
    (a, e)
}

/// Lets a little time pass, so that what was just written is due by every store's clock (a
/// manual clock stands still while records are stamped with the real time).
async fn then(kit: &StoreKit) {
    kit.time.advance(Duration::from_secs(5)).await;
}

fn everything<C>() -> PageRequest<C> {
    PageRequest {
        limit: PageLimit::new(100).unwrap(),
        starting_after: None,
    }
}

/// A new endpoint of `owner` for `events` (a reserved name: nothing is ever sent there).
pub fn endpoint(owner: Owner, events: &[&str]) -> Fresh<WebhookEndpoint> {
    WebhookEndpoint::new(
        owner,
        WebhookUrl::parse("https://hooks.example.com/atomic").unwrap(),
        Subscription::parse(events).unwrap(),
        None,
        Timestamp::now(),
    )
    .unwrap()
}

/// Stores a new endpoint.
pub async fn stored_endpoint(kit: &StoreKit, owner: Owner, events: &[&str]) -> WebhookEndpoint {
    let e = endpoint(owner, events);
    kit.store
        .webhooks()
        .create_endpoint(&e, None)
        .await
        .unwrap();
    e.into_inner()
}

/// Every event the platform sees about `payment`, oldest first.
async fn events_of(kit: &StoreKit, payment: PaymentId) -> Vec<Event> {
    let page: Page<Event> = kit
        .store
        .events()
        .events(Principal::Platform, &EventFilter::default(), everything())
        .await
        .unwrap();
    let mut mine: Vec<Event> = page
        .items
        .into_iter()
        .filter(|e| e.payment_id == payment)
        .collect();
    mine.reverse();
    mine
}

fn object_of(event: &Event) -> serde_json::Value {
    let body: serde_json::Value = serde_json::from_str(&event.body).unwrap();
    assert_eq!(body["id"], event.id.to_string());
    assert_eq!(body["type"], event.event_type.as_str());
    assert_eq!(body["merchantId"], event.merchant_account.to_string());
    assert_eq!(body["createdAt"], event.created_at.to_string());
    body["data"]["object"].clone()
}

fn as_json<T: serde::Serialize>(view: &T) -> serde_json::Value {
    serde_json::to_value(view).unwrap()
}

async fn deliveries(kit: &StoreKit, e: &WebhookEndpoint) -> Vec<WebhookDelivery> {
    kit.store
        .webhooks()
        .deliveries(
            e.id,
            Principal::Platform,
            &DeliveryFilter::default(),
            everything(),
        )
        .await
        .unwrap()
        .expect("a live endpoint")
        .items
}

/// L15: authorized, succeeded (capture), failed, canceled, refund succeeded and failed each
/// write exactly one event of their type, whose object is the record as stored by that
/// change; creating and asking for a capture write none.
pub async fn each_change_writes_its_event_with_the_record_as_stored(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let auth = authorized(kit, &a, 900).await;
    let events = events_of(kit, auth.id).await;
    assert_eq!(events.len(), 1, "creating writes none; authorizing one");
    assert_eq!(events[0].event_type, EventType::PaymentAuthorized);
    assert_eq!(object_of(&events[0]), as_json(&PaymentView::new(&auth)));
    assert_eq!(events[0].owner, a.account.owner);
    assert_eq!(events[0].created_at, auth.updated_at());

    let canceled = kit
        .store
        .payments()
        .cancel(
            auth.id,
            CancellationReason::Requested,
            Timestamp::now(),
            None,
        )
        .await
        .unwrap();
    let events = events_of(kit, auth.id).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].event_type, EventType::PaymentCanceled);
    assert_eq!(object_of(&events[1]), as_json(&PaymentView::new(&canceled)));

    let failing =
        stored_payment_with(kit, &a, 300, CaptureMethod::Automatic, Metadata::default()).await;
    let (lease, _) = claim_payment(kit, failing.id).await;
    let result = SettlementResult::Failed(FailureReason::CardDeclined);
    let settlement = Settlement::Payment {
        payment_id: failing.id,
        lease,
        result,
    };
    settle_one(kit, settlement).await.unwrap();
    let events = events_of(kit, failing.id).await;
    assert_eq!(
        events.iter().map(|e| e.event_type).collect::<Vec<_>>(),
        [EventType::PaymentFailed]
    );
    assert_eq!(
        object_of(&events[0]),
        as_json(&PaymentView::new(&reload(kit, failing.id).await))
    );

    let paid = succeeded(kit, &a, 1_000).await;
    let refunded = super::flows::stored_refund(kit, &paid, 400).await;
    super::flows::claim_and_post_refund(kit, refunded.id)
        .await
        .unwrap();
    let refused = super::flows::stored_refund(kit, &paid, 100).await;
    let (lease, _) = super::flows::claim_refund(kit, refused.id).await;
    let result = crate::ports::RefundResult::Failed(RefundFailureReason::InsufficientBalance);
    settle_one(
        kit,
        Settlement::Refund {
            refund_id: refused.id,
            lease,
            result,
        },
    )
    .await
    .unwrap();
    let events = events_of(kit, paid.id).await;
    let types: Vec<_> = events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        [
            EventType::PaymentSucceeded,
            EventType::RefundSucceeded,
            EventType::RefundFailed
        ]
    );
    assert_eq!(events[1].refund_id, Some(refunded.id));
    assert_eq!(
        object_of(&events[1]),
        as_json(&RefundView::new(&reload_refund(kit, refunded.id).await))
    );
    assert_eq!(
        object_of(&events[2]),
        as_json(&RefundView::new(&reload_refund(kit, refused.id).await))
    );
}

/// No change, no event: a settlement under a lost lease, a refused posting and a second
/// settlement write none.
pub async fn a_change_not_written_writes_no_event(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let p = stored_payment_with(kit, &a, 500, CaptureMethod::Automatic, Metadata::default()).await;
    let (lease, held) = claim_payment(kit, p.id).await;
    let stale = super::flows::posting(&held, LeaseId::generate());
    assert_eq!(
        settle_one(kit, stale).await.unwrap(),
        SettleOutcome::NotHeld
    );
    assert!(events_of(kit, p.id).await.is_empty());
    settle_one(kit, super::flows::posting(&held, lease))
        .await
        .unwrap();
    assert_eq!(
        settle_one(kit, super::flows::posting(&held, lease))
            .await
            .unwrap(),
        SettleOutcome::NotHeld
    );
    assert_eq!(
        events_of(kit, p.id).await.len(),
        1,
        "settled once, one event"
    );
    let auth = authorized(kit, &a, 200).await;
    kit.store
        .payments()
        .cancel(
            auth.id,
            CancellationReason::Requested,
            Timestamp::now(),
            None,
        )
        .await
        .unwrap();
    let again = kit
        .store
        .payments()
        .cancel(
            auth.id,
            CancellationReason::Requested,
            Timestamp::now(),
            None,
        )
        .await;
    assert!(
        matches!(again, Err(Error::InvalidState { .. })),
        "{again:?}"
    );
    assert_eq!(
        events_of(kit, auth.id).await.len(),
        2,
        "authorized, canceled once"
    );
}

/// Expiry writes one `payment.canceled` per authorization it cancels, however often it runs.
pub async fn expiry_writes_one_canceled_event(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let auth = authorized(kit, &a, 900).await;
    let ttl = Duration::from_secs(3600);
    kit.time.advance(ttl + Duration::from_secs(5)).await;
    let settlement = kit.store.settlement();
    let expired = settlement.expire_authorizations(ttl, 100).await.unwrap();
    assert!(expired.iter().any(|p| p.id == auth.id));
    settlement.expire_authorizations(ttl, 100).await.unwrap();
    let events = events_of(kit, auth.id).await;
    let types: Vec<_> = events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        [EventType::PaymentAuthorized, EventType::PaymentCanceled]
    );
    let canceled = reload(kit, auth.id).await;
    assert_eq!(
        canceled.cancellation_reason(),
        Some(CancellationReason::Expired)
    );
    assert_eq!(object_of(&events[1]), as_json(&PaymentView::new(&canceled)));
}

/// A merchant reads its own events only; the platform reads all; the type and creation range
/// filter; a cursor the viewer cannot see is refused.
pub async fn events_are_read_by_their_owner_and_the_platform(kit: &StoreKit) {
    let (a, b) = (
        onboard(kit, Currency::USD).await,
        onboard(kit, Currency::USD).await,
    );
    let pa = succeeded(kit, &a, 100).await;
    let pb = succeeded(kit, &b, 200).await;
    let eb = events_of(kit, pb.id).await.remove(0);
    let ea = events_of(kit, pa.id).await.remove(0);
    let events = kit.store.events();
    assert_eq!(
        events.event(ea.id, a.principal()).await.unwrap(),
        Some(ea.clone())
    );
    assert_eq!(events.event(eb.id, a.principal()).await.unwrap(), None);
    assert_eq!(
        events.event(eb.id, Principal::Platform).await.unwrap(),
        Some(eb.clone())
    );
    assert_eq!(
        events
            .event(EventId::generate(), Principal::Platform)
            .await
            .unwrap(),
        None
    );
    let mine = events
        .events(a.principal(), &EventFilter::default(), everything())
        .await
        .unwrap();
    assert_eq!(mine.items, std::slice::from_ref(&ea));
    let cursor = PageRequest {
        starting_after: Some(eb.id),
        ..everything()
    };
    let refused = events
        .events(a.principal(), &EventFilter::default(), cursor)
        .await;
    assert!(matches!(refused, Err(Error::UnknownCursor)), "{refused:?}");
    let failed_only = EventFilter {
        event_type: Some(EventType::PaymentFailed),
        ..EventFilter::default()
    };
    assert!(
        events
            .events(a.principal(), &failed_only, everything())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let after = EventFilter {
        created: CreatedRange {
            gte: Some(eb.created_at),
            lt: None,
        },
        ..EventFilter::default()
    };
    let all_after = events
        .events(Principal::Platform, &after, everything())
        .await
        .unwrap();
    assert!(
        all_after.items.contains(&eb)
            && all_after
                .items
                .iter()
                .all(|e| e.created_at >= eb.created_at)
    );
    let one = PageRequest {
        limit: PageLimit::new(1).unwrap(),
        starting_after: None,
    };
    let first = events
        .events(Principal::Platform, &EventFilter::default(), one)
        .await
        .unwrap();
    assert!(first.has_more);
    assert_eq!(first.items, [eb], "newest first");
}

/// L16: an event reaches, once each, the live endpoints that receive it: the platform's
/// (every merchant's events), and its merchant's subscribed to its type; no other.
pub async fn an_event_gets_one_delivery_per_endpoint_that_receives_it(kit: &StoreKit) {
    let (a, b) = (
        onboard(kit, Currency::USD).await,
        onboard(kit, Currency::USD).await,
    );
    let platform = stored_endpoint(kit, Owner::Platform, &["*"]).await;
    let a_paid = stored_endpoint(kit, a.account.owner, &["payment.succeeded"]).await;
    let a_refunds = stored_endpoint(kit, a.account.owner, &["refund.failed"]).await;
    let b_all = stored_endpoint(kit, b.account.owner, &["*"]).await;
    let gone = stored_endpoint(kit, a.account.owner, &["*"]).await;
    kit.store
        .webhooks()
        .delete_endpoint(gone.id, Principal::Platform, Timestamp::now())
        .await
        .unwrap();

    let p = succeeded(kit, &a, 700).await;
    let event = events_of(kit, p.id).await.remove(0);
    for (e, expected) in [(&platform, 1), (&a_paid, 1), (&a_refunds, 0), (&b_all, 0)] {
        let got = deliveries(kit, e).await;
        assert_eq!(got.len(), expected, "endpoint {:?}", e.subscription);
        for d in got {
            assert_eq!(
                (d.event_id, d.endpoint_id, d.status),
                (event.id, e.id, DeliveryStatus::Pending)
            );
            assert_eq!(
                (d.attempts, d.next_attempt_at),
                (0, Some(event.created_at)),
                "due at once"
            );
        }
    }
}

/// At most 16 live endpoints per owner, however many creations race; a deleted one no longer
/// counts; owners are counted apart; creation completes its idempotency claim.
pub async fn endpoints_are_limited_per_owner(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let tries = MAX_ENDPOINTS_PER_OWNER + 4;
    let mut racing = tokio::task::JoinSet::new();
    for _ in 0..tries {
        let kit = kit.clone();
        let owner = a.account.owner;
        racing.spawn(async move {
            let e = endpoint(owner, &["*"]);
            kit.store
                .webhooks()
                .create_endpoint(&e, None)
                .await
                .map(|()| e.id)
        });
    }
    let mut made = Vec::new();
    while let Some(result) = racing.join_next().await {
        match result.unwrap() {
            Ok(id) => made.push(id),
            Err(Error::LimitReached) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(made.len(), MAX_ENDPOINTS_PER_OWNER);
    let listed = kit
        .store
        .webhooks()
        .endpoints(a.principal(), CreatedRange::default(), everything())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), MAX_ENDPOINTS_PER_OWNER);
    let extra = endpoint(a.account.owner, &["*"]);
    let refused = kit.store.webhooks().create_endpoint(&extra, None).await;
    assert!(matches!(refused, Err(Error::LimitReached)), "{refused:?}");
    stored_endpoint(kit, Owner::Platform, &["*"]).await;
    kit.store
        .webhooks()
        .delete_endpoint(made[0], a.principal(), Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    let claim = acquire(kit, a.principal()).await;
    kit.store
        .webhooks()
        .create_endpoint(&extra, Some(completion(&claim, "endpoint")))
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
    assert!(
        matches!(&replay, ClaimOutcome::Replay(r) if r.body == "endpoint"),
        "{replay:?}"
    );
}

/// A deleted endpoint is gone for every read and the retry, and its deliveries are claimed
/// no more; others' ids are not found. (What its deliveries became is the audit's L16.)
pub async fn a_deleted_endpoint_is_gone_and_its_pending_deliveries_fail(kit: &StoreKit) {
    let (a, b) = (
        onboard(kit, Currency::USD).await,
        onboard(kit, Currency::USD).await,
    );
    let e = stored_endpoint(kit, a.account.owner, &["*"]).await;
    let hooks = kit.store.webhooks();
    assert_eq!(
        hooks
            .endpoint(e.id, b.principal())
            .await
            .unwrap()
            .map(|e| e.id),
        None
    );
    assert!(
        hooks
            .delete_endpoint(e.id, b.principal(), Timestamp::now())
            .await
            .unwrap()
            .is_none()
    );
    succeeded(kit, &a, 100).await;
    let lease = LeaseId::generate();
    then(kit).await;
    let claimed = kit
        .store
        .outbox()
        .claim_deliveries(lease, CLAIM, 10, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let mut done = claimed[0].delivery.clone();
    done.attempted(
        Timestamp::now(),
        &SendOutcome::Answered(200),
        &RetrySchedule::default(),
    );
    assert_eq!(
        kit.store
            .outbox()
            .finish_deliveries(lease, &[done.clone()])
            .await
            .unwrap(),
        1
    );
    succeeded(kit, &a, 200).await;
    let before = deliveries(kit, &e).await;
    assert_eq!(before.len(), 2);

    let deleted = hooks
        .delete_endpoint(e.id, a.principal(), Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted.id, e.id);
    assert_eq!(
        hooks
            .endpoint(e.id, Principal::Platform)
            .await
            .unwrap()
            .map(|e| e.id),
        None
    );
    assert!(
        hooks
            .delete_endpoint(e.id, Principal::Platform, Timestamp::now())
            .await
            .unwrap()
            .is_none()
    );
    let listed = hooks
        .endpoints(Principal::Platform, CreatedRange::default(), everything())
        .await
        .unwrap();
    assert!(listed.items.iter().all(|x| x.id != e.id));
    let none = hooks
        .deliveries(
            e.id,
            Principal::Platform,
            &DeliveryFilter::default(),
            everything(),
        )
        .await
        .unwrap();
    assert!(none.is_none());
    assert!(
        hooks
            .retry_delivery(e.id, done.id, Principal::Platform, Timestamp::now())
            .await
            .unwrap()
            .is_none()
    );
    assert!(nothing_due(kit).await);
}

/// A due delivery is claimed by one holder at a time; an expired claim is claimed again; the
/// outcome is written only under the lease that holds it; a failed attempt is due again
/// only when the schedule says.
pub async fn claims_hold_a_delivery_for_one_dispatcher(kit: &StoreKit) {
    let (_, e) = one_due(kit).await;
    let outbox = kit.store.outbox();
    let first = LeaseId::generate();
    let claimed = claim(kit, first).await;
    assert_eq!(claimed.len(), 1);
    let target = claimed[0].target.clone().expect("a live endpoint");
    assert_eq!(target.url, e.url);
    assert_eq!(target.secret.reveal(), e.secret.reveal());
    let event = events_of(kit, reload_payment_of(&claimed[0].delivery, kit).await)
        .await
        .remove(0);
    assert_eq!(target.body, event.body, "the event's bytes, as rendered");
    assert!(nothing_due(kit).await);

    kit.time.advance(CLAIM + Duration::from_secs(1)).await;
    let second = LeaseId::generate();
    let again = claim(kit, second).await;
    assert_eq!(again.len(), 1, "a claim whose holder died is claimed again");
    let mut failed = again[0].delivery.clone();
    let schedule = RetrySchedule::parse("1h").unwrap();
    failed.attempted(
        Timestamp::now(),
        &SendOutcome::Failed("timeout".into()),
        &schedule,
    );
    assert_eq!(
        outbox
            .finish_deliveries(first, &[failed.clone()])
            .await
            .unwrap(),
        0,
        "not held"
    );
    assert_eq!(
        outbox
            .finish_deliveries(second, &[failed.clone()])
            .await
            .unwrap(),
        1
    );
    let stored = deliveries(kit, &e).await.remove(0);
    assert_eq!(
        (stored.status, stored.attempts, stored.last_error.as_deref()),
        (DeliveryStatus::Pending, 1, Some("timeout"))
    );
    assert!(nothing_due(kit).await, "not due yet");
    kit.time.advance(Duration::from_secs(3601)).await;
    assert_eq!(
        outbox
            .claim_deliveries(LeaseId::generate(), CLAIM, 10, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn reload_payment_of(d: &WebhookDelivery, kit: &StoreKit) -> PaymentId {
    kit.store
        .events()
        .event(d.event_id, Principal::Platform)
        .await
        .unwrap()
        .unwrap()
        .payment_id
}

/// At most `per_endpoint` of one endpoint's deliveries are held at once, across claims; the
/// other endpoints' deliveries are claimed meanwhile.
pub async fn claims_hold_at_most_per_endpoint(kit: &StoreKit) {
    let (a, b) = (
        onboard(kit, Currency::USD).await,
        onboard(kit, Currency::USD).await,
    );
    let slow = stored_endpoint(kit, a.account.owner, &["*"]).await;
    let other = stored_endpoint(kit, b.account.owner, &["*"]).await;
    for n in 1..=5 {
        succeeded(kit, &a, n).await;
    }
    succeeded(kit, &b, 9).await;
    let outbox = kit.store.outbox();
    then(kit).await;
    let first = outbox
        .claim_deliveries(LeaseId::generate(), CLAIM, 100, 2)
        .await
        .unwrap();
    let per = |claimed: &[crate::ports::DueDelivery], e: &WebhookEndpoint| {
        claimed
            .iter()
            .filter(|d| d.delivery.endpoint_id == e.id)
            .count()
    };
    assert_eq!((per(&first, &slow), per(&first, &other)), (2, 1));
    let second = outbox
        .claim_deliveries(LeaseId::generate(), CLAIM, 100, 2)
        .await
        .unwrap();
    assert!(
        second.is_empty(),
        "the slow endpoint has 2 held: {second:?}"
    );
    let ids: HashSet<_> = first.iter().map(|d| d.delivery.id).collect();
    assert_eq!(ids.len(), 3);
}

/// A manual retry makes the delivery due now, whatever its status, and ends any hold.
pub async fn a_manual_retry_is_due_at_once_and_ends_the_hold(kit: &StoreKit) {
    let (a, e) = one_due(kit).await;
    let outbox = kit.store.outbox();
    let lease = LeaseId::generate();
    let mut d = claim(kit, lease).await.remove(0).delivery;
    d.attempted(
        Timestamp::now(),
        &SendOutcome::Answered(200),
        &RetrySchedule::default(),
    );
    outbox.finish_deliveries(lease, &[d.clone()]).await.unwrap();
    let retried = kit
        .store
        .webhooks()
        .retry_delivery(e.id, d.id, a.principal(), Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (retried.status, retried.manual),
        (DeliveryStatus::Pending, true)
    );
    let held = LeaseId::generate();
    assert_eq!(claim(kit, held).await.len(), 1);
    kit.store
        .webhooks()
        .retry_delivery(e.id, d.id, a.principal(), Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        outbox.finish_deliveries(held, &[d.clone()]).await.unwrap(),
        0,
        "the retry ended the hold"
    );
    let b = onboard(kit, Currency::USD).await;
    assert!(
        kit.store
            .webhooks()
            .retry_delivery(e.id, d.id, b.principal(), Timestamp::now())
            .await
            .unwrap()
            .is_none()
    );
}

/// Deleting an endpoint while an attempt holds one of its deliveries: the attempt's outcome
/// is not written, and the delivery is claimed no more.
pub async fn deleting_an_endpoint_ends_the_holds_on_its_deliveries(kit: &StoreKit) {
    let (a, e) = one_due(kit).await;
    let outbox = kit.store.outbox();
    let lease = LeaseId::generate();
    let mut d = claim(kit, lease).await.remove(0).delivery;
    kit.store
        .webhooks()
        .delete_endpoint(e.id, a.principal(), Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    d.attempted(
        Timestamp::now(),
        &SendOutcome::Answered(500),
        &RetrySchedule::default(),
    );
    assert_eq!(outbox.finish_deliveries(lease, &[d]).await.unwrap(), 0);
    assert!(nothing_due(kit).await);
}

/// Retention deletes old events with their deliveries, and nothing newer.
pub async fn retention_purges_old_events_with_their_deliveries(kit: &StoreKit) {
    let a = onboard(kit, Currency::USD).await;
    let e = stored_endpoint(kit, a.account.owner, &["*"]).await;
    let old = succeeded(kit, &a, 100).await;
    kit.time.advance(Duration::from_secs(7200)).await;
    let new = succeeded(kit, &a, 200).await;
    let cutoff = events_of(kit, new.id).await[0]
        .created_at
        .saturating_sub(Duration::from_secs(3600));
    assert_eq!(
        kit.store.outbox().purge_events(cutoff, 100).await.unwrap(),
        1
    );
    assert!(events_of(kit, old.id).await.is_empty());
    assert_eq!(events_of(kit, new.id).await.len(), 1);
    assert_eq!(deliveries(kit, &e).await.len(), 1);
}

/// Generates the outbox conformance tests for a `StoreKit` expression.
#[macro_export]
macro_rules! outbox_conformance {
    ($kit:expr) => {
        $crate::conformance_tests!(
            outbox,
            $kit,
            [
                each_change_writes_its_event_with_the_record_as_stored,
                a_change_not_written_writes_no_event,
                expiry_writes_one_canceled_event,
                events_are_read_by_their_owner_and_the_platform,
                an_event_gets_one_delivery_per_endpoint_that_receives_it,
                endpoints_are_limited_per_owner,
                a_deleted_endpoint_is_gone_and_its_pending_deliveries_fail,
                claims_hold_a_delivery_for_one_dispatcher,
                claims_hold_at_most_per_endpoint,
                a_manual_retry_is_due_at_once_and_ends_the_hold,
                deleting_an_endpoint_ends_the_holds_on_its_deliveries,
                retention_purges_old_events_with_their_deliveries,
            ]
        );
    };
}
