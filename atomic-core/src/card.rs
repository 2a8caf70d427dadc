//! Card outcomes. A charge asks the card processor to take the money; in test mode the token
//! decides the outcome, like Stripe's test cards (API.md lists the table).

use crate::id::PaymentId;
use crate::money::{Amount, Currency};
use crate::payment::{CardSource, FailureReason};
use crate::ports::LeaseId;

/// What is charged. One charge is one attempt at a payment: `(payment_id, attempt)` names it
/// at the processor, so a void cancels that attempt's authorization and no other.
#[derive(Clone, Debug)]
pub struct Charge {
    /// The payment.
    pub payment_id: PaymentId,
    /// The claim (its lease) that made this charge; the worker charges once per claim.
    pub attempt: LeaseId,
    /// Amount.
    pub amount: Amount,
    /// Currency.
    pub currency: Currency,
    /// Card token.
    pub source: CardSource,
}

/// A refund at the processor: named by the refund, so asking twice refunds once.
#[derive(Clone, Debug)]
pub struct CardRefund {
    /// The refund.
    pub refund_id: crate::id::RefundId,
    /// The payment refunded.
    pub payment_id: PaymentId,
    /// Amount.
    pub amount: Amount,
    /// Currency.
    pub currency: Currency,
}

/// The processor's final answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CardOutcome {
    /// Money may move.
    Approved,
    /// The charge was refused for good.
    Declined(FailureReason),
}

/// The test-mode table: `tok_chargeDeclined*` tokens fail with their reason, every other
/// `tok_*` token succeeds.
pub fn test_mode_outcome(source: &CardSource) -> CardOutcome {
    match source.expose() {
        "tok_chargeDeclined" => CardOutcome::Declined(FailureReason::CardDeclined),
        "tok_chargeDeclinedInsufficientFunds" => {
            CardOutcome::Declined(FailureReason::InsufficientFunds)
        }
        "tok_chargeDeclinedProcessingError" => {
            CardOutcome::Declined(FailureReason::ProcessingError)
        }
        _ => CardOutcome::Approved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_mode_table() {
        let outcome = |t: &str| test_mode_outcome(&CardSource::parse(t).unwrap());
        assert_eq!(outcome("tok_visa"), CardOutcome::Approved);
        assert_eq!(outcome("tok_mastercard"), CardOutcome::Approved);
        assert_eq!(outcome("tok_amex"), CardOutcome::Approved);
        assert_eq!(outcome("tok_anything_else"), CardOutcome::Approved);
        assert_eq!(
            outcome("tok_chargeDeclined"),
            CardOutcome::Declined(FailureReason::CardDeclined)
        );
        assert_eq!(
            outcome("tok_chargeDeclinedInsufficientFunds"),
            CardOutcome::Declined(FailureReason::InsufficientFunds)
        );
        assert_eq!(
            outcome("tok_chargeDeclinedProcessingError"),
            CardOutcome::Declined(FailureReason::ProcessingError)
        );
    }
}
