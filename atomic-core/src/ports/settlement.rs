//! [`SettlementStore`]: the atomic steps of settlement, as the worker and the recovery sweep
//! take them. Every method works on a batch, so a worker claims and settles many jobs in one
//! store call (one transaction, the hot system account updated once per batch).

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::id::{PaymentId, RefundId};
use crate::ledger::Transfer;
use crate::payment::{FailureReason, Payment};
use crate::ports::queue::Job;
use crate::refund::{Refund, RefundFailureReason};
use crate::time::Timestamp;

crate::id::id_type!(
    /// Identifies one worker's hold on a payment or refund; settlement succeeds only for the
    /// current holder.
    LeaseId
);

/// The answer to [`SettlementStore::begin_payments`] for one payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BeginOutcome {
    /// The payment is now `PROCESSING`, held by the caller's lease; its state says what to do
    /// (charge, authorize, or capture).
    Claimed(Payment),
    /// The payment is now held by the caller's lease, but the charge of an earlier attempt is
    /// being voided ([`SettlementStore::begin_void`]): the holder voids that attempt and fails
    /// the payment; it never charges it again.
    Voiding {
        /// The payment, `PROCESSING`.
        payment: Payment,
        /// The attempt (the lease that charged) whose charge is being voided.
        attempt: LeaseId,
    },
    /// Another worker holds it with a live lease.
    Busy,
    /// Nothing for a worker to do: it is terminal, or `AUTHORIZED` with no capture asked.
    Finished(Payment),
    /// No such payment.
    Missing,
}

/// The answer to [`SettlementStore::begin_refunds`] for one refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundBegin {
    /// The refund is now `PROCESSING`, held by the caller's lease.
    Claimed(Refund),
    /// Another worker holds it with a live lease.
    Busy,
    /// It is already `SUCCESS` or `FAILED`.
    Finished(Refund),
    /// No such refund.
    Missing,
}

/// How a held payment ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettlementResult {
    /// Post this transfer (a charge or a capture) and mark the payment `SUCCESS`.
    Posted(Transfer),
    /// Manual capture: the card is authorized; mark the payment `AUTHORIZED`, post nothing.
    Authorized,
    /// Post nothing and mark the payment `FAILED`.
    Failed(FailureReason),
}

/// How a held refund ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundResult {
    /// Post this transfer, mark the refund `SUCCESS` and count it in the payment's
    /// `amountRefunded`. Refused with [`crate::error::Invariant::InsufficientFunds`] when the merchant
    /// account cannot cover it.
    Posted(Transfer),
    /// Post nothing, mark the refund `FAILED` and release its reservation on the payment.
    Failed(RefundFailureReason),
}

/// One settlement: what, under which lease, and how it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// A payment's charge, authorization or capture.
    Payment {
        /// The payment.
        payment_id: PaymentId,
        /// The lease the caller holds.
        lease: LeaseId,
        /// The ending.
        result: SettlementResult,
    },
    /// A refund.
    Refund {
        /// The refund.
        refund_id: RefundId,
        /// The lease the caller holds.
        lease: LeaseId,
        /// The ending.
        result: RefundResult,
    },
}

/// The answer to one settlement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettleOutcome {
    /// Done: the payment as it now stands.
    Payment(Payment),
    /// Done: the refund as it now stands.
    Refund(Refund),
    /// The caller no longer holds it (finished by someone, or its lease was taken over);
    /// nothing was written.
    NotHeld,
}

/// The payments the workers still owe an outcome: `PENDING` or `PROCESSING` (an authorization
/// waiting for its capture is not open; a requested capture is).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenPayments {
    /// How many there are.
    pub count: u64,
    /// When the one waiting longest became open: its creation, or for a capture, when the
    /// capture was asked. `None` when there are none.
    pub oldest: Option<Timestamp>,
}

/// The steps of settlement. Each is atomic: it fully happens or leaves no trace.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait SettlementStore: Send + Sync + 'static {
    /// Claims payments under `lease` for `duration` (by the store's clock), in one step: a
    /// compare-and-set to `PROCESSING` from `PENDING`, or of a `PROCESSING` payment nobody
    /// holds (a capture just asked, a lease run out). A payment whose void has begun is
    /// claimed as [`BeginOutcome::Voiding`]. One outcome per id, in the order given.
    async fn begin_payments(
        &self,
        ids: &[PaymentId],
        lease: LeaseId,
        duration: Duration,
    ) -> Result<Vec<BeginOutcome>>;

    /// Claims refunds the same way: `PENDING`, or `PROCESSING` nobody holds. One outcome per
    /// id, in the order given.
    async fn begin_refunds(
        &self,
        ids: &[RefundId],
        lease: LeaseId,
        duration: Duration,
    ) -> Result<Vec<RefundBegin>>;

    /// Renews a held payment's lease to `duration` from now and, in the same step, marks its
    /// charge as being voided, for good: from then on a `Posted` or `Authorized` settlement
    /// of it is refused ([`crate::error::Invariant::Voided`]), it can only fail, and every
    /// later claim of it is [`BeginOutcome::Voiding`]. The mark names the attempt being voided:
    /// `lease`, or the attempt an earlier mark named. `false`, and nothing changed, when
    /// `lease` no longer holds it.
    async fn begin_void(&self, id: PaymentId, lease: LeaseId, duration: Duration) -> Result<bool>;

    /// Ends `lease` on the job's payment or refund now without settling, so the next attempt
    /// can claim at once. A no-op if the lease is no longer held.
    async fn release(&self, job: Job, lease: LeaseId) -> Result<()>;

    /// Settles held payments and refunds: one result per settlement, in the order given, each
    /// written as if alone: all of a settlement (entries, balances, status, the payment's
    /// refund counters) or none of it. A store may write them in one transaction, but one that
    /// cannot be written never fails the others. Nothing is settled twice: a second
    /// settlement, or one under a lease no longer held, is [`SettleOutcome::NotHeld`].
    async fn settle(&self, settlements: &[Settlement]) -> Vec<Result<SettleOutcome>>;

    /// Jobs that need enqueuing again: payments and refunds `PENDING` and untouched for
    /// `stale_after`, or `PROCESSING` with no live lease. Marks each returned one as touched,
    /// so a sweep every few seconds returns it again only after another `stale_after`.
    async fn sweep(&self, stale_after: Duration, limit: usize) -> Result<Vec<Job>>;

    /// Cancels, with reason `expired`, up to `limit` payments `AUTHORIZED` for longer than
    /// `authorization_ttl` (by the store's clock), each by a compare-and-set, so each is
    /// canceled exactly once however many sweeps run. Returns the payments canceled.
    async fn expire_authorizations(
        &self,
        authorization_ttl: Duration,
        limit: usize,
    ) -> Result<Vec<Payment>>;

    /// How many payments are open and since when the oldest has waited, in one read: what
    /// the sweep reports as the backlog (`atomic_open_payments`). Cheap while the backlog is
    /// small; it never reads settled payments.
    async fn open_payments(&self) -> Result<OpenPayments>;
}
