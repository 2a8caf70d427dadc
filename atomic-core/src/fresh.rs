//! Records as their creation makes them, before any store holds them.
//!
//! A store port that creates a record takes it as [`Fresh`], and only this crate's constructors
//! make one ([`Payment::new`], [`Refund::new`], [`Account::open`], [`Account::system`],
//! [`Onboarding::new`]). What creation decides therefore holds by type: a payment or refund
//! starts `PENDING` with nothing captured or refunded, an account opens empty, and an
//! onboarding's merchant, account and key name each other. Adapters store these as given; their
//! databases still refuse a record that breaks them, as a second line.
//!
//! [`Payment::new`]: crate::Payment::new
//! [`Refund::new`]: crate::Refund::new
//! [`Account::open`]: crate::Account::open
//! [`Account::system`]: crate::Account::system
//! [`Onboarding::new`]: crate::merchant::Onboarding::new

use std::ops::Deref;

/// A record as core created it: readable, not changeable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fresh<T>(T);

impl<T> Fresh<T> {
    /// Only core's constructors vouch for a record.
    pub(crate) fn new(record: T) -> Self {
        Self(record)
    }

    /// The record, changeable: for the conformance kit, which builds records core never
    /// would, to see a store's own guards refuse them.
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) fn get_mut(&mut self) -> &mut T {
        &mut self.0
    }

    /// The record itself, no longer vouched for.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Fresh<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}
