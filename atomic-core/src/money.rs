//! Money as exact integers: [`Amount`] (a positive count of minor units), [`Balance`]
//! (a signed running total with checked arithmetic) and [`Currency`] (an ISO 4217 code from
//! the configured [`Currencies`]). No float ever touches money.

use std::fmt;

use crate::error::{Invalid, Invariant};

/// The largest amount one payment may carry, in minor units (API.md).
pub const MAX_PAYMENT_AMOUNT: i64 = 99_999_999;

/// A strictly positive number of minor units (cents, paise).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(i64);

impl Amount {
    /// An amount from minor units; refuses zero and negatives.
    pub fn new(minor_units: i64) -> Result<Self, Invalid> {
        if minor_units > 0 {
            Ok(Self(minor_units))
        } else {
            Err(Invalid::new("must be a positive integer of minor units"))
        }
    }

    /// An amount a payment may carry: 1..=[`MAX_PAYMENT_AMOUNT`].
    pub fn for_payment(minor_units: i64) -> Result<Self, Invalid> {
        if minor_units > MAX_PAYMENT_AMOUNT {
            return Err(Invalid::owned(format!(
                "must be at most {MAX_PAYMENT_AMOUNT} minor units"
            )));
        }
        Self::new(minor_units)
    }

    /// The amount in minor units.
    pub const fn minor_units(self) -> i64 {
        self.0
    }

    /// The sum of two amounts, or `None` on overflow.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// An account balance in minor units: credits minus debits. Negative only for system accounts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Balance(i64);

impl Balance {
    /// Zero.
    pub const ZERO: Balance = Balance(0);

    /// A balance from minor units (as read back from a store).
    pub const fn from_minor_units(minor_units: i64) -> Self {
        Self(minor_units)
    }

    /// The balance in minor units.
    pub const fn minor_units(self) -> i64 {
        self.0
    }

    /// The balance after a credit, or an overflow refusal.
    pub fn credit(self, amount: Amount) -> Result<Balance, Invariant> {
        self.0
            .checked_add(amount.0)
            .map(Balance)
            .ok_or(Invariant::BalanceOverflow)
    }

    /// The balance after a debit, or an overflow refusal. Whether the result may be negative is
    /// the account's rule, not the balance's: see [`crate::account::Account::apply`].
    pub fn debit(self, amount: Amount) -> Result<Balance, Invariant> {
        self.0
            .checked_sub(amount.0)
            .map(Balance)
            .ok_or(Invariant::BalanceOverflow)
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// An ISO 4217 alphabetic code: exactly three ASCII upper-case letters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// US dollar.
    pub const USD: Currency = Currency(*b"USD");
    /// Euro.
    pub const EUR: Currency = Currency(*b"EUR");
    /// Indian rupee.
    pub const INR: Currency = Currency(*b"INR");

    /// Parses a code of three upper-case ASCII letters (membership is [`Currencies`]' job).
    pub fn parse(code: &str) -> Result<Self, Invalid> {
        match code.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_alphabetic()) => Err(Invalid::new(
                "must be an upper-case ISO 4217 code, such as USD",
            )),
            _ => Err(Invalid::new("must be a three-letter ISO 4217 code")),
        }
    }

    /// The code as a string.
    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

/// The set of currencies this deployment accepts (default `USD`, `EUR`, `INR`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Currencies(Vec<Currency>);

impl Currencies {
    /// A set from a list; refuses an empty list. Duplicates are dropped, order is kept.
    pub fn new(list: impl IntoIterator<Item = Currency>) -> Result<Self, Invalid> {
        let mut out: Vec<Currency> = Vec::new();
        for currency in list {
            if !out.contains(&currency) {
                out.push(currency);
            }
        }
        if out.is_empty() {
            return Err(Invalid::new("at least one currency must be supported"));
        }
        Ok(Self(out))
    }

    /// Parses a comma-separated list such as `USD,EUR`.
    pub fn parse_list(list: &str) -> Result<Self, Invalid> {
        let parsed = list
            .split(',')
            .map(|code| Currency::parse(code.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(parsed)
    }

    /// Parses a code and checks that it is supported.
    pub fn parse(&self, code: &str) -> Result<Currency, Invalid> {
        let currency = Currency::parse(code)?;
        if self.0.contains(&currency) {
            Ok(currency)
        } else {
            Err(Invalid::owned(format!(
                "unsupported currency; supported: {self}"
            )))
        }
    }

    /// Whether the currency is supported.
    pub fn contains(&self, currency: Currency) -> bool {
        self.0.contains(&currency)
    }

    /// The supported currencies in configured order.
    pub fn iter(&self) -> impl Iterator<Item = Currency> + '_ {
        self.0.iter().copied()
    }
}

impl Default for Currencies {
    fn default() -> Self {
        Self(vec![Currency::USD, Currency::EUR, Currency::INR])
    }
}

impl fmt::Display for Currencies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, currency) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(currency.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn amount_accepts_exactly_one_to_max() {
        assert!(Amount::for_payment(0).is_err());
        assert!(Amount::for_payment(-1).is_err());
        assert!(Amount::for_payment(i64::MIN).is_err());
        assert_eq!(Amount::for_payment(1).map(Amount::minor_units), Ok(1));
        assert!(Amount::for_payment(MAX_PAYMENT_AMOUNT).is_ok());
        assert!(Amount::for_payment(MAX_PAYMENT_AMOUNT + 1).is_err());
        assert!(Amount::for_payment(i64::MAX).is_err());
    }

    #[test]
    fn balance_arithmetic_refuses_overflow_instead_of_wrapping() {
        let max = Amount::new(i64::MAX).unwrap();
        let near_top = Balance::from_minor_units(i64::MAX - 1);
        assert_eq!(near_top.credit(max), Err(Invariant::BalanceOverflow));
        let near_bottom = Balance::from_minor_units(i64::MIN + 1);
        assert_eq!(near_bottom.debit(max), Err(Invariant::BalanceOverflow));
        assert_eq!(
            Balance::ZERO.debit(max).map(Balance::minor_units),
            Ok(-i64::MAX)
        );
    }

    #[test]
    fn currency_codes_are_strict() {
        assert_eq!(Currency::parse("USD"), Ok(Currency::USD));
        for bad in ["usd", "Usd", "US", "USDD", "ＵＳＤ", "", "U$D", "US\0"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?} accepted");
        }
        let set = Currencies::default();
        assert!(set.parse("EUR").is_ok());
        assert!(set.parse("GBP").is_err());
        assert_eq!(
            Currencies::parse_list("USD, GBP,USD").unwrap().to_string(),
            "USD,GBP"
        );
        assert!(Currencies::parse_list("").is_err());
    }

    proptest! {
        #[test]
        fn credit_then_debit_round_trips(start in any::<i64>(), amount in 1..=i64::MAX) {
            let amount = Amount::new(amount).unwrap();
            let start = Balance::from_minor_units(start);
            if let Ok(after) = start.credit(amount) {
                prop_assert_eq!(after.debit(amount), Ok(start));
                prop_assert_eq!(i128::from(after.minor_units()), i128::from(start.minor_units()) + i128::from(amount.minor_units()));
            } else {
                prop_assert!(i128::from(start.minor_units()) + i128::from(amount.minor_units()) > i128::from(i64::MAX));
            }
        }
    }
}
