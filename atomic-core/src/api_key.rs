//! API keys. A raw key (`sk_test_…`) is random, carries a checksum so garbage is refused
//! without a store lookup, is shown once when minted, and is stored only as its SHA-256
//! [`KeyHash`]. Neither the raw key nor its hash is ever printed by `Debug`.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Invalid};
use crate::hex;
use crate::id::{ApiKeyId, MerchantId};
use crate::time::Timestamp;

/// The prefix of every key this build mints.
pub const KEY_PREFIX: &str = "sk_test_";
const BODY_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
/// How many characters of a key are kept and shown (`sk_test_` and four more).
pub const DISPLAY_PREFIX_LEN: usize = KEY_PREFIX.len() + 4;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A raw API key: the secret the caller sends. Only ever held briefly.
#[derive(Clone, PartialEq, Eq)]
pub struct RawApiKey(String);

impl RawApiKey {
    /// Mints a new key from the operating system's random source.
    pub fn generate() -> Result<Self, Error> {
        let mut body = String::with_capacity(BODY_LEN);
        let mut buf = [0u8; 64];
        while body.len() < BODY_LEN {
            getrandom::fill(&mut buf).map_err(|e| Error::backend(e.to_string()))?;
            // Rejection sampling keeps every base62 digit equally likely.
            for byte in buf.iter().filter(|b| **b < 248) {
                if body.len() == BODY_LEN {
                    break;
                }
                body.push(char::from(BASE62[usize::from(byte % 62)]));
            }
        }
        let checksum = checksum(&body);
        Ok(Self(format!("{KEY_PREFIX}{body}{checksum}")))
    }

    /// Wraps a key presented by a caller, whatever its shape.
    pub fn from_presented(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// Whether the key has the shape and checksum of a key we mint.
    pub fn is_well_formed(&self) -> bool {
        let Some(rest) = self.0.strip_prefix(KEY_PREFIX) else {
            return false;
        };
        if rest.len() != BODY_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return false;
        }
        let (body, sum) = rest.split_at(BODY_LEN);
        checksum(body).as_bytes().ct_eq(sum.as_bytes()).into()
    }

    /// The characters of the key that may be shown again (`sk_test_AbCd`).
    pub fn display_prefix(&self) -> String {
        self.0.chars().take(DISPLAY_PREFIX_LEN).collect()
    }

    /// Its SHA-256 digest, the only form that is stored.
    pub fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.0.as_bytes()).into())
    }

    /// The secret itself, to hand to the caller once. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RawApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawApiKey(<redacted>)")
    }
}

fn checksum(body: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"atomic-api-key-v1:")
        .chain_update(body.as_bytes())
        .finalize();
    let mut n = u64::from(u32::from_be_bytes([
        digest[0], digest[1], digest[2], digest[3],
    ]));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[usize::try_from(n % 62).unwrap_or(0)];
        n /= 62;
    }
    out.iter().map(|b| char::from(*b)).collect()
}

/// The SHA-256 digest of a raw key.
#[derive(Clone, Copy, Hash, PartialEq, Eq)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    /// Parses a 64-character hex digest (either case), as `MERCHANT_API_KEY_HASH` holds it.
    pub fn from_hex(text: &str) -> Result<Self, Invalid> {
        hex::decode::<32>(text)
            .map(Self)
            .ok_or(Invalid::new("must be a 64-character hex SHA-256 digest"))
    }

    /// A hash from its 32 bytes (as read back from a store).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// Compares in constant time, so a comparison leaks nothing through its duration.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(<redacted>)")
    }
}

/// A stored API key record: who it belongs to and whether it still works. Never the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// Id.
    pub id: ApiKeyId,
    /// The merchant it acts for.
    pub merchant_id: MerchantId,
    /// The first characters of the raw key, to tell keys apart.
    pub prefix: String,
    /// SHA-256 of the raw key.
    pub hash: KeyHash,
    /// When it was minted.
    pub created_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

impl ApiKey {
    /// Mints a key for a merchant: the record to store and the raw key to show once.
    pub fn mint(merchant_id: MerchantId, now: Timestamp) -> Result<(ApiKey, RawApiKey), Error> {
        let raw = RawApiKey::generate()?;
        let record = ApiKey {
            id: ApiKeyId::generate(),
            merchant_id,
            prefix: raw.display_prefix(),
            hash: raw.hash(),
            created_at: now,
            revoked_at: None,
        };
        Ok((record, raw))
    }

    /// Whether the key still authenticates.
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn minted_keys_are_well_formed_and_distinct() {
        let a = RawApiKey::generate().unwrap();
        let b = RawApiKey::generate().unwrap();
        assert!(a.is_well_formed() && b.is_well_formed());
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), KEY_PREFIX.len() + BODY_LEN + CHECKSUM_LEN);
        assert!(a.expose().starts_with(&a.display_prefix()));
        assert_ne!(a.hash(), b.hash());
        assert!(!format!("{a:?}{:?}", a.hash()).contains(&a.expose()[KEY_PREFIX.len()..]));
    }

    #[test]
    fn hash_is_plain_sha256_hex_of_the_key() {
        // printf 'abc' | sha256sum
        let hash = RawApiKey::from_presented("abc").hash();
        assert_eq!(
            hash.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(KeyHash::from_hex(&hash.to_hex().to_uppercase()), Ok(hash));
        assert!(KeyHash::from_hex("abc").is_err());
    }

    proptest! {
        #[test]
        fn any_single_character_change_breaks_the_checksum(pos in KEY_PREFIX.len()..KEY_PREFIX.len() + BODY_LEN + CHECKSUM_LEN, digit in 0usize..62) {
            let key = RawApiKey::generate().unwrap();
            let mut bytes = key.expose().as_bytes().to_vec();
            prop_assume!(bytes[pos] != BASE62[digit]);
            bytes[pos] = BASE62[digit];
            let changed = RawApiKey::from_presented(String::from_utf8(bytes).unwrap());
            // A 32-bit checksum lets about one change in 4 billion through; a flake here is
            // that one in 4 billion, not a bug.
            prop_assert!(!changed.is_well_formed());
        }
    }
}
