//! The double-entry ledger's vocabulary. A [`Transfer`] is one DEBIT and one CREDIT of the same
//! amount in the same currency between two different accounts: balanced by construction, since
//! no other shape can be built. Its [`Entry`] pair is what stores append, never change.

use std::fmt;

use crate::error::Invalid;
use crate::id::{AccountId, EntryId, PaymentId, RefundId, TransactionId};
use crate::money::{Amount, Currency};
use crate::payment::{Payment, PaymentState};
use crate::refund::Refund;
use crate::time::Timestamp;

/// The side of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Takes from the account (balance goes down).
    Debit,
    /// Gives to the account (balance goes up).
    Credit,
}

impl Direction {
    /// The wire and storage name (`DEBIT`, `CREDIT`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Direction::Debit => "DEBIT",
            Direction::Credit => "CREDIT",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "DEBIT" => Some(Direction::Debit),
            "CREDIT" => Some(Direction::Credit),
            _ => None,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Id.
    pub id: EntryId,
    /// The transaction it belongs to.
    pub transaction_id: TransactionId,
    /// The payment the transaction settles or refunds.
    pub payment_id: PaymentId,
    /// The refund the transaction posts; `None` for the payment's charge posting.
    pub refund_id: Option<RefundId>,
    /// The account it moves.
    pub account_id: AccountId,
    /// Debit or credit.
    pub direction: Direction,
    /// Amount (always positive; the direction gives the sign).
    pub amount: Amount,
    /// When it was posted.
    pub created_at: Timestamp,
}

impl Entry {
    /// The signed effect on its account's balance: +amount for a credit, -amount for a debit.
    pub fn signed_minor_units(&self) -> i64 {
        match self.direction {
            Direction::Credit => self.amount.minor_units(),
            Direction::Debit => -self.amount.minor_units(),
        }
    }
}

/// A balanced ledger transaction settling one payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    id: TransactionId,
    payment_id: PaymentId,
    debit: (EntryId, AccountId),
    credit: (EntryId, AccountId),
    refund_id: Option<RefundId>,
    amount: Amount,
    currency: Currency,
    created_at: Timestamp,
}

impl Transfer {
    /// The charge posting of `payment`: DEBIT its funding (system) account, CREDIT its
    /// merchant account, for the amount a worker posts now (the whole amount of an automatic
    /// charge, or the requested capture).
    pub fn for_payment(payment: &Payment, now: Timestamp) -> Result<Self, Invalid> {
        let amount = payment
            .amount_to_post()
            .ok_or(Invalid::new("the payment has nothing to post"))?;
        Self::between(
            (payment.id, None),
            payment.funding_account,
            payment.merchant_account,
            amount,
            payment.currency,
            now,
        )
    }

    /// The posting of `refund`: DEBIT the merchant account, CREDIT the system account.
    pub fn for_refund(refund: &Refund, now: Timestamp) -> Result<Self, Invalid> {
        Self::between(
            (refund.payment_id, Some(refund.id)),
            refund.merchant_account,
            refund.funding_account,
            refund.amount,
            refund.currency,
            now,
        )
    }

    fn between(
        (payment_id, refund_id): (PaymentId, Option<RefundId>),
        debit: AccountId,
        credit: AccountId,
        amount: Amount,
        currency: Currency,
        now: Timestamp,
    ) -> Result<Self, Invalid> {
        if debit == credit {
            return Err(Invalid::new("a transfer needs two different accounts"));
        }
        Ok(Self {
            id: TransactionId::generate(),
            payment_id,
            refund_id,
            debit: (EntryId::generate(), debit),
            credit: (EntryId::generate(), credit),
            amount,
            currency,
            created_at: now,
        })
    }

    /// Id.
    pub fn id(&self) -> TransactionId {
        self.id
    }

    /// The payment it settles.
    pub fn payment_id(&self) -> PaymentId {
        self.payment_id
    }

    /// The refund it posts; `None` for a payment's charge posting.
    pub fn refund_id(&self) -> Option<RefundId> {
        self.refund_id
    }

    /// The account debited.
    pub fn debit_account(&self) -> AccountId {
        self.debit.1
    }

    /// The account credited.
    pub fn credit_account(&self) -> AccountId {
        self.credit.1
    }

    /// The amount moved.
    pub fn amount(&self) -> Amount {
        self.amount
    }

    /// The currency of both accounts.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// When it was posted.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// Whether this transfer is exactly the charge posting `payment` calls for (before or
    /// after its settlement).
    pub fn matches(&self, payment: &Payment) -> bool {
        let amount = match payment.state() {
            PaymentState::Success(captured) => Some(captured),
            _ => payment.amount_to_post(),
        };
        self.payment_id == payment.id
            && self.refund_id.is_none()
            && self.debit.1 == payment.funding_account
            && self.credit.1 == payment.merchant_account
            && Some(self.amount) == amount
            && self.currency == payment.currency
    }

    /// Whether this transfer is exactly the posting `refund` calls for.
    pub fn matches_refund(&self, refund: &Refund) -> bool {
        self.payment_id == refund.payment_id
            && self.refund_id == Some(refund.id)
            && self.debit.1 == refund.merchant_account
            && self.credit.1 == refund.funding_account
            && self.amount == refund.amount
            && self.currency == refund.currency
    }

    /// Its two entries: the DEBIT first, then the CREDIT.
    pub fn entries(&self) -> [Entry; 2] {
        let entry = |(id, account_id): (EntryId, AccountId), direction| Entry {
            id,
            transaction_id: self.id,
            payment_id: self.payment_id,
            refund_id: self.refund_id,
            account_id,
            direction,
            amount: self.amount,
            created_at: self.created_at,
        };
        [
            entry(self.debit, Direction::Debit),
            entry(self.credit, Direction::Credit),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::{CardSource, Description, NewPayment};
    use crate::principal::Owner;

    #[test]
    fn a_transfer_is_balanced_and_matches_its_payment() {
        let payment = Payment::new(
            NewPayment {
                merchant_account: AccountId::generate(),
                funding_account: AccountId::generate(),
                owner: Owner::Platform,
                amount: Amount::new(1234).unwrap(),
                currency: Currency::EUR,
                source: CardSource::parse("tok_visa").unwrap(),
                description: Description::default(),
                capture_method: crate::payment::CaptureMethod::Automatic,
                metadata: crate::metadata::Metadata::default(),
                idempotency_key: None,
                created_by: crate::principal::Principal::Platform,
            },
            Timestamp::now(),
        );
        assert!(
            Transfer::for_payment(&payment, Timestamp::now()).is_err(),
            "PENDING posts nothing"
        );
        let mut payment = payment.into_inner();
        payment.start_processing(Timestamp::now()).unwrap();
        let transfer = Transfer::for_payment(&payment, Timestamp::now()).unwrap();
        let [debit, credit] = transfer.entries();
        assert_eq!(debit.signed_minor_units() + credit.signed_minor_units(), 0);
        assert_eq!(debit.account_id, payment.funding_account);
        assert_eq!(credit.account_id, payment.merchant_account);
        assert_ne!(debit.id, credit.id);
        assert!(transfer.matches(&payment));
    }
}
