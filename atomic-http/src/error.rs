//! [`ApiError`]: the one error type of the HTTP layer, and the only place where a core error
//! becomes a status code and an error code. Its response carries the error's parts in an
//! extension; the envelope middleware renders them with the request's id, so every error body
//! has the same shape. Internal errors are logged here and shown only as a generic message.

use std::borrow::Cow;

use atomic_core::error::{FieldError, Invalid};
use atomic_core::webhook::MAX_ENDPOINTS_PER_OWNER;
use atomic_core::{Error, PaymentStatus};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answer of the API.
#[derive(Debug)]
pub enum ApiError {
    /// 400 `invalid_json`: the body is not valid JSON.
    InvalidJson(String),
    /// 400 `validation_error`, with one item per refused field.
    Validation(Vec<FieldError>),
    /// 401 `unauthorized`: missing, malformed, unknown or revoked key (one answer for all).
    Unauthorized,
    /// 403 `forbidden`.
    Forbidden,
    /// 404 `not_found`: no such route, or nothing the caller may see.
    NotFound,
    /// 404 `merchant_not_found`.
    MerchantNotFound,
    /// 405 `method_not_allowed`.
    MethodNotAllowed,
    /// 409 `idempotency_conflict`.
    IdempotencyConflict,
    /// 409 `invalid_state`: the payment's status does not allow the operation.
    InvalidState(PaymentStatus),
    /// 413 `payload_too_large`.
    PayloadTooLarge,
    /// 415 `unsupported_media_type`.
    UnsupportedMediaType,
    /// 422 `currency_mismatch`.
    CurrencyMismatch(String),
    /// 422 `idempotency_key_reused`.
    IdempotencyKeyReused,
    /// 422 `amount_exceeds_capturable`: a capture of more than was authorized.
    AmountExceedsCapturable,
    /// 422 `amount_exceeds_refundable`: a refund of more than is still refundable.
    AmountExceedsRefundable,
    /// 422 `limit_reached`: the owner already has as many as it may (webhook endpoints: 16).
    LimitReached,
    /// 429 `rate_limited`, retry after this many seconds.
    RateLimited(u64),
    /// 503 `unavailable`: a dependency cannot be reached; retry later.
    Unavailable,
    /// 500 `internal_error`; the cause is logged, never shown.
    Internal(Error),
}

/// What the envelope middleware needs to render an error: kept in the response extensions.
#[derive(Clone, Debug)]
pub(crate) struct ErrorParts {
    pub(crate) code: &'static str,
    pub(crate) message: Cow<'static, str>,
    pub(crate) details: Vec<FieldError>,
}

impl ApiError {
    /// A validation error for one field.
    pub fn field(field: impl Into<Cow<'static, str>>, invalid: Invalid) -> Self {
        Self::Validation(vec![FieldError::new(field, invalid)])
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_) | Self::Validation(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound | Self::MerchantNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::IdempotencyConflict | Self::InvalidState(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::CurrencyMismatch(_)
            | Self::IdempotencyKeyReused
            | Self::AmountExceedsCapturable
            | Self::AmountExceedsRefundable
            | Self::LimitReached => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error code in the body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::Validation(_) => "validation_error",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MerchantNotFound => "merchant_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::IdempotencyConflict => "idempotency_conflict",
            Self::InvalidState(_) => "invalid_state",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::CurrencyMismatch(_) => "currency_mismatch",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::AmountExceedsCapturable => "amount_exceeds_capturable",
            Self::AmountExceedsRefundable => "amount_exceeds_refundable",
            Self::LimitReached => "limit_reached",
            Self::RateLimited(_) => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    fn message(&self) -> Cow<'static, str> {
        match self {
            Self::InvalidJson(why) => format!("Request body is not valid JSON: {why}").into(),
            Self::Validation(_) => "Request validation failed".into(),
            Self::Unauthorized => "Missing or invalid API key".into(),
            Self::Forbidden => "This key may not do that".into(),
            Self::NotFound => "Not found".into(),
            Self::MerchantNotFound => "Merchant account not found".into(),
            Self::MethodNotAllowed => "Method not allowed on this route".into(),
            Self::IdempotencyConflict => {
                "A request with this Idempotency-Key is still being processed; retry later".into()
            }
            Self::InvalidState(status) => format!(
                "The payment is {status}: capture and cancel need AUTHORIZED, a refund needs SUCCESS"
            )
            .into(),
            Self::PayloadTooLarge => "Request body is larger than 65536 bytes".into(),
            Self::UnsupportedMediaType => "Content-Type must be application/json".into(),
            Self::CurrencyMismatch(why) => why.clone().into(),
            Self::IdempotencyKeyReused => {
                "This Idempotency-Key was already used with a different request".into()
            }
            Self::AmountExceedsCapturable => {
                "The amount is more than the payment's authorized amount".into()
            }
            Self::AmountExceedsRefundable => {
                "The amount is more than is still refundable on this payment".into()
            }
            Self::LimitReached => format!(
                "At most {MAX_ENDPOINTS_PER_OWNER} webhook endpoints per owner; delete one first"
            )
            .into(),
            Self::RateLimited(_) => "Too many requests".into(),
            Self::Unavailable => "Service temporarily unavailable; retry later".into(),
            Self::Internal(_) => "Internal server error".into(),
        }
    }

    /// Seconds a client should wait, for the `Retry-After` header.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited(secs) => Some(*secs),
            Self::Unavailable => Some(RETRY_AFTER_UNAVAILABLE),
            _ => None,
        }
    }
}

/// `Retry-After` of a 503.
pub(crate) const RETRY_AFTER_UNAVAILABLE: u64 = 2;

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::Validation(fields) => Self::Validation(fields),
            Error::NotFound => Self::NotFound,
            Error::MerchantNotFound => Self::MerchantNotFound,
            Error::Forbidden => Self::Forbidden,
            Error::CurrencyMismatch { account, payment } => Self::CurrencyMismatch(format!(
                "Payment currency {payment} does not match the account currency {account}"
            )),
            Error::UnknownCursor => Self::field(
                "startingAfter",
                Invalid::new("must be the id of an item you can see"),
            ),
            Error::IdempotencyClaimLost | Error::IdempotencyConflict => Self::IdempotencyConflict,
            Error::IdempotencyKeyReused => Self::IdempotencyKeyReused,
            Error::InvalidState { status } => Self::InvalidState(status),
            Error::AmountExceedsCapturable => Self::AmountExceedsCapturable,
            Error::AmountExceedsRefundable => Self::AmountExceedsRefundable,
            Error::LimitReached => Self::LimitReached,
            Error::Unavailable(source) => {
                tracing::warn!(error = ?Error::Unavailable(source), "dependency unavailable");
                Self::Unavailable
            }
            other => Self::Internal(other),
        }
    }
}

impl ApiError {
    /// What the envelope shows of this error.
    pub(crate) fn into_parts(self) -> ErrorParts {
        ErrorParts {
            code: self.code(),
            message: self.message(),
            details: match self {
                Self::Validation(fields) => fields,
                _ => Vec::new(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(error) = &self {
            tracing::error!(?error, "internal error");
        }
        let status = self.status();
        let retry_after = self.retry_after();
        let parts = self.into_parts();
        let mut response = status.into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response.extensions_mut().insert(parts);
        response
    }
}
