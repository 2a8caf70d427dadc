//! Keyset pagination, newest first: a [`PageRequest`] names how many items and, optionally, the
//! id of the last item already seen; a [`Page`] says whether more follow.

use crate::error::Invalid;
use crate::time::Timestamp;

/// How many items a page holds: 1..=100, default 20.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimit(u8);

impl PageLimit {
    /// The largest page.
    pub const MAX: u8 = 100;

    /// Validates a limit.
    pub fn new(limit: i64) -> Result<Self, Invalid> {
        u8::try_from(limit)
            .ok()
            .filter(|n| (1..=Self::MAX).contains(n))
            .map(Self)
            .ok_or(Invalid::new("must be an integer from 1 to 100"))
    }

    /// The limit as a count.
    pub fn get(&self) -> usize {
        usize::from(self.0)
    }
}

impl Default for PageLimit {
    fn default() -> Self {
        Self(20)
    }
}

/// A page request over items identified by `C`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest<C> {
    /// Items wanted.
    pub limit: PageLimit,
    /// Return items older than this one (which the caller must be able to see).
    pub starting_after: Option<C>,
}

impl<C> Default for PageRequest<C> {
    fn default() -> Self {
        Self {
            limit: PageLimit::default(),
            starting_after: None,
        }
    }
}

/// `createdGte` / `createdLt`: the half-open range of creation times a list keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreatedRange {
    /// Items created at or after this time.
    pub gte: Option<Timestamp>,
    /// Items created before this time.
    pub lt: Option<Timestamp>,
}

impl CreatedRange {
    /// Whether `at` lies in the range.
    pub fn contains(&self, at: Timestamp) -> bool {
        self.gte.is_none_or(|gte| at >= gte) && self.lt.is_none_or(|lt| at < lt)
    }
}

/// A page of items, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Whether older items follow.
    pub has_more: bool,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` items fetched newest first: the extra one, if
    /// present, only tells that more follow.
    pub fn from_overfetch(mut items: Vec<T>, limit: PageLimit) -> Self {
        let has_more = items.len() > limit.get();
        items.truncate(limit.get());
        Self { items, has_more }
    }

    /// Maps the items.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            has_more: self.has_more,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_one_to_a_hundred() {
        assert!(PageLimit::new(0).is_err());
        assert!(PageLimit::new(101).is_err());
        assert!(PageLimit::new(-1).is_err());
        assert_eq!(PageLimit::new(100).map(|l| l.get()), Ok(100));
        assert_eq!(PageLimit::default().get(), 20);
    }

    #[test]
    fn overfetch_sets_has_more() {
        let limit = PageLimit::new(2).unwrap();
        assert_eq!(
            Page::from_overfetch(vec![3, 2, 1], limit),
            Page {
                items: vec![3, 2],
                has_more: true
            }
        );
        assert_eq!(
            Page::from_overfetch(vec![3, 2], limit),
            Page {
                items: vec![3, 2],
                has_more: false
            }
        );
    }
}
