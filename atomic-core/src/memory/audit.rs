//! `LedgerAudit` on [`MemoryStore`]: the invariants of TEST-MATRIX.md (L1–L16), recomputed
//! from the journal and the outbox under one lock (a consistent snapshot).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use super::store::{MemoryStore, ScopedKey, State};
use crate::account::AccountKind;
use crate::error::Result;
use crate::event::EventType;
use crate::id::{EventId, PaymentId, RefundId, TransactionId, WebhookEndpointId};
use crate::ledger::{Direction, Entry};
use crate::money::{Amount, Currency};
use crate::payment::{CaptureMethod, Payment, PaymentState, PaymentStatus};
use crate::ports::{AuditReport, LedgerAudit};
use crate::refund::RefundStatus;
use crate::time::Timestamp;
use crate::webhook::DeliveryStatus;

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[async_trait]
impl LedgerAudit for MemoryStore {
    async fn audit(&self, stuck_after: Duration) -> Result<AuditReport> {
        let now = self.now();
        let state = self.lock();
        let mut report = AuditReport::default();
        let per_transaction = audit_sums(&state, &mut report);
        let (transactions_of, refund_transactions_of) =
            audit_transactions(&state, &per_transaction, &mut report);
        audit_refunds(
            &state,
            &refund_transactions_of,
            now,
            stuck_after,
            &mut report,
        );
        let mut per_key: HashMap<_, Vec<Timestamp>> = HashMap::new();
        for row in state.payments.values() {
            let p = &row.payment;
            audit_payment(&state, p, &transactions_of, now, stuck_after, &mut report);
            if let Some(key) = &p.idempotency_key {
                per_key
                    .entry((p.created_by, key.clone()))
                    .or_default()
                    .push(p.created_at);
            }
        }
        audit_idempotency(&state, per_key, &mut report);
        audit_balances_and_transitions(&state, &mut report);
        audit_outbox(&state, &mut report);
        Ok(report)
    }
}

/// L1, L4 and L7 (sums in i128, so the audit itself cannot overflow); returns the journal's
/// entries by transaction.
fn audit_sums<'s>(
    state: &'s State,
    report: &mut AuditReport,
) -> HashMap<TransactionId, Vec<&'s Entry>> {
    let mut per_currency: HashMap<Currency, i128> = HashMap::new();
    let mut per_account: HashMap<_, i128> = HashMap::new();
    let mut per_transaction: HashMap<TransactionId, Vec<&Entry>> = HashMap::new();
    for entry in state.entries.values() {
        let signed = i128::from(entry.signed_minor_units());
        if let Some(account) = state.accounts.get(&entry.account_id) {
            *per_currency.entry(account.currency).or_default() += signed;
        }
        *per_account.entry(entry.account_id).or_default() += signed;
        per_transaction
            .entry(entry.transaction_id)
            .or_default()
            .push(entry);
    }
    report.amount_out_of_domain += count(
        state
            .entries
            .values()
            .filter(|e| Amount::for_payment(e.amount.minor_units()).is_err())
            .count(),
    );
    // L7: this journal has no update or delete path (entries are only ever inserted), so
    // `mutable_ledger` stays 0.
    report.zero_sum = count(per_currency.values().filter(|s| **s != 0).count());
    report.cached_balance_mismatch = count(
        state
            .accounts
            .values()
            .filter(|a| {
                i128::from(a.balance.minor_units()) != per_account.get(&a.id).copied().unwrap_or(0)
            })
            .count(),
    );
    per_transaction
}

/// L2: each transaction is one DEBIT and one CREDIT of one amount: a charge from the funding
/// to the merchant account of the captured amount, a refund back of its amount. Returns the
/// transactions of each payment's charge and of each refund.
fn audit_transactions(
    state: &State,
    per_transaction: &HashMap<TransactionId, Vec<&Entry>>,
    report: &mut AuditReport,
) -> (HashMap<PaymentId, usize>, HashMap<RefundId, usize>) {
    let mut transactions_of: HashMap<PaymentId, usize> = HashMap::new();
    let mut refund_transactions_of: HashMap<RefundId, usize> = HashMap::new();
    for entries in per_transaction.values() {
        let (payment_id, refund_id) = (entries[0].payment_id, entries[0].refund_id);
        match refund_id {
            None => *transactions_of.entry(payment_id).or_default() += 1,
            Some(id) => *refund_transactions_of.entry(id).or_default() += 1,
        }
        let expected = match refund_id {
            None => state.payments.get(&payment_id).map(|r| {
                let p = &r.payment;
                (p.funding_account, p.merchant_account, p.amount_captured())
            }),
            Some(id) => state.refunds.get(&id).map(|r| {
                let f = &r.refund;
                (
                    f.merchant_account,
                    f.funding_account,
                    f.amount.minor_units(),
                )
            }),
        };
        let shaped = entries.len() == 2
            && entries
                .iter()
                .all(|e| e.payment_id == payment_id && e.refund_id == refund_id)
            && expected.is_some_and(|(debit, credit, amount)| {
                entries.iter().all(|e| {
                    e.amount.minor_units() == amount
                        && match e.direction {
                            Direction::Debit => e.account_id == debit,
                            Direction::Credit => e.account_id == credit,
                        }
                }) && entries
                    .iter()
                    .filter(|e| e.direction == Direction::Debit)
                    .count()
                    == 1
            });
        if !shaped {
            report.unbalanced_transactions += 1;
        }
    }
    (transactions_of, refund_transactions_of)
}

/// One payment's checks: posted as its status says, its refunds within what it captured, its
/// accounts its owner's and of its currency, its amount in range, and not stuck.
fn audit_payment(
    state: &State,
    p: &Payment,
    transactions_of: &HashMap<PaymentId, usize>,
    now: Timestamp,
    stuck_after: Duration,
    report: &mut AuditReport,
) {
    let posted = transactions_of.get(&p.id).copied().unwrap_or(0);
    if posted != usize::from(p.status() == PaymentStatus::Success) {
        report.status_posting_mismatch += 1;
    }
    let (mut reserved, mut refunded) = (0i64, 0i64);
    for row in state
        .refunds
        .values()
        .filter(|r| r.refund.payment_id == p.id)
    {
        let refund = &row.refund;
        if refund.status() != RefundStatus::Failed {
            reserved += refund.amount.minor_units();
        }
        if refund.status() == RefundStatus::Success {
            refunded += refund.amount.minor_units();
        }
    }
    let within = reserved <= p.amount_captured()
        && p.amount_captured() <= p.amount.minor_units()
        && p.amount_refunded() == refunded
        && p.amount_reserved() == reserved;
    if !within {
        report.refund_over_capture += 1;
    }
    let merchant = state.accounts.get(&p.merchant_account);
    let funding = state.accounts.get(&p.funding_account);
    let consistent = merchant.is_some_and(|m| {
        m.currency == p.currency && m.owner == p.owner && m.kind == AccountKind::Merchant
    }) && funding
        .is_some_and(|f| f.currency == p.currency && f.kind == AccountKind::System);
    if !consistent {
        report.tenant_currency_mismatch += 1;
    }
    if Amount::for_payment(p.amount.minor_units()).is_err() {
        report.amount_out_of_domain += 1;
    }
    let waiting = !p.status().is_terminal() && p.status() != PaymentStatus::Authorized;
    // A capture is our work only from its request on; before it the merchant held it.
    let since = match p.state() {
        PaymentState::Capturing(_) => p.updated_at(),
        _ => p.created_at,
    };
    if waiting && now.duration_since(since) > stuck_after {
        report.stuck_payments += 1;
    }
}

/// L8: two payments of one key created less than one window (its TTL) apart, whichever claim
/// made them.
fn audit_idempotency(
    state: &State,
    mut per_key: HashMap<ScopedKey, Vec<Timestamp>>,
    report: &mut AuditReport,
) {
    for created in per_key.values_mut() {
        created.sort_unstable();
    }
    report.duplicate_idempotency_keys = count(
        per_key
            .iter()
            .filter(|(scoped, created)| {
                state.idempotency.get(*scoped).is_some_and(|record| {
                    let window = record.expires_at.duration_since(record.locked_at);
                    created
                        .windows(2)
                        .any(|pair| pair[1].duration_since(pair[0]) < window)
                })
            })
            .count(),
    );
}

/// L5 (no balance below zero where it may not be) and L6 (no transition a state forbids).
fn audit_balances_and_transitions(state: &State, report: &mut AuditReport) {
    report.negative_balances = count(
        state
            .accounts
            .values()
            .filter(|a| !a.allow_negative() && a.balance.minor_units() < 0)
            .count(),
    );
    report.illegal_transitions = count(
        state
            .transitions
            .iter()
            .filter(|(from, to)| !from.can_become(*to))
            .count()
            + state
                .refund_transitions
                .iter()
                .filter(|(from, to)| !from.can_become(*to))
                .count(),
    );
}

/// How many events of `event_type` a payment in its present state has written: exactly this
/// many, or (`None`) zero or one (a manual-capture payment that failed may have failed before
/// or after its authorization).
fn payment_events(payment: &Payment, event_type: EventType) -> Option<usize> {
    let status = payment.status();
    let manual = payment.capture_method == CaptureMethod::Manual;
    Some(usize::from(match event_type {
        EventType::PaymentSucceeded => status == PaymentStatus::Success,
        EventType::PaymentFailed => status == PaymentStatus::Failed,
        EventType::PaymentCanceled => status == PaymentStatus::Canceled,
        EventType::PaymentAuthorized if manual && status == PaymentStatus::Failed => return None,
        EventType::PaymentAuthorized => {
            manual
                && (matches!(
                    status,
                    PaymentStatus::Authorized | PaymentStatus::Canceled | PaymentStatus::Success
                ) || matches!(payment.state(), PaymentState::Capturing(_)))
        }
        EventType::RefundSucceeded | EventType::RefundFailed => false,
    }))
}

/// L15 and L16 (see [`AuditReport`]).
fn audit_outbox(state: &State, report: &mut AuditReport) {
    report.outbox_mismatch += events_mismatched(state);
    report.delivery_mismatch += deliveries_mismatched(state);
}

/// L15: events of unknown records, and records kept since the oldest event whose events are
/// not the ones their state implies.
fn events_mismatched(state: &State) -> u64 {
    let mut mismatched = 0;
    let mut written: HashMap<(PaymentId, Option<RefundId>, EventType), usize> = HashMap::new();
    for event in state.events.values() {
        *written
            .entry((event.payment_id, event.refund_id, event.event_type))
            .or_default() += 1;
        let known = match event.refund_id {
            None => state.payments.contains_key(&event.payment_id),
            Some(id) => state
                .refunds
                .get(&id)
                .is_some_and(|r| r.refund.payment_id == event.payment_id),
        };
        mismatched += u64::from(!known);
    }
    let kept_since = state.events.values().map(|e| e.created_at).min();
    let kept = |at: Timestamp| kept_since.is_none_or(|since| at >= since);
    let n = |key| written.get(&key).copied().unwrap_or(0);
    for row in state
        .payments
        .values()
        .filter(|r| kept(r.payment.updated_at()))
    {
        let p = &row.payment;
        let wrong = EventType::ALL
            .into_iter()
            .any(|t| match payment_events(p, t) {
                Some(expected) => n((p.id, None, t)) != expected,
                None => n((p.id, None, t)) > 1,
            });
        mismatched += u64::from(wrong);
    }
    for row in state
        .refunds
        .values()
        .filter(|r| kept(r.refund.updated_at()))
    {
        let r = &row.refund;
        let expect =
            |t, status| usize::from(r.status() == status) != n((r.payment_id, Some(r.id), t));
        let wrong = expect(EventType::RefundSucceeded, RefundStatus::Success)
            || expect(EventType::RefundFailed, RefundStatus::Failed);
        mismatched += u64::from(wrong);
    }
    mismatched
}

/// L16: deliveries marked delivered without a 2xx, and (event, endpoint) pairs without
/// exactly one delivery where the endpoint was live and subscribed when the event was written
/// (or with more than one anywhere).
fn deliveries_mismatched(state: &State) -> u64 {
    let mut mismatched = 0;
    let mut delivered: HashMap<(EventId, WebhookEndpointId), usize> = HashMap::new();
    for row in state.deliveries.values() {
        let d = &row.delivery;
        *delivered.entry((d.event_id, d.endpoint_id)).or_default() += 1;
        let got_2xx = d.last_status_code.is_some_and(|c| (200..300).contains(&c));
        mismatched += u64::from(d.status == DeliveryStatus::Delivered && !got_2xx);
    }
    for event in state.events.values() {
        for row in state.endpoints.values() {
            let live = row.endpoint.created_at <= event.created_at
                && row.deleted.is_none_or(|at| at > event.created_at);
            let owed = live && row.endpoint.receives(event.owner, event.event_type);
            let got = delivered
                .get(&(event.id, row.endpoint.id))
                .copied()
                .unwrap_or(0);
            mismatched += u64::from((owed && got != 1) || got > 1);
        }
    }
    mismatched
}

/// L12 and L13 over refunds: a `SUCCESS` refund has exactly one posting, any other none; an
/// unfinished refund older than `stuck_after` is stuck.
fn audit_refunds(
    state: &State,
    postings: &HashMap<RefundId, usize>,
    now: Timestamp,
    stuck_after: Duration,
    report: &mut AuditReport,
) {
    for row in state.refunds.values() {
        let refund = &row.refund;
        let posted = postings.get(&refund.id).copied().unwrap_or(0);
        if posted != usize::from(refund.status() == RefundStatus::Success) {
            report.refund_posting_mismatch += 1;
        }
        let open = matches!(
            refund.status(),
            RefundStatus::Pending | RefundStatus::Processing
        );
        if open && now.duration_since(refund.created_at) > stuck_after {
            report.stuck_payments += 1;
        }
    }
    // Postings of refunds that do not exist.
    report.refund_posting_mismatch += count(
        postings
            .keys()
            .filter(|id| !state.refunds.contains_key(id))
            .count(),
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ports::WebhookStore;
    use crate::testkit::flows::{claim_and_post, stored_payment_with};
    use crate::testkit::outbox::endpoint;
    use crate::testkit::{StoreKit, onboard};
    use crate::time::SystemClock;

    async fn paid_with_endpoint() -> (MemoryStore, StoreKit) {
        let store = MemoryStore::new(Arc::new(SystemClock));
        let kit = StoreKit::new(Arc::new(store.clone()), Arc::new(crate::testkit::RealTime));
        let a = onboard(&kit, Currency::USD).await;
        let e = endpoint(a.account.owner, &["*"]);
        store.create_endpoint(&e, None).await.unwrap();
        let p = stored_payment_with(&kit, &a, 500, CaptureMethod::Automatic, Default::default());
        claim_and_post(&kit, p.await.id).await;
        (store, kit)
    }

    #[tokio::test]
    async fn an_outbox_as_written_is_clean() {
        let (store, _) = paid_with_endpoint().await;
        let report = store.audit(Duration::from_secs(3600)).await.unwrap();
        assert_eq!((report.outbox_mismatch, report.delivery_mismatch), (0, 0));
        assert_eq!(store.lock().deliveries.len(), 1);
    }

    #[tokio::test]
    async fn a_change_without_its_event_or_delivery_is_counted() {
        let (store, _) = paid_with_endpoint().await;
        store.lock().deliveries.clear();
        let report = store.audit(Duration::from_secs(3600)).await.unwrap();
        assert_eq!((report.outbox_mismatch, report.delivery_mismatch), (0, 1));
        store.lock().events.clear();
        let report = store.audit(Duration::from_secs(3600)).await.unwrap();
        assert_eq!(
            report.outbox_mismatch, 1,
            "a SUCCESS payment without its event"
        );
    }

    #[tokio::test]
    async fn a_delivered_delivery_without_a_2xx_is_counted() {
        let (store, _) = paid_with_endpoint().await;
        for row in store.lock().deliveries.values_mut() {
            row.delivery.status = DeliveryStatus::Delivered;
            row.delivery.next_attempt_at = None;
            row.delivery.last_status_code = Some(302);
        }
        let report = store.audit(Duration::from_secs(3600)).await.unwrap();
        assert_eq!(report.delivery_mismatch, 1);
    }
}
