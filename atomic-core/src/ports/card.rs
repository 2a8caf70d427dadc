//! [`CardProcessor`]: asks the card network whether money may move.

use async_trait::async_trait;

use crate::card::{CardOutcome, Charge};
use crate::error::Result;

/// The card processor. A charge is named by its payment and attempt ([`Charge::attempt`]); the
/// engine never relies on the processor merging two attempts at one payment: it charges once
/// per claim, never charges a payment whose void has begun, and voids every approved attempt
/// it does not post.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait CardProcessor: Send + Sync + 'static {
    /// Charges the card; a transient failure is [`crate::Error::Unavailable`].
    async fn charge(&self, charge: &Charge) -> Result<CardOutcome>;

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

    async fn void(&self, _charge: &Charge) -> Result<()> {
        // Test mode moves no real money: nothing to cancel.
        Ok(())
    }
}
