//! [`CardProcessor`]: asks the card network whether money may move.

use async_trait::async_trait;

use crate::card::{CardOutcome, Charge};
use crate::error::Result;

/// The card processor. Must be idempotent per payment id: charging the same payment twice
/// takes the money once and answers the same.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait CardProcessor: Send + Sync + 'static {
    /// Charges the card; a transient failure is [`crate::Error::Unavailable`].
    async fn charge(&self, charge: &Charge) -> Result<CardOutcome>;

    /// Cancels a charge that will not be posted (its answer was lost, or the books refused
    /// it), so no customer pays for a payment that failed. Idempotent per payment id; voiding a
    /// charge that was never approved is a no-op.
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
