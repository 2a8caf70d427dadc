//! Refunds and their state machine: `PENDING -> PROCESSING -> SUCCESS | FAILED`, like a
//! payment's automatic charge. A refund gives back part or all of a `SUCCESS` payment's
//! captured amount: its amount is reserved on the payment when it is created (so refunds that
//! are not `FAILED` never add up to more than `amountCaptured`), and a worker posts it (DEBIT
//! the merchant account, CREDIT the currency's system account) in one transaction with its
//! status. A refund the merchant's balance cannot cover fails with `insufficient_balance` and
//! its amount is refundable again.

use std::fmt;

use crate::error::{Error, Invalid};
use crate::fresh::Fresh;
use crate::id::{AccountId, PaymentId, RefundId};
use crate::idempotency::IdempotencyKey;
use crate::metadata::Metadata;
use crate::money::{Amount, Currency};
use crate::payment::Payment;
use crate::principal::{Owner, Principal};
use crate::time::Timestamp;

/// A refund's status as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(rename_all = "UPPERCASE"))]
pub enum RefundStatus {
    /// Stored, not yet picked up by a worker.
    Pending,
    /// A worker holds it.
    Processing,
    /// Posted: exactly one refund transaction exists for it.
    Success,
    /// Not posted; its amount is refundable again.
    Failed,
}

impl RefundStatus {
    /// Every status.
    pub const ALL: [RefundStatus; 4] = [
        RefundStatus::Pending,
        RefundStatus::Processing,
        RefundStatus::Success,
        RefundStatus::Failed,
    ];

    /// The wire and storage name.
    pub fn as_str(&self) -> &'static str {
        match self {
            RefundStatus::Pending => "PENDING",
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Success => "SUCCESS",
            RefundStatus::Failed => "FAILED",
        }
    }

    /// Parses a wire name (exact, upper-case).
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or(Invalid::new(
                "must be one of PENDING, PROCESSING, SUCCESS, FAILED",
            ))
    }

    /// Whether `self -> to` is a transition of the refund state machine.
    pub fn can_become(&self, to: RefundStatus) -> bool {
        use RefundStatus::*;
        matches!(
            (self, to),
            (Pending, Processing) | (Processing, Success | Failed)
        )
    }
}

impl fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the merchant refunds (Stripe's codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(rename_all = "snake_case"))]
pub enum RefundReason {
    /// The customer was charged twice.
    Duplicate,
    /// The charge was fraudulent.
    Fraudulent,
    /// The customer asked.
    RequestedByCustomer,
}

impl RefundReason {
    /// The wire and storage code.
    pub fn as_str(&self) -> &'static str {
        match self {
            RefundReason::Duplicate => "duplicate",
            RefundReason::Fraudulent => "fraudulent",
            RefundReason::RequestedByCustomer => "requested_by_customer",
        }
    }

    /// Parses a wire code.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match s {
            "duplicate" => Ok(RefundReason::Duplicate),
            "fraudulent" => Ok(RefundReason::Fraudulent),
            "requested_by_customer" => Ok(RefundReason::RequestedByCustomer),
            _ => Err(Invalid::new(
                "must be one of duplicate, fraudulent, requested_by_customer",
            )),
        }
    }
}

/// Why a refund failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(rename_all = "snake_case"))]
pub enum RefundFailureReason {
    /// The merchant's balance could not cover it when it was posted.
    InsufficientBalance,
    /// The processor refused it for good.
    ProcessingError,
}

impl RefundFailureReason {
    /// The wire and storage code.
    pub fn as_str(&self) -> &'static str {
        match self {
            RefundFailureReason::InsufficientBalance => "insufficient_balance",
            RefundFailureReason::ProcessingError => "processing_error",
        }
    }

    /// Parses a stored code.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "insufficient_balance" => Some(RefundFailureReason::InsufficientBalance),
            "processing_error" => Some(RefundFailureReason::ProcessingError),
            _ => None,
        }
    }
}

/// A refund's state; `Failed` carries its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefundState {
    /// See [`RefundStatus::Pending`].
    Pending,
    /// See [`RefundStatus::Processing`].
    Processing,
    /// See [`RefundStatus::Success`].
    Success,
    /// See [`RefundStatus::Failed`].
    Failed(RefundFailureReason),
}

impl RefundState {
    /// The status without the reason.
    pub fn status(&self) -> RefundStatus {
        match self {
            RefundState::Pending => RefundStatus::Pending,
            RefundState::Processing => RefundStatus::Processing,
            RefundState::Success => RefundStatus::Success,
            RefundState::Failed(_) => RefundStatus::Failed,
        }
    }

    /// The failure reason, when failed.
    pub fn failure_reason(&self) -> Option<RefundFailureReason> {
        match self {
            RefundState::Failed(reason) => Some(*reason),
            _ => None,
        }
    }

    /// Rebuilds a state from a stored status and reason; refuses inconsistent pairs.
    pub fn from_parts(
        status: RefundStatus,
        reason: Option<RefundFailureReason>,
    ) -> Result<Self, Invalid> {
        match (status, reason) {
            (RefundStatus::Pending, None) => Ok(RefundState::Pending),
            (RefundStatus::Processing, None) => Ok(RefundState::Processing),
            (RefundStatus::Success, None) => Ok(RefundState::Success),
            (RefundStatus::Failed, Some(reason)) => Ok(RefundState::Failed(reason)),
            _ => Err(Invalid::new("failure reason present exactly when FAILED")),
        }
    }
}

/// What a refund request asks for, already parsed.
#[derive(Clone, Debug, Default)]
pub struct RefundRequest {
    /// Amount; `None` means all that is still refundable.
    pub amount: Option<Amount>,
    /// Why.
    pub reason: Option<RefundReason>,
    /// The merchant's own key-value pairs.
    pub metadata: Metadata,
}

/// A refund. Fields other than the state are fixed at creation; the accounts and owner are
/// its payment's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    /// Id.
    pub id: RefundId,
    /// The payment refunded.
    pub payment_id: PaymentId,
    /// The payment's credited account, debited by the refund.
    pub merchant_account: AccountId,
    /// The currency's system account, credited by the refund.
    pub funding_account: AccountId,
    /// The merchant account's owner.
    pub owner: Owner,
    /// Amount.
    pub amount: Amount,
    /// Currency (the payment's).
    pub currency: Currency,
    /// Why.
    pub reason: Option<RefundReason>,
    /// The merchant's own key-value pairs.
    pub metadata: Metadata,
    /// The idempotency key it was created with, if any.
    pub idempotency_key: Option<IdempotencyKey>,
    /// Who created it.
    pub created_by: Principal,
    /// When it was accepted.
    pub created_at: Timestamp,
    state: RefundState,
    updated_at: Timestamp,
}

impl Refund {
    /// A new `PENDING` refund of `payment`; the amount must be reserved on the payment in the
    /// same store step that stores the refund.
    pub fn new(
        payment: &Payment,
        amount: Amount,
        request: RefundRequest,
        idempotency_key: Option<IdempotencyKey>,
        created_by: Principal,
        now: Timestamp,
    ) -> Fresh<Self> {
        Fresh::new(Self {
            id: RefundId::generate(),
            payment_id: payment.id,
            merchant_account: payment.merchant_account,
            funding_account: payment.funding_account,
            owner: payment.owner,
            amount,
            currency: payment.currency,
            reason: request.reason,
            metadata: request.metadata,
            idempotency_key,
            created_by,
            created_at: now,
            state: RefundState::Pending,
            updated_at: now,
        })
    }

    /// Rebuilds a stored refund (for adapters).
    pub fn restore(parts: RefundParts) -> Self {
        Self {
            id: parts.id,
            payment_id: parts.payment_id,
            merchant_account: parts.merchant_account,
            funding_account: parts.funding_account,
            owner: parts.owner,
            amount: parts.amount,
            currency: parts.currency,
            reason: parts.reason,
            metadata: parts.metadata,
            idempotency_key: parts.idempotency_key,
            created_by: parts.created_by,
            created_at: parts.created_at,
            state: parts.state,
            updated_at: parts.updated_at,
        }
    }

    /// The current state.
    pub fn state(&self) -> RefundState {
        self.state
    }

    /// The current status.
    pub fn status(&self) -> RefundStatus {
        self.state.status()
    }

    /// Why it failed, when it did.
    pub fn failure_reason(&self) -> Option<RefundFailureReason> {
        self.state.failure_reason()
    }

    /// When the state last changed.
    pub fn updated_at(&self) -> Timestamp {
        self.updated_at
    }

    /// `PENDING -> PROCESSING`.
    pub fn start_processing(&mut self, now: Timestamp) -> Result<(), Error> {
        self.transition(RefundState::Processing, now)
    }

    /// `PROCESSING -> SUCCESS`.
    pub fn succeed(&mut self, now: Timestamp) -> Result<(), Error> {
        self.transition(RefundState::Success, now)
    }

    /// `PROCESSING -> FAILED`.
    pub fn fail(&mut self, reason: RefundFailureReason, now: Timestamp) -> Result<(), Error> {
        self.transition(RefundState::Failed(reason), now)
    }

    fn transition(&mut self, to: RefundState, now: Timestamp) -> Result<(), Error> {
        let from = self.status();
        if !from.can_become(to.status()) {
            return Err(Error::IllegalRefundTransition {
                from,
                to: to.status(),
            });
        }
        self.state = to;
        self.updated_at = now.max(self.updated_at);
        Ok(())
    }
}

/// Every field of a stored refund, for [`Refund::restore`].
#[derive(Clone, Debug)]
pub struct RefundParts {
    /// See [`Refund::id`].
    pub id: RefundId,
    /// See [`Refund::payment_id`].
    pub payment_id: PaymentId,
    /// See [`Refund::merchant_account`].
    pub merchant_account: AccountId,
    /// See [`Refund::funding_account`].
    pub funding_account: AccountId,
    /// See [`Refund::owner`].
    pub owner: Owner,
    /// See [`Refund::amount`].
    pub amount: Amount,
    /// See [`Refund::currency`].
    pub currency: Currency,
    /// See [`Refund::reason`].
    pub reason: Option<RefundReason>,
    /// See [`Refund::metadata`].
    pub metadata: Metadata,
    /// See [`Refund::idempotency_key`].
    pub idempotency_key: Option<IdempotencyKey>,
    /// See [`Refund::created_by`].
    pub created_by: Principal,
    /// See [`Refund::created_at`].
    pub created_at: Timestamp,
    /// The state.
    pub state: RefundState,
    /// When the state last changed.
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_transitions_exist() {
        use RefundStatus::*;
        let legal = [
            (Pending, Processing),
            (Processing, Success),
            (Processing, Failed),
        ];
        for from in RefundStatus::ALL {
            for to in RefundStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    legal.contains(&(from, to)),
                    "{from}->{to}"
                );
            }
        }
    }
}
