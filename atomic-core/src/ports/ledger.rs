//! [`LedgerStore`]: accounts, payments, ledger entries, and the atomic steps of settlement.

use std::time::Duration;

use async_trait::async_trait;

use crate::account::Account;
use crate::error::Result;
use crate::id::{AccountId, EntryId, PaymentId};
use crate::idempotency::Completion;
use crate::ledger::{Entry, Transfer};
use crate::page::{Page, PageRequest};
use crate::payment::{FailureReason, Payment, PaymentStatus};
use crate::principal::Principal;

crate::id::id_type!(
    /// Identifies one worker's hold on a payment; settlement succeeds only for the current holder.
    LeaseId
);

/// The answer to [`LedgerStore::begin_processing`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BeginOutcome {
    /// The payment is now `PROCESSING`, held by the caller's lease.
    Claimed(Payment),
    /// The payment is now held by the caller's lease, but the charge of an earlier attempt is
    /// being voided ([`LedgerStore::begin_void`]): the holder voids that attempt and fails the
    /// payment; it never charges it again.
    Voiding {
        /// The payment, `PROCESSING`.
        payment: Payment,
        /// The attempt (the lease that charged) whose charge is being voided.
        attempt: LeaseId,
    },
    /// Another worker holds it with a live lease.
    Busy,
    /// It is already `SUCCESS` or `FAILED`.
    Finished(Payment),
    /// No such payment.
    Missing,
}

/// How a held payment ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettlementResult {
    /// Post this transfer and mark the payment `SUCCESS`.
    Posted(Transfer),
    /// Post nothing and mark the payment `FAILED`.
    Failed(FailureReason),
}

/// One settlement: which payment, under which lease, and how it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// The payment.
    pub payment_id: PaymentId,
    /// The lease the caller holds.
    pub lease: LeaseId,
    /// The ending.
    pub result: SettlementResult,
}

/// The answer to [`LedgerStore::settle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettleOutcome {
    /// Done: the payment as it now stands.
    Settled(Payment),
    /// The caller no longer holds the payment (finished by someone, or its lease was taken
    /// over); nothing was written.
    NotHeld {
        /// The payment's status now.
        status: PaymentStatus,
    },
}

/// The store of record for accounts, payments and the ledger.
///
/// Every method is one atomic step: it fully happens or leaves no trace. Reads take the
/// caller's [`Principal`] and filter by it in the store (a merchant never receives a record it
/// may not see, so there is no fetch-then-check).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait LedgerStore: Send + Sync + 'static {
    /// Checks that the store answers.
    async fn ping(&self) -> Result<()>;

    /// The system account of `candidate`'s currency; stores `candidate` when the currency has
    /// none yet. Safe to call from many processes at once: one system account per currency.
    async fn ensure_system_account(&self, candidate: &Account) -> Result<Account>;

    /// Stores a new account and, in the same transaction, completes `completion`.
    async fn create_account(&self, account: &Account, completion: Option<Completion>)
    -> Result<()>;

    /// The account, if `viewer` may see it.
    async fn account(&self, id: AccountId, viewer: Principal) -> Result<Option<Account>>;

    /// The account's entries, newest first; `None` when `viewer` may not see the account.
    /// A cursor that is not an entry of this account is [`crate::Error::UnknownCursor`].
    async fn entries(
        &self,
        account: AccountId,
        viewer: Principal,
        page: PageRequest<EntryId>,
    ) -> Result<Option<Page<Entry>>>;

    /// Stores a new `PENDING` payment and, in the same transaction, completes `completion`.
    /// Refuses a payment whose accounts are missing or disagree with it on currency or owner.
    async fn create_payment(&self, payment: &Payment, completion: Option<Completion>)
    -> Result<()>;

    /// The payment, if `viewer` may see it.
    async fn payment(&self, id: PaymentId, viewer: Principal) -> Result<Option<Payment>>;

    /// Payments `viewer` may see, newest first, optionally of one status. A cursor the viewer
    /// cannot see is [`crate::Error::UnknownCursor`].
    async fn payments(
        &self,
        viewer: Principal,
        status: Option<PaymentStatus>,
        page: PageRequest<PaymentId>,
    ) -> Result<Page<Payment>>;

    /// Compare-and-set to `PROCESSING` under `lease` for `duration` (by the store's clock):
    /// succeeds from `PENDING`, or from `PROCESSING` whose lease has run out. A payment whose
    /// void has begun is claimed as [`BeginOutcome::Voiding`].
    async fn begin_processing(
        &self,
        id: PaymentId,
        lease: LeaseId,
        duration: Duration,
    ) -> Result<BeginOutcome>;

    /// [`Self::begin_processing`] for many payments under one lease, in one step where the
    /// store can: one outcome per id, in the order given.
    async fn begin_processing_many(
        &self,
        ids: &[PaymentId],
        lease: LeaseId,
        duration: Duration,
    ) -> Result<Vec<BeginOutcome>> {
        let mut outcomes = Vec::with_capacity(ids.len());
        for id in ids {
            outcomes.push(self.begin_processing(*id, lease, duration).await?);
        }
        Ok(outcomes)
    }

    /// Extends a held lease to `duration` from now (by the store's clock); `false`, and
    /// nothing changed, when `lease` no longer holds the payment. A worker renews before an
    /// irreversible step (voiding a charge), so it never acts on a payment another took over.
    async fn renew(&self, id: PaymentId, lease: LeaseId, duration: Duration) -> Result<bool>;

    /// [`Self::renew`], and in the same step marks the payment's charge as being voided, for
    /// good: from then on a `Posted` settlement of it is refused
    /// ([`crate::Invariant::Voided`]) and it can only fail, and every later claim of it is
    /// [`BeginOutcome::Voiding`]. The mark names the attempt being voided: `lease`, or the
    /// attempt an earlier mark named. A worker calls it before voiding, so no later attempt
    /// charges or posts the payment. `false`, and nothing changed, when `lease` no longer
    /// holds it.
    async fn begin_void(&self, id: PaymentId, lease: LeaseId, duration: Duration) -> Result<bool>;

    /// Ends `lease` now without settling, so the next attempt can claim at once. A no-op if
    /// the lease is no longer held.
    async fn release(&self, id: PaymentId, lease: LeaseId) -> Result<()>;

    /// Settles a held payment in ONE transaction: for `Posted`, both entries, both balances and
    /// `SUCCESS`; for `Failed`, only `FAILED`. A payment is settled at most once: a second
    /// settlement, or one under a lease no longer held, writes nothing.
    async fn settle(&self, settlement: &Settlement) -> Result<SettleOutcome>;

    /// [`Self::settle`] for many held payments: one result per settlement, in the order given,
    /// each exactly what `settle` would have given. A store may write them in one transaction
    /// (the hot system account is then updated once per batch), but one settlement that cannot
    /// be written never fails the others.
    async fn settle_many(&self, settlements: &[Settlement]) -> Vec<Result<SettleOutcome>> {
        let mut results = Vec::with_capacity(settlements.len());
        for settlement in settlements {
            results.push(self.settle(settlement).await);
        }
        results
    }

    /// Payments that need a new job: `PENDING` and untouched for `stale_after`, or
    /// `PROCESSING` with a lease that ran out. Marks each returned payment as touched, so a
    /// sweep every few seconds returns it again only after another `stale_after`.
    async fn sweep(&self, stale_after: Duration, limit: usize) -> Result<Vec<PaymentId>>;
}
