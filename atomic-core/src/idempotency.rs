//! Idempotency keys (Stripe's semantics, Brandur Leach's design). A key is claimed before an
//! operation runs, its response is stored in the same store transaction as the operation's
//! writes, and a retry with the same key and request replays that response byte for byte.
//! A different request under the same key is refused; an error releases the key.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::error::Invalid;
use crate::hex;
use crate::principal::Principal;

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// A client's idempotency key: 1..=255 printable ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses an `Idempotency-Key` header value. A value written as an RFC 8941 string
    /// (`"…"`, with `\"` and `\\` escapes) is unquoted first. A quote at either end marks such
    /// a string, so a value that starts or ends with one must be a whole string: `"a` and `a"`
    /// are both refused, never read as bare keys.
    pub fn from_header(value: &str) -> Result<Self, Invalid> {
        match value.strip_prefix('"') {
            Some(quoted) => Self::parse(unquote_sf_string(quoted)?),
            None if value.ends_with('"') => Err(NOT_A_QUOTED_STRING),
            None => Self::parse(value),
        }
    }

    /// Validates a bare key.
    pub fn parse(key: impl Into<String>) -> Result<Self, Invalid> {
        let key = key.into();
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(Invalid::new("must be 1 to 255 characters long"));
        }
        if !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(Invalid::new("must contain only printable ASCII characters"));
        }
        Ok(Self(key))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The refusal of a value that is neither a bare key nor a whole RFC 8941 string.
const NOT_A_QUOTED_STRING: Invalid = Invalid::new("is not a valid quoted string");

/// Unquotes the rest of an RFC 8941 sf-string after its opening quote.
fn unquote_sf_string(rest: &str) -> Result<String, Invalid> {
    const BAD: Invalid = NOT_A_QUOTED_STRING;
    let mut out = String::with_capacity(rest.len());
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                return if chars.next().is_none() {
                    Ok(out)
                } else {
                    Err(BAD)
                };
            }
            '\\' => match chars.next() {
                Some(escaped @ ('"' | '\\')) => out.push(escaped),
                _ => return Err(BAD),
            },
            ' '..='~' => out.push(c),
            _ => return Err(BAD),
        }
    }
    Err(BAD)
}

/// What identifies "the same request": method, path and the SHA-256 of the canonical body.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a request whose body is already in canonical form (sorted keys, no
    /// insignificant white space), so that key order does not matter.
    pub fn of(method: &str, path: &str, canonical_body: &[u8]) -> Self {
        let body = Sha256::digest(canonical_body);
        let digest = Sha256::new()
            .chain_update(method.as_bytes())
            .chain_update([0u8])
            .chain_update(path.as_bytes())
            .chain_update([0u8])
            .chain_update(body)
            .finalize();
        Self(digest.into())
    }

    /// A fingerprint from its bytes (as read back from a store).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", hex::encode(&self.0[..8]))
    }
}

/// The response stored with a finished key and replayed for its retries. Its `Debug` shows
/// the size, never the body (which holds a customer's data).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status code.
    pub status: u16,
    /// The exact body bytes.
    pub body: Bytes,
}

impl fmt::Debug for StoredResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "StoredResponse({}, {} bytes)",
            self.status,
            self.body.len()
        )
    }
}

crate::id::id_type!(
    /// Proof of holding an in-progress key; only its holder can complete or release it.
    ClaimToken
);

/// A held key: scope, key and the token that proves the hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Whose key it is (keys of different callers never meet).
    pub scope: Principal,
    /// The key.
    pub key: IdempotencyKey,
    /// The hold.
    pub token: ClaimToken,
}

/// A key and the response to store with it, written together with the operation's effects.
///
/// Writing a completion takes the key in the same step when nobody holds it, so a write needs
/// no claim written before it: it succeeds when the key is absent, expired, held unfinished by
/// a presumed-dead claimant (past the policy's lock timeout), or held unfinished by this very
/// token; in every other case (a live claimant, a finished request) it is
/// [`crate::Error::IdempotencyClaimLost`] and the operation writes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The key, and the token that holds (or takes) it.
    pub claim: Claim,
    /// The request the key is kept for: a later different request under it is refused.
    pub fingerprint: Fingerprint,
    /// How long the key is kept, and when an unfinished holder counts as dead.
    pub policy: IdempotencyPolicy,
    /// The response to keep.
    pub response: StoredResponse,
}

/// The answer to a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key is ours: run the operation, then complete or release.
    Acquired(Claim),
    /// The same request finished before: replay this.
    Replay(StoredResponse),
    /// The key was used with a different request.
    Mismatch,
    /// The same request is still running.
    InProgress,
}

/// How long keys live and how long an unfinished claim blocks its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdempotencyPolicy {
    /// How long a key (finished or not) is remembered; Stripe keeps 24 h.
    pub ttl: Duration,
    /// After this long an unfinished claim is presumed dead and may be taken over by any
    /// request under the key, whatever its body: an unfinished claim created nothing (its
    /// payment is written only with its completion), so a claim whose release failed never
    /// blocks a corrected request for the whole `ttl`. Longer than any request may run, so a
    /// live holder is never overtaken; and its completion would be refused anyway, as it no
    /// longer holds the token.
    pub lock_timeout: Duration,
}

impl Default for IdempotencyPolicy {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 60 * 60),
            lock_timeout: Duration::from_secs(60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_printable_ascii_up_to_255() {
        assert!(IdempotencyKey::parse("a").is_ok());
        assert!(IdempotencyKey::parse("k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse("k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("tab\there").is_err());
        assert!(IdempotencyKey::parse("é").is_err());
        assert!(IdempotencyKey::parse("' OR 1=1--").is_ok());
    }

    #[test]
    fn rfc8941_strings_are_unquoted() {
        let key = |v: &str| IdempotencyKey::from_header(v).map(|k| k.as_str().to_owned());
        assert_eq!(key("\"abc\"").as_deref(), Ok("abc"));
        assert_eq!(key(r#""a\"b\\c""#).as_deref(), Ok(r#"a"b\c"#));
        assert_eq!(key("abc").as_deref(), Ok("abc"));
        assert!(key("\"abc").is_err());
        assert!(key("abc\"").is_err(), "unbalanced at either end alike");
        assert!(key("\"").is_err());
        assert_eq!(
            key("a\"b").as_deref(),
            Ok("a\"b"),
            "a quote inside a bare key"
        );
        assert!(key("\"a\"b\"").is_err());
        assert!(key(r#""a\nb""#).is_err());
        assert!(
            key("\"\"").is_err(),
            "an empty key is still empty once unquoted"
        );
    }

    #[test]
    fn fingerprint_covers_method_path_and_body() {
        let base = Fingerprint::of("POST", "/api/v1/payments", b"{\"a\":1}");
        assert_eq!(
            base,
            Fingerprint::of("POST", "/api/v1/payments", b"{\"a\":1}")
        );
        assert_ne!(
            base,
            Fingerprint::of("POST", "/api/v1/accounts", b"{\"a\":1}")
        );
        assert_ne!(
            base,
            Fingerprint::of("PUT", "/api/v1/payments", b"{\"a\":1}")
        );
        assert_ne!(
            base,
            Fingerprint::of("POST", "/api/v1/payments", b"{\"a\":2}")
        );
        // The separators keep (method, path) pairs from running into each other.
        assert_ne!(
            Fingerprint::of("A", "BC", b""),
            Fingerprint::of("AB", "C", b"")
        );
    }
}
