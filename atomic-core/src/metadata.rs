//! Metadata: the merchant's own key-value pairs on payments and refunds (an order number, a
//! customer id), and the exact-match filters that find records by them. Bounds (API.md v1.1):
//! at most 20 keys; a key is 1..=40 characters of `[A-Za-z0-9_.-]`; a value is a string of at
//! most 500 characters with no NUL. The database holds the same bounds as constraints.

use std::collections::BTreeMap;

use crate::error::Invalid;

/// Most keys one record carries.
pub const MAX_KEYS: usize = 20;
/// Longest key, in characters.
pub const MAX_KEY_LEN: usize = 40;
/// Longest value, in characters.
pub const MAX_VALUE_LEN: usize = 500;

/// A metadata key: 1..=40 characters of `[A-Za-z0-9_.-]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetadataKey(String);

impl MetadataKey {
    /// Validates a key.
    pub fn parse(key: impl Into<String>) -> Result<Self, Invalid> {
        let key = key.into();
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
        if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(allowed) {
            return Err(Invalid::new(
                "keys must be 1 to 40 characters of letters, digits, '_', '.' and '-'",
            ));
        }
        Ok(Self(key))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a metadata value: at most 500 characters, no NUL (empty is allowed).
pub fn check_value(value: &str) -> Result<(), Invalid> {
    if value.chars().count() > MAX_VALUE_LEN {
        return Err(Invalid::new("values must be at most 500 characters"));
    }
    if value.contains('\0') {
        return Err(Invalid::new("values must not contain NUL characters"));
    }
    Ok(())
}

/// A record's metadata: at most 20 pairs, each within bounds. Empty by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata(BTreeMap<MetadataKey, String>);

impl Metadata {
    /// Validates pairs; a key given twice is refused.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self, Invalid> {
        let mut map = BTreeMap::new();
        for (key, value) in pairs {
            if map.len() == MAX_KEYS {
                return Err(Invalid::new("must have at most 20 keys"));
            }
            check_value(&value)?;
            if map.insert(MetadataKey::parse(key)?, value).is_some() {
                return Err(Invalid::new("keys must be distinct"));
            }
        }
        Ok(Self(map))
    }

    /// The pairs, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &MetadataKey) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Whether every pair of `filter` is present, exactly.
    pub fn matches(&self, filter: &MetadataFilter) -> bool {
        filter
            .pairs()
            .iter()
            .all(|(key, value)| self.get(key) == Some(value.as_str()))
    }

    /// The pairs as one unambiguous string (each part length-prefixed, keys in order), for
    /// fingerprinting a request.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        for (key, value) in self.iter() {
            out.push_str(&format!("{}:{key}{}:{value}", key.len(), value.len()));
        }
        out
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `metadata[<key>]=<value>` list filters: exact matches, ANDed; a key at most once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataFilter(Vec<(MetadataKey, String)>);

impl MetadataFilter {
    /// Validates filter pairs under the bounds of metadata itself.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self, Invalid> {
        let mut out: Vec<(MetadataKey, String)> = Vec::new();
        for (key, value) in pairs {
            let key = MetadataKey::parse(key)?;
            check_value(&value)?;
            if out.iter().any(|(k, _)| *k == key) {
                return Err(Invalid::new("a metadata filter may name a key only once"));
            }
            if out.len() == MAX_KEYS {
                return Err(Invalid::new("at most 20 metadata filters"));
            }
            out.push((key, value));
        }
        Ok(Self(out))
    }

    /// The pairs, in the order given.
    pub fn pairs(&self) -> &[(MetadataKey, String)] {
        &self.0
    }

    /// Whether it filters nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(n: usize) -> Vec<(String, String)> {
        (0..n).map(|i| (format!("k{i}"), "v".to_owned())).collect()
    }

    #[test]
    fn bounds_hold_at_their_edges() {
        assert!(Metadata::new(pairs(20)).is_ok());
        assert!(Metadata::new(pairs(21)).is_err());
        let key = |n: usize| vec![("k".repeat(n), String::new())];
        assert!(Metadata::new(key(40)).is_ok());
        assert!(Metadata::new(key(41)).is_err());
        assert!(Metadata::new(key(0)).is_err());
        let value = |s: String| vec![("k".to_owned(), s)];
        assert!(Metadata::new(value("é".repeat(500))).is_ok());
        assert!(Metadata::new(value("v".repeat(501))).is_err());
        assert!(Metadata::new(value("a\0b".into())).is_err());
        for bad in ["a b", "a/b", "ключ", "a'b", "a[b]"] {
            assert!(MetadataKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_canonical_form_tells_every_different_metadata_apart() {
        let m = |pairs: &[(&str, &str)]| {
            Metadata::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
                .unwrap()
                .canonical()
        };
        assert_ne!(m(&[("a", "bc")]), m(&[("ab", "c")]));
        assert_ne!(m(&[("a", "1")]), m(&[]));
        assert_ne!(m(&[("a", "1")]), m(&[("a", "2")]));
        assert_eq!(m(&[("b", "2"), ("a", "1")]), m(&[("a", "1"), ("b", "2")]));
    }

    #[test]
    fn filters_match_exactly_and_together() {
        let m = Metadata::new(vec![
            ("orderId".into(), "A-1".into()),
            ("shop".into(), "x".into()),
        ])
        .unwrap();
        let f = |p: &[(&str, &str)]| {
            MetadataFilter::new(p.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
        };
        assert!(m.matches(&f(&[("orderId", "A-1")])));
        assert!(m.matches(&f(&[("orderId", "A-1"), ("shop", "x")])));
        assert!(!m.matches(&f(&[("orderId", "a-1")])));
        assert!(!m.matches(&f(&[("orderId", "A-1"), ("shop", "y")])));
        assert!(!m.matches(&f(&[("missing", "")])));
        assert!(
            MetadataFilter::new(vec![("k".into(), "1".into()), ("k".into(), "2".into())]).is_err()
        );
    }
}
