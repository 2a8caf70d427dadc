//! Payments and their state machine (API.md v1.1): `PENDING -> PROCESSING -> SUCCESS | FAILED`
//! for automatic capture; `PROCESSING -> AUTHORIZED -> PROCESSING -> SUCCESS | FAILED` or
//! `AUTHORIZED -> CANCELED` for manual capture. The state is private and changes only through
//! the methods of [`Payment`], which refuse every other transition in one place
//! ([`PaymentStatus::can_become`]); `SUCCESS`, `FAILED` and `CANCELED` never change status.

use std::fmt;

use crate::error::{Error, Invalid, Invariant};
use crate::fresh::Fresh;
use crate::id::{AccountId, PaymentId};
use crate::idempotency::IdempotencyKey;
use crate::metadata::Metadata;
use crate::money::{Amount, Currency};
use crate::principal::{Owner, Principal};
use crate::text;
use crate::time::Timestamp;

/// The description a payment gets when the request names none.
pub const DEFAULT_DESCRIPTION: &str = "API Payment";

/// A payment's status as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(rename_all = "UPPERCASE"))]
pub enum PaymentStatus {
    /// Stored, not yet picked up by a worker.
    Pending,
    /// A worker holds it: charging, authorizing, or capturing what was authorized.
    Processing,
    /// Manual capture: the card is authorized, nothing is posted; waits for capture or cancel.
    Authorized,
    /// Settled: exactly one charge transaction of `amountCaptured` exists for it.
    Success,
    /// Declined or errored: no ledger transaction exists for it.
    Failed,
    /// An authorization canceled (on request or expired): nothing was ever posted.
    Canceled,
}

impl PaymentStatus {
    /// Every status.
    pub const ALL: [PaymentStatus; 6] = [
        PaymentStatus::Pending,
        PaymentStatus::Processing,
        PaymentStatus::Authorized,
        PaymentStatus::Success,
        PaymentStatus::Failed,
        PaymentStatus::Canceled,
    ];

    /// The wire and storage name (`PENDING` …).
    pub fn as_str(&self) -> &'static str {
        match self {
            PaymentStatus::Pending => "PENDING",
            PaymentStatus::Processing => "PROCESSING",
            PaymentStatus::Authorized => "AUTHORIZED",
            PaymentStatus::Success => "SUCCESS",
            PaymentStatus::Failed => "FAILED",
            PaymentStatus::Canceled => "CANCELED",
        }
    }

    /// Parses a wire name (exact, upper-case).
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or(Invalid::new(
                "must be one of PENDING, PROCESSING, AUTHORIZED, SUCCESS, FAILED, CANCELED",
            ))
    }

    /// Whether the status can never change again (refunds change a `SUCCESS` payment's
    /// `amountRefunded`, never its status).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            PaymentStatus::Success | PaymentStatus::Failed | PaymentStatus::Canceled
        )
    }

    /// Whether `self -> to` is a transition of the state machine (API.md v1.1).
    pub fn can_become(&self, to: PaymentStatus) -> bool {
        use PaymentStatus::*;
        matches!(
            (self, to),
            (Pending, Processing)
                | (Processing, Success | Failed | Authorized)
                | (Authorized, Processing | Canceled)
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(rename_all = "snake_case"))]
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

/// Why an authorization was canceled (`cancellationReason` on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(rename_all = "snake_case"))]
pub enum CancellationReason {
    /// `POST /payments/:id/cancel`.
    Requested,
    /// Not captured within `AUTHORIZATION_TTL`; canceled by the sweep.
    Expired,
}

impl CancellationReason {
    /// The wire and storage code.
    pub fn as_str(&self) -> &'static str {
        match self {
            CancellationReason::Requested => "requested",
            CancellationReason::Expired => "expired",
        }
    }

    /// Parses a stored code.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "requested" => Some(CancellationReason::Requested),
            "expired" => Some(CancellationReason::Expired),
            _ => None,
        }
    }
}

/// When the money of a payment is taken: at once, or on a later capture of an authorization.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(rename_all = "snake_case"))]
pub enum CaptureMethod {
    /// The worker charges the card and posts the whole amount.
    #[default]
    Automatic,
    /// The worker only authorizes; `POST /payments/:id/capture` posts some or all of it.
    Manual,
}

impl CaptureMethod {
    /// The wire and storage name.
    pub fn as_str(&self) -> &'static str {
        match self {
            CaptureMethod::Automatic => "automatic",
            CaptureMethod::Manual => "manual",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match s {
            "automatic" => Ok(CaptureMethod::Automatic),
            "manual" => Ok(CaptureMethod::Manual),
            _ => Err(Invalid::new("must be one of automatic, manual")),
        }
    }
}

/// The state of a payment. Every status-specific fact lives in its variant, so a reason exists
/// exactly when failed or canceled, and a captured amount exactly when settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PaymentState {
    /// See [`PaymentStatus::Pending`].
    Pending,
    /// `PROCESSING` on the first attempt: charging (automatic) or authorizing (manual).
    Processing,
    /// See [`PaymentStatus::Authorized`].
    Authorized,
    /// `PROCESSING` after a capture of this amount was accepted; a worker posts it.
    Capturing(Amount),
    /// `SUCCESS`, with the amount posted (`amountCaptured`).
    Success(Amount),
    /// See [`PaymentStatus::Failed`].
    Failed(FailureReason),
    /// See [`PaymentStatus::Canceled`].
    Canceled(CancellationReason),
}

impl PaymentState {
    /// The status as the API shows it.
    pub fn status(&self) -> PaymentStatus {
        match self {
            PaymentState::Pending => PaymentStatus::Pending,
            PaymentState::Processing | PaymentState::Capturing(_) => PaymentStatus::Processing,
            PaymentState::Authorized => PaymentStatus::Authorized,
            PaymentState::Success(_) => PaymentStatus::Success,
            PaymentState::Failed(_) => PaymentStatus::Failed,
            PaymentState::Canceled(_) => PaymentStatus::Canceled,
        }
    }

    /// The failure reason, when failed.
    pub fn failure_reason(&self) -> Option<FailureReason> {
        match self {
            PaymentState::Failed(reason) => Some(*reason),
            _ => None,
        }
    }

    /// The cancellation reason, when canceled.
    pub fn cancellation_reason(&self) -> Option<CancellationReason> {
        match self {
            PaymentState::Canceled(reason) => Some(*reason),
            _ => None,
        }
    }

    /// The capture a worker must post, while capturing.
    pub fn capture_requested(&self) -> Option<Amount> {
        match self {
            PaymentState::Capturing(amount) => Some(*amount),
            _ => None,
        }
    }

    /// The amount posted: zero until the payment succeeded.
    pub fn amount_captured(&self) -> i64 {
        match self {
            PaymentState::Success(amount) => amount.minor_units(),
            _ => 0,
        }
    }

    /// Rebuilds a state from its stored columns; refuses inconsistent combinations.
    pub fn from_parts(parts: StateParts) -> Result<Self, Invalid> {
        let StateParts {
            status,
            failure_reason,
            cancellation_reason,
            capture_requested,
            amount_captured,
        } = parts;
        let captured = match amount_captured {
            0 => None,
            n => Some(Amount::new(n)?),
        };
        let state = match (status, failure_reason, cancellation_reason, captured) {
            (PaymentStatus::Pending, None, None, None) => PaymentState::Pending,
            (PaymentStatus::Processing, None, None, None) => match capture_requested {
                Some(amount) => PaymentState::Capturing(amount),
                None => PaymentState::Processing,
            },
            (PaymentStatus::Authorized, None, None, None) => PaymentState::Authorized,
            (PaymentStatus::Success, None, None, Some(amount)) => PaymentState::Success(amount),
            (PaymentStatus::Failed, Some(reason), None, None) => PaymentState::Failed(reason),
            (PaymentStatus::Canceled, None, Some(reason), None) => PaymentState::Canceled(reason),
            _ => return Err(Invalid::new("stored payment state is inconsistent")),
        };
        if capture_requested.is_some() && !matches!(state, PaymentState::Capturing(_)) {
            return Err(Invalid::new("a requested capture outside PROCESSING"));
        }
        Ok(state)
    }

    /// The stored columns of this state (the inverse of [`Self::from_parts`]).
    pub fn parts(&self) -> StateParts {
        StateParts {
            status: self.status(),
            failure_reason: self.failure_reason(),
            cancellation_reason: self.cancellation_reason(),
            capture_requested: self.capture_requested(),
            amount_captured: self.amount_captured(),
        }
    }
}

/// A payment state as stored: one column each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateParts {
    /// `status`.
    pub status: PaymentStatus,
    /// `failure_reason`, when FAILED.
    pub failure_reason: Option<FailureReason>,
    /// `cancellation_reason`, when CANCELED.
    pub cancellation_reason: Option<CancellationReason>,
    /// The capture accepted and not yet posted (PROCESSING after AUTHORIZED).
    pub capture_requested: Option<Amount>,
    /// `amount_captured`: 0 until SUCCESS.
    pub amount_captured: i64,
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
    /// Automatic or manual capture.
    pub capture_method: CaptureMethod,
    /// The merchant's own key-value pairs.
    pub metadata: Metadata,
    /// The idempotency key the request carried, if any.
    pub idempotency_key: Option<IdempotencyKey>,
    /// Who created it (the scope of its idempotency key).
    pub created_by: Principal,
}

/// A payment. Fields other than the state and the refund counters are fixed at creation.
///
/// Refund counters hold `0 <= amount_refunded <= amount_reserved <= amount_captured <= amount`:
/// `amount_reserved` is the sum of the payment's refunds that are not `FAILED` (reserved when a
/// refund is created, released when one fails), `amount_refunded` of those that succeeded.
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
    /// Amount in minor units (authorized, for manual capture).
    pub amount: Amount,
    /// Currency.
    pub currency: Currency,
    /// Card token.
    pub source: CardSource,
    /// Description.
    pub description: Description,
    /// Automatic or manual capture.
    pub capture_method: CaptureMethod,
    /// The merchant's own key-value pairs.
    pub metadata: Metadata,
    /// The idempotency key it was created with, if any.
    pub idempotency_key: Option<IdempotencyKey>,
    /// Who created it (the scope of its idempotency key).
    pub created_by: Principal,
    /// When it was accepted.
    pub created_at: Timestamp,
    state: PaymentState,
    amount_refunded: i64,
    amount_reserved: i64,
    updated_at: Timestamp,
}

impl Payment {
    /// A new `PENDING` payment, nothing captured or refunded.
    pub fn new(new: NewPayment, now: Timestamp) -> Fresh<Self> {
        Fresh::new(Self {
            id: PaymentId::generate(),
            merchant_account: new.merchant_account,
            funding_account: new.funding_account,
            owner: new.owner,
            amount: new.amount,
            currency: new.currency,
            source: new.source,
            description: new.description,
            capture_method: new.capture_method,
            metadata: new.metadata,
            idempotency_key: new.idempotency_key,
            created_by: new.created_by,
            created_at: now,
            state: PaymentState::Pending,
            amount_refunded: 0,
            amount_reserved: 0,
            updated_at: now,
        })
    }

    /// Rebuilds a stored payment (for adapters); refuses counters out of their order.
    pub fn restore(parts: PaymentParts) -> Result<Self, Invalid> {
        let payment = Self {
            id: parts.id,
            merchant_account: parts.merchant_account,
            funding_account: parts.funding_account,
            owner: parts.owner,
            amount: parts.amount,
            currency: parts.currency,
            source: parts.source,
            description: parts.description,
            capture_method: parts.capture_method,
            metadata: parts.metadata,
            idempotency_key: parts.idempotency_key,
            created_by: parts.created_by,
            created_at: parts.created_at,
            state: parts.state,
            amount_refunded: parts.amount_refunded,
            amount_reserved: parts.amount_reserved,
            updated_at: parts.updated_at,
        };
        payment.check_counters()?;
        Ok(payment)
    }

    fn check_counters(&self) -> Result<(), Invalid> {
        let captured = self.state.amount_captured();
        let ordered = 0 <= self.amount_refunded
            && self.amount_refunded <= self.amount_reserved
            && self.amount_reserved <= captured
            && captured <= self.amount.minor_units();
        if !ordered {
            return Err(Invalid::new(
                "refunded <= reserved <= captured <= amount must hold",
            ));
        }
        Ok(())
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

    /// Why it was canceled, when it was.
    pub fn cancellation_reason(&self) -> Option<CancellationReason> {
        self.state.cancellation_reason()
    }

    /// The amount posted (0 until `SUCCESS`).
    pub fn amount_captured(&self) -> i64 {
        self.state.amount_captured()
    }

    /// The sum of its `SUCCESS` refunds.
    pub fn amount_refunded(&self) -> i64 {
        self.amount_refunded
    }

    /// The sum of its refunds that are not `FAILED`.
    pub fn amount_reserved(&self) -> i64 {
        self.amount_reserved
    }

    /// What a new refund may still take: captured minus reserved.
    pub fn refundable(&self) -> i64 {
        self.amount_captured() - self.amount_reserved
    }

    /// When the state last changed.
    pub fn updated_at(&self) -> Timestamp {
        self.updated_at
    }

    /// The amount a worker posts when it settles this payment now: the whole amount of an
    /// automatic charge, or the requested capture. `None` when nothing is to be posted.
    pub fn amount_to_post(&self) -> Option<Amount> {
        match (self.state, self.capture_method) {
            (PaymentState::Processing, CaptureMethod::Automatic) => Some(self.amount),
            (PaymentState::Capturing(amount), _) => Some(amount),
            _ => None,
        }
    }

    /// `PENDING -> PROCESSING`.
    pub fn start_processing(&mut self, now: Timestamp) -> Result<(), Error> {
        self.transition(PaymentState::Processing, now)
    }

    /// `PROCESSING -> AUTHORIZED`, for a manual capture whose card was authorized.
    pub fn authorize(&mut self, now: Timestamp) -> Result<(), Error> {
        if self.capture_method != CaptureMethod::Manual || self.state != PaymentState::Processing {
            return Err(self.illegal(PaymentStatus::Authorized));
        }
        self.transition(PaymentState::Authorized, now)
    }

    /// `AUTHORIZED -> PROCESSING` to capture `amount` (1..=the authorized amount).
    pub fn request_capture(&mut self, amount: Amount, now: Timestamp) -> Result<(), Error> {
        if self.state != PaymentState::Authorized {
            return Err(self.illegal(PaymentStatus::Processing));
        }
        if amount > self.amount {
            return Err(Error::AmountExceedsCapturable);
        }
        self.transition(PaymentState::Capturing(amount), now)
    }

    /// `PROCESSING -> SUCCESS`: posts [`Self::amount_to_post`].
    pub fn succeed(&mut self, now: Timestamp) -> Result<(), Error> {
        let amount = self
            .amount_to_post()
            .ok_or_else(|| self.illegal(PaymentStatus::Success))?;
        self.transition(PaymentState::Success(amount), now)
    }

    /// `PROCESSING -> FAILED`.
    pub fn fail(&mut self, reason: FailureReason, now: Timestamp) -> Result<(), Error> {
        self.transition(PaymentState::Failed(reason), now)
    }

    /// `AUTHORIZED -> CANCELED`.
    pub fn cancel(&mut self, reason: CancellationReason, now: Timestamp) -> Result<(), Error> {
        self.transition(PaymentState::Canceled(reason), now)
    }

    /// Reserves `amount` for a new refund: only a `SUCCESS` payment, only what is refundable.
    pub fn reserve_refund(&mut self, amount: Amount, now: Timestamp) -> Result<(), Error> {
        if self.status() != PaymentStatus::Success {
            return Err(Error::InvalidState {
                status: self.status(),
            });
        }
        if amount.minor_units() > self.refundable() {
            return Err(Error::AmountExceedsRefundable);
        }
        self.amount_reserved += amount.minor_units();
        self.updated_at = now.max(self.updated_at);
        Ok(())
    }

    /// A reserved refund failed: its amount is refundable again.
    pub fn release_refund(&mut self, amount: Amount, now: Timestamp) -> Result<(), Error> {
        let reserved = self.amount_reserved - amount.minor_units();
        if reserved < self.amount_refunded {
            return Err(Invariant::PostingMismatch.into());
        }
        self.amount_reserved = reserved;
        self.updated_at = now.max(self.updated_at);
        Ok(())
    }

    /// A reserved refund succeeded: it counts in `amountRefunded`.
    pub fn record_refund(&mut self, amount: Amount, now: Timestamp) -> Result<(), Error> {
        let refunded = self.amount_refunded + amount.minor_units();
        if refunded > self.amount_reserved {
            return Err(Invariant::PostingMismatch.into());
        }
        self.amount_refunded = refunded;
        self.updated_at = now.max(self.updated_at);
        Ok(())
    }

    fn illegal(&self, to: PaymentStatus) -> Error {
        Error::IllegalTransition {
            from: self.status(),
            to,
        }
    }

    fn transition(&mut self, to: PaymentState, now: Timestamp) -> Result<(), Error> {
        let from = self.status();
        if !from.can_become(to.status()) {
            return Err(self.illegal(to.status()));
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
    /// See [`Payment::capture_method`].
    pub capture_method: CaptureMethod,
    /// See [`Payment::metadata`].
    pub metadata: Metadata,
    /// See [`Payment::idempotency_key`].
    pub idempotency_key: Option<IdempotencyKey>,
    /// See [`Payment::created_by`].
    pub created_by: Principal,
    /// See [`Payment::created_at`].
    pub created_at: Timestamp,
    /// The state.
    pub state: PaymentState,
    /// See [`Payment::amount_refunded`].
    pub amount_refunded: i64,
    /// See [`Payment::amount_reserved`].
    pub amount_reserved: i64,
    /// When the state last changed.
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_at_most_1000_characters_and_may_span_lines() {
        assert!(Description::parse("orders\nservice").is_ok());
        assert!(Description::parse("é".repeat(1_000)).is_ok());
        assert!(Description::parse("é".repeat(1_001)).is_err());
        assert!(Description::parse("nul\0").is_err());
    }

    fn pending(capture_method: CaptureMethod) -> Payment {
        Payment::new(
            NewPayment {
                merchant_account: AccountId::generate(),
                funding_account: AccountId::generate(),
                owner: Owner::Platform,
                amount: Amount::new(100).unwrap(),
                currency: Currency::USD,
                source: CardSource::parse("tok_visa").unwrap(),
                description: Description::default(),
                capture_method,
                metadata: Metadata::default(),
                idempotency_key: None,
                created_by: Principal::Platform,
            },
            Timestamp::now(),
        )
        .into_inner()
    }

    #[test]
    fn only_the_documented_transitions_exist() {
        use PaymentStatus::*;
        let legal = [
            (Pending, Processing),
            (Processing, Success),
            (Processing, Failed),
            (Processing, Authorized),
            (Authorized, Processing),
            (Authorized, Canceled),
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
        let mut p = pending(CaptureMethod::Automatic);
        assert!(
            p.succeed(now).is_err(),
            "PENDING -> SUCCESS must be refused"
        );
        p.start_processing(now).unwrap();
        assert!(p.start_processing(now).is_err());
        assert!(
            p.authorize(now).is_err(),
            "automatic capture never authorizes"
        );
        p.fail(FailureReason::CardDeclined, now).unwrap();
        assert_eq!(p.failure_reason(), Some(FailureReason::CardDeclined));
        assert!(p.succeed(now).is_err());
        assert!(p.fail(FailureReason::ProcessingError, now).is_err());
        assert!(p.cancel(CancellationReason::Requested, now).is_err());
        assert_eq!(p.status(), PaymentStatus::Failed);
    }

    #[test]
    fn a_manual_payment_captures_part_and_refunds_within_it() {
        let now = Timestamp::now();
        let mut p = pending(CaptureMethod::Manual);
        p.start_processing(now).unwrap();
        assert_eq!(p.amount_to_post(), None, "an authorization posts nothing");
        p.authorize(now).unwrap();
        assert!(matches!(
            p.request_capture(Amount::new(101).unwrap(), now),
            Err(Error::AmountExceedsCapturable)
        ));
        p.request_capture(Amount::new(60).unwrap(), now).unwrap();
        assert_eq!(p.status(), PaymentStatus::Processing);
        assert_eq!(p.amount_captured(), 0);
        p.succeed(now).unwrap();
        assert_eq!(p.amount_captured(), 60);
        p.reserve_refund(Amount::new(50).unwrap(), now).unwrap();
        assert!(matches!(
            p.reserve_refund(Amount::new(11).unwrap(), now),
            Err(Error::AmountExceedsRefundable)
        ));
        p.release_refund(Amount::new(50).unwrap(), now).unwrap();
        p.reserve_refund(Amount::new(60).unwrap(), now).unwrap();
        p.record_refund(Amount::new(60).unwrap(), now).unwrap();
        assert_eq!((p.amount_refunded(), p.refundable()), (60, 0));
        assert_eq!(p.status(), PaymentStatus::Success);
    }

    #[test]
    fn only_an_authorization_is_canceled_or_captured() {
        let now = Timestamp::now();
        let mut p = pending(CaptureMethod::Manual);
        assert!(p.cancel(CancellationReason::Requested, now).is_err());
        assert!(p.request_capture(Amount::new(1).unwrap(), now).is_err());
        p.start_processing(now).unwrap();
        p.authorize(now).unwrap();
        assert!(matches!(
            p.reserve_refund(Amount::new(1).unwrap(), now),
            Err(Error::InvalidState { .. })
        ));
        p.cancel(CancellationReason::Expired, now).unwrap();
        assert_eq!(p.cancellation_reason(), Some(CancellationReason::Expired));
        assert!(p.request_capture(Amount::new(1).unwrap(), now).is_err());
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
        let parts = |status, failure_reason, amount_captured| StateParts {
            status,
            failure_reason,
            cancellation_reason: None,
            capture_requested: None,
            amount_captured,
        };
        assert!(PaymentState::from_parts(parts(PaymentStatus::Failed, None, 0)).is_err());
        assert!(
            PaymentState::from_parts(parts(
                PaymentStatus::Success,
                Some(FailureReason::CardDeclined),
                5
            ))
            .is_err()
        );
        assert!(PaymentState::from_parts(parts(PaymentStatus::Success, None, 0)).is_err());
        for state in [
            PaymentState::Capturing(Amount::new(3).unwrap()),
            PaymentState::Success(Amount::new(3).unwrap()),
            PaymentState::Canceled(CancellationReason::Requested),
        ] {
            assert_eq!(PaymentState::from_parts(state.parts()), Ok(state));
        }
    }
}
