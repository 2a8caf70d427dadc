//! `LedgerStore` on [`MemoryStore`]: accounts, payments, entries and settlement, each operation
//! checking every rule before it writes anything.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use super::store::{MemoryStore, PaymentRow, State, newest_first};
use crate::account::{Account, AccountKind};
use crate::error::{Error, Invariant, Result};
use crate::id::{AccountId, EntryId, PaymentId};
use crate::idempotency::Completion;
use crate::ledger::Entry;
use crate::page::{Page, PageRequest};
use crate::payment::{Payment, PaymentStatus};
use crate::ports::{
    BeginOutcome, LeaseId, LedgerStore, SettleOutcome, Settlement, SettlementResult,
};
use crate::principal::Principal;

impl MemoryStore {
    /// Extends a lease still held (and marks the payment as being voided, if asked); `true`
    /// when it held the payment.
    fn extend_lease(
        &self,
        id: PaymentId,
        lease: LeaseId,
        duration: Duration,
        voiding: bool,
    ) -> bool {
        let now = self.now();
        let mut state = self.lock();
        if let Some(row) = state.payments.get_mut(&id)
            && row.payment.status() == PaymentStatus::Processing
            && let Some((held, until)) = row.lease.as_mut()
            && *held == lease
            && now < *until
        {
            *until = now.saturating_add(duration);
            if voiding && row.voiding.is_none() {
                row.voiding = Some(lease);
            }
            return true;
        }
        false
    }
}

#[async_trait]
impl LedgerStore for MemoryStore {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn ensure_system_account(&self, candidate: &Account) -> Result<Account> {
        if candidate.kind != AccountKind::System {
            return Err(Invariant::PostingMismatch.into());
        }
        let mut state = self.lock();
        if let Some(id) = state.system_accounts.get(&candidate.currency) {
            return state
                .accounts
                .get(id)
                .cloned()
                .ok_or(Invariant::MissingReference.into());
        }
        state.ensure_new_account_id(candidate.id)?;
        state
            .system_accounts
            .insert(candidate.currency, candidate.id);
        state.insert_account(candidate.clone());
        Ok(candidate.clone())
    }

    async fn create_account(
        &self,
        account: &Account,
        completion: Option<Completion>,
    ) -> Result<()> {
        let mut state = self.lock();
        if account.kind != AccountKind::Merchant || account.balance != crate::Balance::ZERO {
            return Err(Invariant::PostingMismatch.into());
        }
        state.ensure_new_account_id(account.id)?;
        state.check_completion(completion.as_ref())?;
        state.insert_account(account.clone());
        state.apply_completion(completion);
        Ok(())
    }

    async fn account(&self, id: AccountId, viewer: Principal) -> Result<Option<Account>> {
        let state = self.lock();
        Ok(state
            .accounts
            .get(&id)
            .filter(|a| viewer.can_access(a.owner))
            .cloned())
    }

    async fn entries(
        &self,
        account: AccountId,
        viewer: Principal,
        page: PageRequest<EntryId>,
    ) -> Result<Option<Page<Entry>>> {
        let state = self.lock();
        let visible = state
            .accounts
            .get(&account)
            .is_some_and(|a| viewer.can_access(a.owner));
        let Some(ids) = state.account_entries.get(&account).filter(|_| visible) else {
            return Ok(None);
        };
        let ids = match page.starting_after {
            Some(cursor) if !ids.contains(&cursor) => return Err(Error::UnknownCursor),
            Some(cursor) => newest_first(ids.range(..cursor), page.limit.get(), |_| true),
            None => newest_first(ids.iter(), page.limit.get(), |_| true),
        };
        let items = ids
            .iter()
            .filter_map(|id| state.entries.get(id).cloned())
            .collect();
        Ok(Some(Page::from_overfetch(items, page.limit)))
    }

    async fn create_payment(
        &self,
        payment: &Payment,
        completion: Option<Completion>,
    ) -> Result<()> {
        let now = self.now();
        let mut state = self.lock();
        if state.payments.contains_key(&payment.id) {
            return Err(Invariant::DuplicateId.into());
        }
        if payment.status() != PaymentStatus::Pending {
            return Err(Error::IllegalTransition {
                from: PaymentStatus::Pending,
                to: payment.status(),
            });
        }
        check_payment_accounts(&state, payment)?;
        state.check_completion(completion.as_ref())?;

        state
            .owner_payments
            .entry(payment.owner)
            .or_default()
            .insert(payment.id);
        state.open_payments.insert(payment.id);
        state.payments.insert(
            payment.id,
            PaymentRow {
                payment: payment.clone(),
                lease: None,
                touched_at: now,
                voiding: None,
            },
        );
        state.apply_completion(completion);
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
        status: Option<PaymentStatus>,
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
        let matches = |id: &PaymentId| {
            status.is_none_or(|s| {
                state
                    .payments
                    .get(id)
                    .is_some_and(|r| r.payment.status() == s)
            })
        };
        let limit = page.limit.get();
        let ids = match viewer {
            Principal::Platform => match page.starting_after {
                Some(cursor) => newest_first(
                    state.payments.range(..cursor).map(|(k, _)| k),
                    limit,
                    matches,
                ),
                None => newest_first(state.payments.keys(), limit, matches),
            },
            Principal::Merchant(_) => match state.owner_payments.get(&viewer.as_owner()) {
                None => Vec::new(),
                Some(own) => match page.starting_after {
                    Some(cursor) => newest_first(own.range(..cursor), limit, matches),
                    None => newest_first(own.iter(), limit, matches),
                },
            },
        };
        let items = ids
            .iter()
            .filter_map(|id| state.payments.get(id).map(|r| r.payment.clone()))
            .collect();
        Ok(Page::from_overfetch(items, page.limit))
    }

    async fn begin_processing(
        &self,
        id: PaymentId,
        lease: LeaseId,
        duration: Duration,
    ) -> Result<BeginOutcome> {
        let now = self.now();
        let mut state = self.lock();
        let Some(row) = state.payments.get_mut(&id) else {
            return Ok(BeginOutcome::Missing);
        };
        match row.payment.status() {
            PaymentStatus::Success | PaymentStatus::Failed => {
                return Ok(BeginOutcome::Finished(row.payment.clone()));
            }
            PaymentStatus::Processing => {
                if row.lease.is_some_and(|(_, until)| until > now) {
                    return Ok(BeginOutcome::Busy);
                }
            }
            PaymentStatus::Pending => {
                row.payment.start_processing(now)?;
                state
                    .transitions
                    .push((PaymentStatus::Pending, PaymentStatus::Processing));
            }
        }
        let row = state.payments.get_mut(&id).ok_or(Error::NotFound)?;
        row.lease = Some((lease, now.saturating_add(duration)));
        row.touched_at = now;
        let payment = row.payment.clone();
        Ok(match row.voiding {
            Some(attempt) => BeginOutcome::Voiding { payment, attempt },
            None => BeginOutcome::Claimed(payment),
        })
    }

    async fn renew(&self, id: PaymentId, lease: LeaseId, duration: Duration) -> Result<bool> {
        Ok(self.extend_lease(id, lease, duration, false))
    }

    async fn begin_void(&self, id: PaymentId, lease: LeaseId, duration: Duration) -> Result<bool> {
        Ok(self.extend_lease(id, lease, duration, true))
    }

    async fn release(&self, id: PaymentId, lease: LeaseId) -> Result<()> {
        let now = self.now();
        let mut state = self.lock();
        if let Some(row) = state.payments.get_mut(&id)
            && row.payment.status() == PaymentStatus::Processing
            && let Some((held, until)) = row.lease.as_mut()
            && *held == lease
        {
            *until = now;
        }
        Ok(())
    }

    async fn settle(&self, settlement: &Settlement) -> Result<SettleOutcome> {
        let now = self.now();
        let mut state = self.lock();
        let row = state
            .payments
            .get(&settlement.payment_id)
            .ok_or(Error::NotFound)?;
        let held = row.payment.status() == PaymentStatus::Processing
            && row.lease.is_some_and(|(id, _)| id == settlement.lease);
        if !held {
            return Ok(SettleOutcome::NotHeld {
                status: row.payment.status(),
            });
        }
        let mut payment = row.payment.clone();
        match &settlement.result {
            SettlementResult::Failed(reason) => {
                payment.fail(*reason, now)?;
            }
            SettlementResult::Posted(_) if row.voiding.is_some() => {
                return Err(Invariant::Voided.into());
            }
            SettlementResult::Posted(transfer) => {
                payment.succeed(now)?;
                if !transfer.matches(&payment) {
                    return Err(Invariant::PostingMismatch.into());
                }
                if state.transactions.contains_key(&payment.id) {
                    return Err(Invariant::AlreadyPosted.into());
                }
                // Compute every new balance before changing any.
                let mut balances = HashMap::new();
                for entry in transfer.entries() {
                    if state.entries.contains_key(&entry.id) {
                        return Err(Invariant::DuplicateId.into());
                    }
                    let account = state
                        .accounts
                        .get(&entry.account_id)
                        .ok_or(Invariant::MissingReference)?;
                    if account.currency != transfer.currency() {
                        return Err(Invariant::PostingMismatch.into());
                    }
                    balances.insert(account.id, account.apply(entry.direction, entry.amount)?);
                }
                for entry in transfer.entries() {
                    state
                        .account_entries
                        .entry(entry.account_id)
                        .or_default()
                        .insert(entry.id);
                    state.entries.insert(entry.id, entry);
                }
                for (id, balance) in balances {
                    if let Some(account) = state.accounts.get_mut(&id) {
                        account.balance = balance;
                    }
                }
                state.transactions.insert(payment.id, transfer.id());
            }
        }
        state
            .transitions
            .push((PaymentStatus::Processing, payment.status()));
        state.open_payments.remove(&payment.id);
        if let Some(row) = state.payments.get_mut(&payment.id) {
            row.payment = payment.clone();
            row.lease = None;
        }
        Ok(SettleOutcome::Settled(payment))
    }

    async fn sweep(&self, stale_after: Duration, limit: usize) -> Result<Vec<PaymentId>> {
        let now = self.now();
        let cutoff = now.saturating_sub(stale_after);
        let mut state = self.lock();
        let State {
            open_payments,
            payments,
            ..
        } = &mut *state;
        let mut due = Vec::new();
        for id in open_payments.iter() {
            if due.len() >= limit {
                break;
            }
            let Some(row) = payments.get_mut(id) else {
                continue;
            };
            let lease_over = row.lease.is_none_or(|(_, until)| until <= now);
            if row.touched_at <= cutoff && lease_over {
                row.touched_at = now;
                due.push(*id);
            }
        }
        Ok(due)
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
