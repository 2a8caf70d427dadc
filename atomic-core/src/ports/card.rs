//! [`CardProcessor`]: asks the card network whether money may move.

use async_trait::async_trait;

use crate::card::{CardOutcome, CardRefund, Charge};
use crate::error::Result;

/// The card processor. A charge is named by its payment and attempt ([`Charge::attempt`]); the
/// engine never relies on the processor merging two attempts at one payment: it charges once
/// per claim, never charges a payment whose void has begun, and voids every approved attempt
/// it does not post.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait CardProcessor: Send + Sync + 'static {
    /// Charges the card (authorizes and captures at once); a transient failure is
    /// [`crate::Error::Unavailable`].
    async fn charge(&self, charge: &Charge) -> Result<CardOutcome>;

    /// Authorizes the card for `charge.amount` without taking the money (manual capture).
    async fn authorize(&self, charge: &Charge) -> Result<CardOutcome>;

    /// Takes `charge.amount` (at most what was authorized) of the payment's authorization;
    /// the rest of the authorization is released. Idempotent per attempt.
    async fn capture(&self, charge: &Charge) -> Result<CardOutcome>;

    /// Gives `refund.amount` back to the card. Idempotent per refund.
    async fn refund(&self, refund: &CardRefund) -> Result<CardOutcome>;

    /// Cancels the authorization of this attempt (and only this one) because it will not be
    /// posted: its answer was lost, the books refused it, or another attempt holds the payment.
    /// Idempotent per attempt; voiding an attempt that was never approved is a no-op.
    async fn void(&self, charge: &Charge) -> Result<()>;
}

/// The test-mode processor: the token decides (see [`crate::card::test_mode_outcome`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct TestModeCards;

#[async_trait]
impl CardProcessor for TestModeCards {
    async fn charge(&self, charge: &Charge) -> Result<CardOutcome> {
        Ok(crate::card::test_mode_outcome(&charge.source))
    }

    async fn authorize(&self, charge: &Charge) -> Result<CardOutcome> {
        Ok(crate::card::test_mode_outcome(&charge.source))
    }

    async fn capture(&self, _charge: &Charge) -> Result<CardOutcome> {
        // The token decided at authorization; a test-mode authorization always captures.
        Ok(CardOutcome::Approved)
    }

    async fn refund(&self, _refund: &CardRefund) -> Result<CardOutcome> {
        Ok(CardOutcome::Approved)
    }

    async fn void(&self, _charge: &Charge) -> Result<()> {
        // Test mode moves no real money: nothing to cancel.
        Ok(())
    }
}
