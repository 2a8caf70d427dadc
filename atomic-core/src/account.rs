//! Ledger accounts: a merchant's accounts and each currency's system ("World") account that
//! funds payments. Only a system account may go below zero; [`Account::apply`] is where that
//! rule and checked arithmetic meet.

use crate::error::Invariant;
use crate::fresh::Fresh;
use crate::id::AccountId;
use crate::ledger::Direction;
use crate::money::{Amount, Balance, Currency};
use crate::principal::Owner;
use crate::text::Name;
use crate::time::Timestamp;

/// The name of the system account of every currency.
pub const SYSTEM_ACCOUNT_NAME: &str = "World";

/// What kind of account this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccountKind {
    /// A currency's system ("World") account: the DEBIT side of every payment; may go negative.
    System,
    /// A merchant account: never below zero.
    Merchant,
}

impl AccountKind {
    /// The stored name (`system`, `merchant`).
    pub fn as_str(&self) -> &'static str {
        match self {
            AccountKind::System => "system",
            AccountKind::Merchant => "merchant",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "system" => Some(AccountKind::System),
            "merchant" => Some(AccountKind::Merchant),
            _ => None,
        }
    }
}

/// An account's name (see [`Name`]).
pub type AccountName = Name;

/// A ledger account and its cached balance (always equal to its credits minus its debits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Id.
    pub id: AccountId,
    /// Display name.
    pub name: AccountName,
    /// The one currency every entry of this account is in.
    pub currency: Currency,
    /// Who owns it.
    pub owner: Owner,
    /// System or merchant.
    pub kind: AccountKind,
    /// Credits minus debits, in minor units.
    pub balance: Balance,
    /// When it was opened.
    pub created_at: Timestamp,
}

impl Account {
    /// A new, empty merchant account.
    pub fn open(
        name: AccountName,
        currency: Currency,
        owner: Owner,
        now: Timestamp,
    ) -> Fresh<Self> {
        Fresh::new(Self {
            id: AccountId::generate(),
            name,
            currency,
            owner,
            kind: AccountKind::Merchant,
            balance: Balance::ZERO,
            created_at: now,
        })
    }

    /// A new system ("World") account for a currency, owned by the platform.
    pub fn system(currency: Currency, now: Timestamp) -> Fresh<Self> {
        Fresh::new(Self {
            id: AccountId::generate(),
            name: Name::parse(SYSTEM_ACCOUNT_NAME)
                .unwrap_or_else(|_| unreachable!("a valid constant")),
            currency,
            owner: Owner::Platform,
            kind: AccountKind::System,
            balance: Balance::ZERO,
            created_at: now,
        })
    }

    /// Whether the balance may go below zero (system accounts only).
    pub fn allow_negative(&self) -> bool {
        self.kind == AccountKind::System
    }

    /// The balance after one entry, refusing overflow and an overdraft of a non-system account.
    pub fn apply(&self, direction: Direction, amount: Amount) -> Result<Balance, Invariant> {
        let next = match direction {
            Direction::Credit => self.balance.credit(amount)?,
            Direction::Debit => self.balance.debit(amount)?,
        };
        if next < Balance::ZERO && !self.allow_negative() {
            return Err(Invariant::InsufficientFunds);
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(n: i64) -> Amount {
        Amount::new(n).unwrap()
    }

    #[test]
    fn only_system_accounts_go_negative() {
        let now = Timestamp::now();
        let world = Account::system(Currency::USD, now);
        let merchant = Account::open(
            AccountName::parse("shop").unwrap(),
            Currency::USD,
            Owner::Platform,
            now,
        );
        assert_eq!(
            world.apply(Direction::Debit, amount(5)),
            Ok(Balance::from_minor_units(-5))
        );
        assert_eq!(
            merchant.apply(Direction::Debit, amount(5)),
            Err(Invariant::InsufficientFunds)
        );
        assert_eq!(
            merchant.apply(Direction::Credit, amount(5)),
            Ok(Balance::from_minor_units(5))
        );
    }
}
