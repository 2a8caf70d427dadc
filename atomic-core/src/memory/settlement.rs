//! [`SettlementStore`] on [`MemoryStore`]: claims, voids, releases, batched settlement of
//! payments and refunds, the sweep and authorization expiry.

use std::time::Duration;

use async_trait::async_trait;

use super::store::{MemoryStore, State};
use crate::error::{Error, Invariant, Result};
use crate::event::Event;
use crate::id::{PaymentId, RefundId};
use crate::payment::{CancellationReason, Payment, PaymentStatus};
use crate::ports::{
    BeginOutcome, Job, LeaseId, OpenPayments, RefundBegin, RefundResult, SettleOutcome, Settlement,
    SettlementResult, SettlementStore,
};
use crate::refund::RefundStatus;
use crate::time::Timestamp;

#[async_trait]
impl SettlementStore for MemoryStore {
    async fn begin_payments(
        &self,
        ids: &[PaymentId],
        lease: LeaseId,
        duration: Duration,
    ) -> Result<Vec<BeginOutcome>> {
        let now = self.now();
        let mut state = self.lock();
        ids.iter()
            .map(|id| state.begin_payment(*id, lease, now, duration))
            .collect()
    }

    async fn begin_refunds(
        &self,
        ids: &[RefundId],
        lease: LeaseId,
        duration: Duration,
    ) -> Result<Vec<RefundBegin>> {
        let now = self.now();
        let mut state = self.lock();
        ids.iter()
            .map(|id| state.begin_refund(*id, lease, now, duration))
            .collect()
    }

    async fn begin_void(&self, id: PaymentId, lease: LeaseId, duration: Duration) -> Result<bool> {
        let now = self.now();
        let mut state = self.lock();
        if let Some(row) = state.payments.get_mut(&id)
            && row.payment.status() == PaymentStatus::Processing
            && let Some((held, until)) = row.lease.as_mut()
            && *held == lease
            && now < *until
        {
            *until = now.saturating_add(duration);
            if row.voiding.is_none() {
                row.voiding = Some(lease);
            }
            return Ok(true);
        }
        Ok(false)
    }

    async fn release(&self, job: Job, lease: LeaseId) -> Result<()> {
        let now = self.now();
        let mut state = self.lock();
        let held = match job {
            Job::Payment(id) => state
                .payments
                .get_mut(&id)
                .filter(|row| row.payment.status() == PaymentStatus::Processing)
                .and_then(|row| row.lease.as_mut()),
            Job::Refund(id) => state
                .refunds
                .get_mut(&id)
                .filter(|row| row.refund.status() == RefundStatus::Processing)
                .and_then(|row| row.lease.as_mut()),
        };
        if let Some((holder, until)) = held
            && *holder == lease
        {
            *until = now;
        }
        Ok(())
    }

    async fn settle(&self, settlements: &[Settlement]) -> Vec<Result<SettleOutcome>> {
        let now = self.now();
        let mut state = self.lock();
        settlements
            .iter()
            .map(|settlement| match settlement {
                Settlement::Payment {
                    payment_id,
                    lease,
                    result,
                } => state.settle_payment(*payment_id, *lease, result, now),
                Settlement::Refund {
                    refund_id,
                    lease,
                    result,
                } => state.settle_refund(*refund_id, *lease, result, now),
            })
            .collect()
    }

    async fn sweep(&self, stale_after: Duration, limit: usize) -> Result<Vec<Job>> {
        let now = self.now();
        let cutoff = now.saturating_sub(stale_after);
        let mut state = self.lock();
        let State {
            open_payments,
            payments,
            open_refunds,
            refunds,
            ..
        } = &mut *state;
        let due_at = |lease: Option<(LeaseId, Timestamp)>, touched_at: Timestamp| {
            touched_at <= cutoff && lease.is_none_or(|(_, until)| until <= now)
        };
        let mut due = Vec::new();
        for id in open_payments.iter() {
            if due.len() >= limit {
                return Ok(due);
            }
            if let Some(row) = payments.get_mut(id)
                && due_at(row.lease, row.touched_at)
            {
                row.touched_at = now;
                due.push(Job::Payment(*id));
            }
        }
        for id in open_refunds.iter() {
            if due.len() >= limit {
                break;
            }
            if let Some(row) = refunds.get_mut(id)
                && due_at(row.lease, row.touched_at)
            {
                row.touched_at = now;
                due.push(Job::Refund(*id));
            }
        }
        Ok(due)
    }

    async fn expire_authorizations(
        &self,
        authorization_ttl: Duration,
        limit: usize,
    ) -> Result<Vec<Payment>> {
        let now = self.now();
        let mut state = self.lock();
        let due: Vec<Payment> = state
            .authorized
            .iter()
            .filter_map(|id| state.payments.get(id))
            .filter(|row| row.payment.updated_at().saturating_add(authorization_ttl) <= now)
            .take(limit)
            .map(|row| row.payment.clone())
            .collect();
        let mut canceled = Vec::with_capacity(due.len());
        for mut payment in due {
            payment.cancel(CancellationReason::Expired, now)?;
            state.cancel(payment.clone());
            canceled.push(payment);
        }
        Ok(canceled)
    }

    async fn open_payments(&self) -> Result<OpenPayments> {
        let state = self.lock();
        let oldest = state
            .open_payments
            .iter()
            .filter_map(|id| state.payments.get(id))
            .map(|row| opened_at(&row.payment))
            .min();
        Ok(OpenPayments {
            count: state.open_payments.len() as u64,
            oldest,
        })
    }
}

/// When an open payment became open: its creation, or the capture's request.
fn opened_at(payment: &Payment) -> Timestamp {
    match payment.state().capture_requested() {
        Some(_) => payment.updated_at(),
        None => payment.created_at,
    }
}

impl State {
    fn begin_payment(
        &mut self,
        id: PaymentId,
        lease: LeaseId,
        now: Timestamp,
        duration: Duration,
    ) -> Result<BeginOutcome> {
        let Some(row) = self.payments.get_mut(&id) else {
            return Ok(BeginOutcome::Missing);
        };
        match row.payment.status() {
            PaymentStatus::Pending => {
                row.payment.start_processing(now)?;
                self.transitions
                    .push((PaymentStatus::Pending, PaymentStatus::Processing));
            }
            PaymentStatus::Processing => {
                if row.lease.is_some_and(|(_, until)| until > now) {
                    return Ok(BeginOutcome::Busy);
                }
            }
            _ => return Ok(BeginOutcome::Finished(row.payment.clone())),
        }
        let row = self.payments.get_mut(&id).ok_or(Error::NotFound)?;
        row.lease = Some((lease, now.saturating_add(duration)));
        row.touched_at = now;
        let payment = row.payment.clone();
        Ok(match row.voiding {
            Some(attempt) => BeginOutcome::Voiding { payment, attempt },
            None => BeginOutcome::Claimed(payment),
        })
    }

    fn begin_refund(
        &mut self,
        id: RefundId,
        lease: LeaseId,
        now: Timestamp,
        duration: Duration,
    ) -> Result<RefundBegin> {
        let Some(row) = self.refunds.get_mut(&id) else {
            return Ok(RefundBegin::Missing);
        };
        match row.refund.status() {
            RefundStatus::Pending => {
                row.refund.start_processing(now)?;
                self.refund_transitions
                    .push((RefundStatus::Pending, RefundStatus::Processing));
            }
            RefundStatus::Processing => {
                if row.lease.is_some_and(|(_, until)| until > now) {
                    return Ok(RefundBegin::Busy);
                }
            }
            RefundStatus::Success | RefundStatus::Failed => {
                return Ok(RefundBegin::Finished(row.refund.clone()));
            }
        }
        let row = self.refunds.get_mut(&id).ok_or(Error::NotFound)?;
        row.lease = Some((lease, now.saturating_add(duration)));
        row.touched_at = now;
        Ok(RefundBegin::Claimed(row.refund.clone()))
    }

    fn settle_payment(
        &mut self,
        id: PaymentId,
        lease: LeaseId,
        result: &SettlementResult,
        now: Timestamp,
    ) -> Result<SettleOutcome> {
        let row = self.payments.get(&id).ok_or(Error::NotFound)?;
        let held = row.payment.status() == PaymentStatus::Processing
            && row.lease.is_some_and(|(holder, _)| holder == lease);
        if !held {
            return Ok(SettleOutcome::NotHeld);
        }
        let mut payment = row.payment.clone();
        match result {
            SettlementResult::Failed(reason) => payment.fail(*reason, now)?,
            // A payment whose void has begun can only fail.
            _ if row.voiding.is_some() => return Err(Invariant::Voided.into()),
            SettlementResult::Authorized => payment.authorize(now)?,
            SettlementResult::Posted(transfer) => {
                payment.succeed(now)?;
                if !transfer.matches(&payment) {
                    return Err(Invariant::PostingMismatch.into());
                }
                if self.transactions.contains_key(&payment.id) {
                    return Err(Invariant::AlreadyPosted.into());
                }
                self.post(transfer)?;
                self.transactions.insert(payment.id, transfer.id());
            }
        }
        self.transitions
            .push((PaymentStatus::Processing, payment.status()));
        self.open_payments.remove(&payment.id);
        if payment.status() == PaymentStatus::Authorized {
            self.authorized.insert(payment.id);
        }
        self.write_events(Event::of_payment(&payment));
        if let Some(row) = self.payments.get_mut(&payment.id) {
            row.payment = payment.clone();
            row.lease = None;
        }
        Ok(SettleOutcome::Payment(payment))
    }

    fn settle_refund(
        &mut self,
        id: RefundId,
        lease: LeaseId,
        result: &RefundResult,
        now: Timestamp,
    ) -> Result<SettleOutcome> {
        let row = self.refunds.get(&id).ok_or(Error::NotFound)?;
        let held = row.refund.status() == RefundStatus::Processing
            && row.lease.is_some_and(|(holder, _)| holder == lease);
        if !held {
            return Ok(SettleOutcome::NotHeld);
        }
        let mut refund = row.refund.clone();
        let mut payment = self
            .payments
            .get(&refund.payment_id)
            .ok_or(Invariant::MissingReference)?
            .payment
            .clone();
        match result {
            RefundResult::Failed(reason) => {
                refund.fail(*reason, now)?;
                payment.release_refund(refund.amount, now)?;
            }
            RefundResult::Posted(transfer) => {
                refund.succeed(now)?;
                payment.record_refund(refund.amount, now)?;
                if !transfer.matches_refund(&refund) {
                    return Err(Invariant::PostingMismatch.into());
                }
                if self.refund_transactions.contains_key(&refund.id) {
                    return Err(Invariant::AlreadyPosted.into());
                }
                self.post(transfer)?;
                self.refund_transactions.insert(refund.id, transfer.id());
            }
        }
        self.refund_transitions
            .push((RefundStatus::Processing, refund.status()));
        self.open_refunds.remove(&refund.id);
        self.write_events(Event::of_refund(&refund));
        if let Some(row) = self.refunds.get_mut(&refund.id) {
            row.refund = refund.clone();
            row.lease = None;
        }
        if let Some(row) = self.payments.get_mut(&payment.id) {
            row.payment = payment;
        }
        Ok(SettleOutcome::Refund(refund))
    }
}
