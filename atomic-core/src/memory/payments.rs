//! [`PaymentStore`] on [`MemoryStore`]: payments and refunds as requests write and read them,
//! each operation checking every rule before it writes anything.

use std::time::Duration;

use async_trait::async_trait;

use super::store::{MemoryStore, PaymentRow, RefundRow, State, newest_first};
use crate::account::AccountKind;
use crate::error::{Error, Invariant, Result};
use crate::fresh::Fresh;
use crate::id::{PaymentId, RefundId};
use crate::idempotency::Completion;
use crate::money::Amount;
use crate::page::{Page, PageRequest};
use crate::payment::{CancellationReason, Payment, PaymentStatus};
use crate::ports::{PaymentFilter, PaymentStore, RefundFilter};
use crate::principal::Principal;
use crate::refund::Refund;
use crate::time::Timestamp;

#[async_trait]
impl PaymentStore for MemoryStore {
    async fn create_payment(
        &self,
        payment: &Fresh<Payment>,
        completion: Option<Completion>,
    ) -> Result<()> {
        let now = self.now();
        let mut state = self.lock();
        if state.payments.contains_key(&payment.id) {
            return Err(Invariant::DuplicateId.into());
        }
        check_payment_accounts(&state, payment)?;
        state.check_completion(completion.as_ref(), now)?;

        state
            .owner_payments
            .entry(payment.owner)
            .or_default()
            .insert(payment.id);
        state.open_payments.insert(payment.id);
        state.payments.insert(
            payment.id,
            PaymentRow {
                payment: Payment::clone(payment),
                lease: None,
                touched_at: now,
                voiding: None,
            },
        );
        state.apply_completion(completion, now);
        Ok(())
    }

    async fn payment(&self, id: PaymentId, viewer: Principal) -> Result<Option<Payment>> {
        let state = self.lock();
        Ok(state
            .payments
            .get(&id)
            .filter(|row| viewer.can_access(row.payment.owner))
            .map(|row| row.payment.clone()))
    }

    async fn payments(
        &self,
        viewer: Principal,
        filter: &PaymentFilter,
        page: PageRequest<PaymentId>,
    ) -> Result<Page<Payment>> {
        let state = self.lock();
        if let Some(cursor) = page.starting_after {
            let visible = state
                .payments
                .get(&cursor)
                .is_some_and(|row| viewer.can_access(row.payment.owner));
            if !visible {
                return Err(Error::UnknownCursor);
            }
        }
        let keep = |id: &PaymentId| {
            state.payments.get(id).is_some_and(|row| {
                let p = &row.payment;
                filter.status.is_none_or(|s| p.status() == s)
                    && filter.created.contains(p.created_at)
                    && p.metadata.matches(&filter.metadata)
            })
        };
        let ids = visible_page(
            &state.payments,
            state.owner_payments.get(&viewer.as_owner()),
            viewer,
            page,
            keep,
        );
        let items = ids
            .iter()
            .filter_map(|id| state.payments.get(id).map(|r| r.payment.clone()))
            .collect();
        Ok(Page::from_overfetch(items, page.limit))
    }

    async fn request_capture(
        &self,
        id: PaymentId,
        amount: Amount,
        at: Timestamp,
        authorization_ttl: Duration,
        completion: Option<Completion>,
    ) -> Result<Payment> {
        let now = self.now();
        let mut state = self.lock();
        let row = state.payments.get(&id).ok_or(Error::NotFound)?;
        let expired = row.payment.updated_at().saturating_add(authorization_ttl) <= now;
        if row.payment.status() != PaymentStatus::Authorized || expired {
            return Err(Error::InvalidState {
                status: row.payment.status(),
            });
        }
        let mut payment = row.payment.clone();
        payment.request_capture(amount, at)?;
        state.check_completion(completion.as_ref(), self.now())?;
        state.authorized.remove(&id);
        state.open_payments.insert(id);
        state
            .transitions
            .push((PaymentStatus::Authorized, PaymentStatus::Processing));
        if let Some(row) = state.payments.get_mut(&id) {
            row.payment = payment.clone();
            row.lease = None;
            row.touched_at = now;
        }
        state.apply_completion(completion, self.now());
        Ok(payment)
    }

    async fn cancel(
        &self,
        id: PaymentId,
        reason: CancellationReason,
        at: Timestamp,
        completion: Option<Completion>,
    ) -> Result<Payment> {
        let mut state = self.lock();
        let row = state.payments.get(&id).ok_or(Error::NotFound)?;
        if row.payment.status() != PaymentStatus::Authorized {
            return Err(Error::InvalidState {
                status: row.payment.status(),
            });
        }
        let mut payment = row.payment.clone();
        payment.cancel(reason, at)?;
        state.check_completion(completion.as_ref(), self.now())?;
        state.cancel(payment.clone());
        state.apply_completion(completion, self.now());
        Ok(payment)
    }

    async fn create_refund(
        &self,
        refund: &Fresh<Refund>,
        completion: Option<Completion>,
    ) -> Result<()> {
        let now = self.now();
        let mut state = self.lock();
        if state.refunds.contains_key(&refund.id) {
            return Err(Invariant::DuplicateId.into());
        }
        let row = state
            .payments
            .get(&refund.payment_id)
            .ok_or(Invariant::MissingReference)?;
        let p = &row.payment;
        let consistent = p.merchant_account == refund.merchant_account
            && p.funding_account == refund.funding_account
            && p.owner == refund.owner
            && p.currency == refund.currency;
        if !consistent {
            return Err(Invariant::PostingMismatch.into());
        }
        let mut payment = p.clone();
        payment.reserve_refund(refund.amount, now)?;
        state.check_completion(completion.as_ref(), self.now())?;
        if let Some(row) = state.payments.get_mut(&payment.id) {
            row.payment = payment;
        }
        state
            .owner_refunds
            .entry(refund.owner)
            .or_default()
            .insert(refund.id);
        state.open_refunds.insert(refund.id);
        state.refunds.insert(
            refund.id,
            RefundRow {
                refund: Refund::clone(refund),
                lease: None,
                touched_at: now,
            },
        );
        state.apply_completion(completion, self.now());
        Ok(())
    }

    async fn refund(&self, id: RefundId, viewer: Principal) -> Result<Option<Refund>> {
        let state = self.lock();
        Ok(state
            .refunds
            .get(&id)
            .filter(|row| viewer.can_access(row.refund.owner))
            .map(|row| row.refund.clone()))
    }

    async fn refunds(
        &self,
        viewer: Principal,
        filter: &RefundFilter,
        page: PageRequest<RefundId>,
    ) -> Result<Page<Refund>> {
        let state = self.lock();
        if let Some(cursor) = page.starting_after {
            let visible = state
                .refunds
                .get(&cursor)
                .is_some_and(|row| viewer.can_access(row.refund.owner));
            if !visible {
                return Err(Error::UnknownCursor);
            }
        }
        let keep = |id: &RefundId| {
            state.refunds.get(id).is_some_and(|row| {
                let r = &row.refund;
                filter.payment.is_none_or(|p| r.payment_id == p)
                    && filter.status.is_none_or(|s| r.status() == s)
                    && filter.created.contains(r.created_at)
                    && r.metadata.matches(&filter.metadata)
            })
        };
        let ids = visible_page(
            &state.refunds,
            state.owner_refunds.get(&viewer.as_owner()),
            viewer,
            page,
            keep,
        );
        let items = ids
            .iter()
            .filter_map(|id| state.refunds.get(id).map(|r| r.refund.clone()))
            .collect();
        Ok(Page::from_overfetch(items, page.limit))
    }
}

/// The ids of one page of a table, newest first: every row for the platform, the viewer's
/// own rows for a merchant, older than the cursor, kept by `keep`.
fn visible_page<K: Ord + Copy, V>(
    all: &std::collections::BTreeMap<K, V>,
    own: Option<&std::collections::BTreeSet<K>>,
    viewer: Principal,
    page: PageRequest<K>,
    keep: impl FnMut(&K) -> bool,
) -> Vec<K> {
    let limit = page.limit.get();
    match (viewer, page.starting_after) {
        (Principal::Platform, Some(cursor)) => {
            newest_first(all.range(..cursor).map(|(k, _)| k), limit, keep)
        }
        (Principal::Platform, None) => newest_first(all.keys(), limit, keep),
        (Principal::Merchant(_), cursor) => match (own, cursor) {
            (None, _) => Vec::new(),
            (Some(own), Some(cursor)) => newest_first(own.range(..cursor), limit, keep),
            (Some(own), None) => newest_first(own.iter(), limit, keep),
        },
    }
}

impl State {
    /// Stores an `AUTHORIZED` payment's cancellation (checked by the caller).
    pub(super) fn cancel(&mut self, payment: Payment) {
        self.authorized.remove(&payment.id);
        self.transitions
            .push((PaymentStatus::Authorized, PaymentStatus::Canceled));
        self.write_events(crate::event::Event::of_payment(&payment));
        if let Some(row) = self.payments.get_mut(&payment.id) {
            row.payment = payment;
            row.lease = None;
        }
    }
}

/// The payment's accounts exist, agree with it on currency, and are the right kinds and owner
/// (TEST-MATRIX L10, guarded in the store as well as in the service).
fn check_payment_accounts(state: &State, payment: &Payment) -> Result<()> {
    let merchant = state
        .accounts
        .get(&payment.merchant_account)
        .ok_or(Invariant::MissingReference)?;
    let funding = state
        .accounts
        .get(&payment.funding_account)
        .ok_or(Invariant::MissingReference)?;
    let consistent = merchant.kind == AccountKind::Merchant
        && funding.kind == AccountKind::System
        && merchant.currency == payment.currency
        && funding.currency == payment.currency
        && merchant.owner == payment.owner;
    if !consistent {
        return Err(Invariant::PostingMismatch.into());
    }
    Ok(())
}
