//! Payments and their state machine: `PENDING -> PROCESSING -> SUCCESS | FAILED`. The state is
//! private and changes only through [`Payment::start_processing`], [`Payment::succeed`] and
//! [`Payment::fail`], which refuse every other transition; terminal states never change.

use std::fmt;

use crate::error::{Error, Invalid};
use crate::id::{AccountId, PaymentId};
use crate::idempotency::IdempotencyKey;
use crate::money::{Amount, Currency};
use crate::principal::{Owner, Principal};
use crate::text;
use crate::time::Timestamp;

/// The description a payment gets when the request names none.
pub const DEFAULT_DESCRIPTION: &str = "API Payment";

/// A payment's status as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PaymentStatus {
    /// Stored, not yet picked up by a worker.
    Pending,
    /// A worker holds it.
    Processing,
    /// Settled: exactly one balanced ledger transaction exists for it.
    Success,
    /// Declined or errored: no ledger transaction exists for it.
    Failed,
}

impl PaymentStatus {
    /// Every status, in state-machine order.
    pub const ALL: [PaymentStatus; 4] = [
        PaymentStatus::Pending,
        PaymentStatus::Processing,
        PaymentStatus::Success,
        PaymentStatus::Failed,
    ];

    /// The wire and storage name (`PENDING` …).
    pub fn as_str(&self) -> &'static str {
        match self {
            PaymentStatus::Pending => "PENDING",
            PaymentStatus::Processing => "PROCESSING",
            PaymentStatus::Success => "SUCCESS",
            PaymentStatus::Failed => "FAILED",
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

    /// Whether the payment can never change again.
    pub fn is_terminal(&self) -> bool {
        matches!(self, PaymentStatus::Success | PaymentStatus::Failed)
    }

    /// Whether `self -> to` is a transition of the state machine.
    pub fn can_become(&self, to: PaymentStatus) -> bool {
        matches!(
            (self, to),
            (PaymentStatus::Pending, PaymentStatus::Processing)
                | (PaymentStatus::Processing, PaymentStatus::Success)
                | (PaymentStatus::Processing, PaymentStatus::Failed)
        )
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a payment failed (a snake_case code on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The card was declined.
    CardDeclined,
    /// The card has insufficient funds.
    InsufficientFunds,
    /// The processor, or our own processing, failed for good.
    ProcessingError,
}

impl FailureReason {
    /// The wire and storage code.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureReason::CardDeclined => "card_declined",
            FailureReason::InsufficientFunds => "insufficient_funds",
            FailureReason::ProcessingError => "processing_error",
        }
    }

    /// Parses a stored code.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "card_declined" => Some(FailureReason::CardDeclined),
            "insufficient_funds" => Some(FailureReason::InsufficientFunds),
            "processing_error" => Some(FailureReason::ProcessingError),
            _ => None,
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of a payment; `Failed` carries its reason, so a reason exists exactly when failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PaymentState {
    /// See [`PaymentStatus::Pending`].
    Pending,
    /// See [`PaymentStatus::Processing`].
    Processing,
    /// See [`PaymentStatus::Success`].
    Success,
    /// See [`PaymentStatus::Failed`].
    Failed(FailureReason),
}

impl PaymentState {
    /// The status without the reason.
    pub fn status(&self) -> PaymentStatus {
        match self {
            PaymentState::Pending => PaymentStatus::Pending,
            PaymentState::Processing => PaymentStatus::Processing,
            PaymentState::Success => PaymentStatus::Success,
            PaymentState::Failed(_) => PaymentStatus::Failed,
        }
    }

    /// The failure reason, when failed.
    pub fn failure_reason(&self) -> Option<FailureReason> {
        match self {
            PaymentState::Failed(reason) => Some(*reason),
            _ => None,
        }
    }

    /// Rebuilds a state from a stored status and reason; refuses inconsistent pairs.
    pub fn from_parts(
        status: PaymentStatus,
        reason: Option<FailureReason>,
    ) -> Result<Self, Invalid> {
        match (status, reason) {
            (PaymentStatus::Pending, None) => Ok(PaymentState::Pending),
            (PaymentStatus::Processing, None) => Ok(PaymentState::Processing),
            (PaymentStatus::Success, None) => Ok(PaymentState::Success),
            (PaymentStatus::Failed, Some(reason)) => Ok(PaymentState::Failed(reason)),
            _ => Err(Invalid::new("failure reason present exactly when FAILED")),
        }
    }
}

/// A card source token (`tok_…`, letters, digits and `_`). Its `Display` is masked.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CardSource(String);

impl CardSource {
    /// Validates a token.
    pub fn parse(token: impl Into<String>) -> Result<Self, Invalid> {
        let token = token.into();
        let rest = token
            .strip_prefix("tok_")
            .ok_or(Invalid::new("must be a card token starting with tok_"))?;
        if rest.is_empty() || token.len() > 255 {
            return Err(Invalid::new("must be a card token of 5 to 255 characters"));
        }
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(Invalid::new(
                "must contain only letters, digits and underscores",
            ));
        }
        Ok(Self(token))
    }

    /// The whole token, for the card processor and the API response. Never log this.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The token with all but its last four characters hidden, for logs.
    pub fn masked(&self) -> String {
        let tail: String = self
            .0
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("tok_…{tail}")
    }
}

impl fmt::Debug for CardSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardSource({})", self.masked())
    }
}

/// A payment description: at most 1000 characters; line breaks allowed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Description(String);

impl Description {
    /// Validates a description.
    pub fn parse(text: impl Into<String>) -> Result<Self, Invalid> {
        let text = text.into();
        text::check(&text, 0, 1000, text::Lines::Multi)?;
        Ok(Self(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Description {
    fn default() -> Self {
        Self(DEFAULT_DESCRIPTION.to_owned())
    }
}

/// Everything a new payment is made of, checked before it is built.
#[derive(Clone, Debug)]
pub struct NewPayment {
    /// The account credited (the API's `merchantId`).
    pub merchant_account: AccountId,
    /// The currency's system account, debited.
    pub funding_account: AccountId,
    /// The credited account's owner.
    pub owner: Owner,
    /// Amount.
    pub amount: Amount,
    /// Currency (equal to both accounts').
    pub currency: Currency,
    /// Card token.
    pub source: CardSource,
    /// Description.
    pub description: Description,
    /// The idempotency key the request carried, if any.
    pub idempotency_key: Option<IdempotencyKey>,
    /// Who created it (the scope of its idempotency key).
    pub created_by: Principal,
}

/// A payment. Fields other than the state are fixed at creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// Id.
    pub id: PaymentId,
    /// The account credited (the API's `merchantId`).
    pub merchant_account: AccountId,
    /// The system account debited.
    pub funding_account: AccountId,
    /// The credited account's owner.
    pub owner: Owner,
    /// Amount in minor units.
    pub amount: Amount,
    /// Currency.
    pub currency: Currency,
    /// Card token.
    pub source: CardSource,
    /// Description.
    pub description: Description,
    /// The idempotency key it was created with, if any.
    pub idempotency_key: Option<IdempotencyKey>,
    /// Who created it (the scope of its idempotency key).
    pub created_by: Principal,
    /// When it was accepted.
    pub created_at: Timestamp,
    state: PaymentState,
    updated_at: Timestamp,
}

impl Payment {
    /// A new `PENDING` payment.
    pub fn new(new: NewPayment, now: Timestamp) -> Self {
        Self {
            id: PaymentId::generate(),
            merchant_account: new.merchant_account,
            funding_account: new.funding_account,
            owner: new.owner,
            amount: new.amount,
            currency: new.currency,
            source: new.source,
            description: new.description,
            idempotency_key: new.idempotency_key,
            created_by: new.created_by,
            created_at: now,
            state: PaymentState::Pending,
            updated_at: now,
        }
    }

    /// Rebuilds a stored payment (for adapters).
    pub fn restore(parts: PaymentParts) -> Self {
        Self {
            id: parts.id,
            merchant_account: parts.merchant_account,
            funding_account: parts.funding_account,
            owner: parts.owner,
            amount: parts.amount,
            currency: parts.currency,
            source: parts.source,
            description: parts.description,
            idempotency_key: parts.idempotency_key,
            created_by: parts.created_by,
            created_at: parts.created_at,
            state: parts.state,
            updated_at: parts.updated_at,
        }
    }

    /// The current state.
    pub fn state(&self) -> PaymentState {
        self.state
    }

    /// The current status.
    pub fn status(&self) -> PaymentStatus {
        self.state.status()
    }

    /// Why it failed, when it did.
    pub fn failure_reason(&self) -> Option<FailureReason> {
        self.state.failure_reason()
    }

    /// When the state last changed.
    pub fn updated_at(&self) -> Timestamp {
        self.updated_at
    }

    /// `PENDING -> PROCESSING`.
    pub fn start_processing(&mut self, now: Timestamp) -> Result<(), Error> {
        self.transition(PaymentState::Processing, now)
    }

    /// `PROCESSING -> SUCCESS`.
    pub fn succeed(&mut self, now: Timestamp) -> Result<(), Error> {
        self.transition(PaymentState::Success, now)
    }

    /// `PROCESSING -> FAILED`.
    pub fn fail(&mut self, reason: FailureReason, now: Timestamp) -> Result<(), Error> {
        self.transition(PaymentState::Failed(reason), now)
    }

    fn transition(&mut self, to: PaymentState, now: Timestamp) -> Result<(), Error> {
        let from = self.status();
        if !from.can_become(to.status()) {
            return Err(Error::IllegalTransition {
                from,
                to: to.status(),
            });
        }
        self.state = to;
        self.updated_at = now.max(self.updated_at);
        Ok(())
    }
}

/// Every field of a stored payment, for [`Payment::restore`].
#[derive(Clone, Debug)]
pub struct PaymentParts {
    /// See [`Payment::id`].
    pub id: PaymentId,
    /// See [`Payment::merchant_account`].
    pub merchant_account: AccountId,
    /// See [`Payment::funding_account`].
    pub funding_account: AccountId,
    /// See [`Payment::owner`].
    pub owner: Owner,
    /// See [`Payment::amount`].
    pub amount: Amount,
    /// See [`Payment::currency`].
    pub currency: Currency,
    /// See [`Payment::source`].
    pub source: CardSource,
    /// See [`Payment::description`].
    pub description: Description,
    /// See [`Payment::idempotency_key`].
    pub idempotency_key: Option<IdempotencyKey>,
    /// See [`Payment::created_by`].
    pub created_by: Principal,
    /// See [`Payment::created_at`].
    pub created_at: Timestamp,
    /// The state.
    pub state: PaymentState,
    /// When the state last changed.
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Payment {
        Payment::new(
            NewPayment {
                merchant_account: AccountId::generate(),
                funding_account: AccountId::generate(),
                owner: Owner::Platform,
                amount: Amount::new(100).unwrap(),
                currency: Currency::USD,
                source: CardSource::parse("tok_visa").unwrap(),
                description: Description::default(),
                idempotency_key: None,
                created_by: Principal::Platform,
            },
            Timestamp::now(),
        )
    }

    #[test]
    fn only_the_documented_transitions_exist() {
        use PaymentStatus::*;
        let legal = [
            (Pending, Processing),
            (Processing, Success),
            (Processing, Failed),
        ];
        for from in PaymentStatus::ALL {
            for to in PaymentStatus::ALL {
                assert_eq!(
                    from.can_become(to),
                    legal.contains(&(from, to)),
                    "{from}->{to}"
                );
            }
        }
    }

    #[test]
    fn terminal_payments_never_change() {
        let now = Timestamp::now();
        let mut p = pending();
        assert!(
            p.succeed(now).is_err(),
            "PENDING -> SUCCESS must be refused"
        );
        p.start_processing(now).unwrap();
        assert!(p.start_processing(now).is_err());
        p.fail(FailureReason::CardDeclined, now).unwrap();
        assert_eq!(p.failure_reason(), Some(FailureReason::CardDeclined));
        assert!(p.succeed(now).is_err());
        assert!(p.fail(FailureReason::ProcessingError, now).is_err());
        assert_eq!(p.status(), PaymentStatus::Failed);
        assert_eq!(p.failure_reason(), Some(FailureReason::CardDeclined));
    }

    #[test]
    fn card_sources_are_validated_and_masked() {
        assert!(CardSource::parse("tok_visa").is_ok());
        for bad in ["visa", "tok_", "tok_a b", "tok_é", "tok_a-b", ""] {
            assert!(CardSource::parse(bad).is_err(), "{bad:?}");
        }
        let token = CardSource::parse("tok_chargeDeclined").unwrap();
        assert_eq!(token.masked(), "tok_…ined");
        assert!(!format!("{token:?}").contains("chargeDeclined"));
    }

    #[test]
    fn stored_state_must_be_consistent() {
        assert!(PaymentState::from_parts(PaymentStatus::Failed, None).is_err());
        assert!(
            PaymentState::from_parts(PaymentStatus::Success, Some(FailureReason::CardDeclined))
                .is_err()
        );
    }
}
