//! [`PaymentStore`]: payments and refunds as the request path sees them: records of intent
//! written with their idempotency completion, compare-and-set decisions (capture, cancel), and
//! filtered reads. No method here moves money; [`super::SettlementStore`] does.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::fresh::Fresh;
use crate::id::{PaymentId, RefundId};
use crate::idempotency::Completion;
use crate::metadata::MetadataFilter;
use crate::money::Amount;
use crate::page::{CreatedRange, Page, PageRequest};
use crate::payment::{CancellationReason, Payment, PaymentStatus};
use crate::principal::Principal;
use crate::refund::{Refund, RefundStatus};
use crate::time::Timestamp;

/// Which payments a list keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaymentFilter {
    /// Only this status.
    pub status: Option<PaymentStatus>,
    /// Only those created in this range.
    pub created: CreatedRange,
    /// Only those whose metadata has every pair.
    pub metadata: MetadataFilter,
}

/// Which refunds a list keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RefundFilter {
    /// Only the refunds of this payment.
    pub payment: Option<PaymentId>,
    /// Only this status.
    pub status: Option<RefundStatus>,
    /// Only those created in this range.
    pub created: CreatedRange,
    /// Only those whose metadata has every pair.
    pub metadata: MetadataFilter,
}

/// Payments and refunds: creation, decisions on the request path, reads.
///
/// Every method is one atomic step. A decision that finds the payment in another state than
/// the one it needs answers [`crate::Error::InvalidState`] with the status it found and writes
/// nothing (its completion included).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait PaymentStore: Send + Sync + 'static {
    /// Stores a new `PENDING` payment and, in the same transaction, completes `completion`.
    /// Refuses a payment whose accounts are missing or disagree with it on currency or owner.
    async fn create_payment(
        &self,
        payment: &Fresh<Payment>,
        completion: Option<Completion>,
    ) -> Result<()>;

    /// The payment, if `viewer` may see it.
    async fn payment(&self, id: PaymentId, viewer: Principal) -> Result<Option<Payment>>;

    /// Payments `viewer` may see that pass `filter`, newest first. A cursor the viewer cannot
    /// see is [`crate::Error::UnknownCursor`].
    async fn payments(
        &self,
        viewer: Principal,
        filter: &PaymentFilter,
        page: PageRequest<PaymentId>,
    ) -> Result<Page<Payment>>;

    /// `AUTHORIZED -> PROCESSING` to capture `amount`, stamped `at` (the `updatedAt` the
    /// caller answered), only while the authorization is younger than `authorization_ttl` (by
    /// the store's clock; an older one is `InvalidState`), and completes `completion` in the
    /// same step. Returns the payment as it now stands.
    async fn request_capture(
        &self,
        id: PaymentId,
        amount: Amount,
        at: Timestamp,
        authorization_ttl: Duration,
        completion: Option<Completion>,
    ) -> Result<Payment>;

    /// `AUTHORIZED -> CANCELED` for `reason`, stamped `at` (the `updatedAt` the caller
    /// answered), completing `completion` in the same step.
    async fn cancel(
        &self,
        id: PaymentId,
        reason: CancellationReason,
        at: Timestamp,
        completion: Option<Completion>,
    ) -> Result<Payment>;

    /// Stores a new `PENDING` refund and, in the same transaction, reserves its amount on its
    /// payment and completes `completion`: a payment not `SUCCESS` is `InvalidState`, an amount
    /// above what is refundable then is [`crate::Error::AmountExceedsRefundable`].
    async fn create_refund(
        &self,
        refund: &Fresh<Refund>,
        completion: Option<Completion>,
    ) -> Result<()>;

    /// The refund, if `viewer` may see it.
    async fn refund(&self, id: RefundId, viewer: Principal) -> Result<Option<Refund>>;

    /// Refunds `viewer` may see that pass `filter`, newest first. A cursor the viewer cannot
    /// see is [`crate::Error::UnknownCursor`].
    async fn refunds(
        &self,
        viewer: Principal,
        filter: &RefundFilter,
        page: PageRequest<RefundId>,
    ) -> Result<Page<Refund>>;
}
