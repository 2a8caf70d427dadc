//! The types of event a state change writes (API.md *Events*), as endpoints subscribe to them.

use crate::error::Invalid;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventType {
    /// A manual-capture payment's card was authorized.
    #[cfg_attr(feature = "openapi", schema(rename = "payment.authorized"))]
    PaymentAuthorized,
    /// A payment was charged or captured and posted.
    #[cfg_attr(feature = "openapi", schema(rename = "payment.succeeded"))]
    PaymentSucceeded,
    /// A payment failed.
    #[cfg_attr(feature = "openapi", schema(rename = "payment.failed"))]
    PaymentFailed,
    /// An authorization was canceled, on request or expired.
    #[cfg_attr(feature = "openapi", schema(rename = "payment.canceled"))]
    PaymentCanceled,
    /// A refund was posted.
    #[cfg_attr(feature = "openapi", schema(rename = "refund.succeeded"))]
    RefundSucceeded,
    /// A refund failed.
    #[cfg_attr(feature = "openapi", schema(rename = "refund.failed"))]
    RefundFailed,
}

impl EventType {
    /// Every type, in the contract's order.
    pub const ALL: [Self; 6] = [
        Self::PaymentAuthorized,
        Self::PaymentSucceeded,
        Self::PaymentFailed,
        Self::PaymentCanceled,
        Self::RefundSucceeded,
        Self::RefundFailed,
    ];

    /// The type as the API writes it (`payment.succeeded`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PaymentAuthorized => "payment.authorized",
            Self::PaymentSucceeded => "payment.succeeded",
            Self::PaymentFailed => "payment.failed",
            Self::PaymentCanceled => "payment.canceled",
            Self::RefundSucceeded => "refund.succeeded",
            Self::RefundFailed => "refund.failed",
        }
    }

    /// The type written `text`.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == text)
            .ok_or_else(|| Invalid::owned(format!("unknown event type {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_reads_back_from_its_name_and_nothing_else_does() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Ok(t));
        }
        for bad in [
            "",
            "*",
            "payment",
            "payment.Succeeded",
            "payment.succeeded ",
            "refund.pending",
        ] {
            assert!(EventType::parse(bad).is_err(), "{bad:?}");
        }
    }
}
