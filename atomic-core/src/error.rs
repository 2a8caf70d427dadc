//! The one error type of the core. Ports and services return it; adapters convert
//! their driver errors into it (never exposing sqlx or redis types), and the HTTP crate
//! alone decides which status code each variant becomes.

use std::borrow::Cow;
use std::fmt;

use crate::payment::PaymentStatus;

/// A boxed error from a backend, kept as the source of [`Error::Unavailable`] and [`Error::Backend`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with the core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a value was refused: a human message, safe to show to the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid(Cow<'static, str>);

impl Invalid {
    /// A refusal with a fixed message.
    pub const fn new(message: &'static str) -> Self {
        Self(Cow::Borrowed(message))
    }

    /// A refusal with a message built at run time.
    pub fn owned(message: String) -> Self {
        Self(Cow::Owned(message))
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// One refused field of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as the caller named it (`amount`, `merchantId`).
    pub field: Cow<'static, str>,
    /// What is wrong with it.
    pub message: Cow<'static, str>,
}

impl FieldError {
    /// A field error from a field name and a refusal.
    pub fn new(field: impl Into<Cow<'static, str>>, invalid: Invalid) -> Self {
        Self {
            field: field.into(),
            message: invalid.0,
        }
    }
}

/// A money-path invariant that a store refused to break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invariant {
    /// A balance computation would overflow `i64`.
    BalanceOverflow,
    /// A debit would take an account that may not go negative below zero.
    InsufficientFunds,
    /// A posting does not match the payment it settles (accounts, amount or currency).
    PostingMismatch,
    /// An id that must be unique already exists.
    DuplicateId,
    /// The payment already has a ledger transaction.
    AlreadyPosted,
    /// A record referenced by a write (account, merchant) does not exist.
    MissingReference,
    /// The payment's charge was voided: it can only fail now.
    Voided,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BalanceOverflow => "balance would overflow",
            Self::InsufficientFunds => "account may not go below zero",
            Self::PostingMismatch => "posting does not match its payment",
            Self::DuplicateId => "id already exists",
            Self::AlreadyPosted => "payment already has a ledger transaction",
            Self::MissingReference => "referenced record does not exist",
            Self::Voided => "payment's charge was voided",
        })
    }
}

/// Everything that can go wrong in the core, its ports and its services.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed; each field says why.
    #[error("validation failed ({} field(s))", .0.len())]
    Validation(Vec<FieldError>),
    /// The object does not exist, or the caller may not see it (the two are never told apart).
    #[error("not found")]
    NotFound,
    /// The account a payment would credit does not exist or is a system account.
    #[error("merchant account not found")]
    MerchantNotFound,
    /// The caller may not do this.
    #[error("forbidden")]
    Forbidden,
    /// The payment currency differs from the credited account's.
    #[error("payment currency {payment} differs from account currency {account}")]
    CurrencyMismatch {
        /// The account's currency.
        account: crate::money::Currency,
        /// The payment's currency.
        payment: crate::money::Currency,
    },
    /// A pagination cursor names nothing the caller can see.
    #[error("unknown cursor")]
    UnknownCursor,
    /// The idempotency key was first used with a different request.
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    /// The first request under this idempotency key is still running.
    #[error("a request with this idempotency key is still running")]
    IdempotencyConflict,
    /// The idempotency claim this write completes is no longer held (expired and taken over).
    #[error("idempotency claim no longer held")]
    IdempotencyClaimLost,
    /// A state-machine transition that does not exist was attempted.
    #[error("illegal payment transition {from} -> {to}")]
    IllegalTransition {
        /// Current status.
        from: PaymentStatus,
        /// Requested status.
        to: PaymentStatus,
    },
    /// A state-machine transition of a refund that does not exist was attempted.
    #[error("illegal refund transition {from} -> {to}")]
    IllegalRefundTransition {
        /// Current status.
        from: crate::refund::RefundStatus,
        /// Requested status.
        to: crate::refund::RefundStatus,
    },
    /// The payment is not in a state that allows this operation (capture and cancel need
    /// `AUTHORIZED`, a refund needs `SUCCESS`).
    #[error("payment is {status}")]
    InvalidState {
        /// The payment's status.
        status: PaymentStatus,
    },
    /// A capture of more than was authorized.
    #[error("amount exceeds what is capturable")]
    AmountExceedsCapturable,
    /// A refund of more than is still refundable.
    #[error("amount exceeds what is refundable")]
    AmountExceedsRefundable,
    /// The owner already has as many as it may (webhook endpoints: 16).
    #[error("limit reached")]
    LimitReached,
    /// A store refused a write that would break an invariant of the books.
    #[error("invariant refused: {0}")]
    Invariant(Invariant),
    /// A backend cannot be reached or timed out; retrying later may succeed.
    #[error("backend unavailable")]
    Unavailable(#[source] BoxError),
    /// A backend failed in a way retrying will not fix.
    #[error("backend error")]
    Backend(#[source] BoxError),
}

impl Error {
    /// A validation error for one field.
    pub fn invalid_field(field: impl Into<Cow<'static, str>>, invalid: Invalid) -> Self {
        Self::Validation(vec![FieldError::new(field, invalid)])
    }

    /// An unavailable-backend error from any error value.
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        Self::Unavailable(source.into())
    }

    /// A backend error from any error value.
    pub fn backend(source: impl Into<BoxError>) -> Self {
        Self::Backend(source.into())
    }
}

impl From<Invariant> for Error {
    fn from(value: Invariant) -> Self {
        Self::Invariant(value)
    }
}

/// Debug walks the source chain, so a logged error says why, not only what.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")?;
        if let Self::Validation(fields) = self {
            for field in fields {
                write!(f, "\n  {}: {}", field.field, field.message)?;
            }
        }
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            write!(f, "\nCaused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
