//! Standard Webhooks signatures, as Atomic signs its deliveries and as a receiver checks them.
//!
//! A delivery carries `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, where the
//! key is the base64-decoded part of the endpoint's secret after `whsec_`. A receiver accepts
//! a delivery when one of the header's space-separated signatures matches (compared in
//! constant time) and the timestamp is within [`TOLERANCE_SECONDS`] of its own clock, which
//! bounds how long a captured delivery can be replayed.
//!
//! ```
//! use atomic_webhook_signature::{Headers, Secret, sign, verify};
//!
//! let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let body = br#"{"id":"evt_1","type":"payment.succeeded"}"#;
//! let signature = sign(&secret, "evt_1", 1_700_000_000, body);
//!
//! let headers = Headers { id: "evt_1", timestamp: "1700000000", signature: &signature };
//! assert!(verify(&secret, &headers, body, 1_700_000_030).is_ok());
//! // A changed body, or a delivery replayed an hour later, is refused.
//! assert!(verify(&secret, &headers, b"{}", 1_700_000_030).is_err());
//! assert!(verify(&secret, &headers, body, 1_700_003_600).is_err());
//! # Ok::<(), atomic_webhook_signature::Error>(())
//! ```

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// How far a delivery's timestamp may be from the receiver's clock, either way.
pub const TOLERANCE_SECONDS: i64 = 300;

/// The prefix of a secret as Atomic shows it.
const SECRET_PREFIX: &str = "whsec_";

/// Why a secret or a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The secret is not `whsec_` followed by base64.
    #[error("the secret is not whsec_ followed by base64")]
    BadSecret,
    /// `webhook-timestamp` is not a number of seconds.
    #[error("webhook-timestamp is not a number of seconds")]
    BadTimestamp,
    /// The timestamp is further than the tolerance from now.
    #[error("webhook-timestamp is more than {TOLERANCE_SECONDS} s from now")]
    Stale,
    /// No signature of the header matches the delivery.
    #[error("no signature matches the delivery")]
    NoMatch,
}

/// An endpoint's signing key (and the HMAC keyed with it).
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
    keyed: Hmac<Sha256>,
}

impl Secret {
    /// The key of a secret written `whsec_<base64>`.
    pub fn parse(secret: &str) -> Result<Self, Error> {
        let encoded = secret.strip_prefix(SECRET_PREFIX).ok_or(Error::BadSecret)?;
        Self::from_key(STANDARD.decode(encoded).map_err(|_| Error::BadSecret)?)
    }

    /// A secret of these key bytes (at least one).
    pub fn from_key(key: Vec<u8>) -> Result<Self, Error> {
        if key.is_empty() {
            return Err(Error::BadSecret);
        }
        let keyed =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&key).map_err(|_| Error::BadSecret)?;
        Ok(Self { key, keyed })
    }

    /// The secret as shown to its owner: `whsec_<base64>`.
    pub fn reveal(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The signature headers of a delivery.
#[derive(Clone, Copy, Debug)]
pub struct Headers<'a> {
    /// `webhook-id`.
    pub id: &'a str,
    /// `webhook-timestamp`.
    pub timestamp: &'a str,
    /// `webhook-signature`: one or more space-separated `v1,<base64>`.
    pub signature: &'a str,
}

/// The `webhook-signature` value of a delivery: `v1,<base64>`.
pub fn sign(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = secret
        .mac(id, &timestamp.to_string(), body)
        .finalize()
        .into_bytes();
    format!("v1,{}", STANDARD.encode(tag))
}

/// Checks a delivery received at `now` (Unix seconds) against the endpoint's secret.
pub fn verify(secret: &Secret, headers: &Headers<'_>, body: &[u8], now: i64) -> Result<(), Error> {
    let sent: i64 = headers.timestamp.parse().map_err(|_| Error::BadTimestamp)?;
    if sent.abs_diff(now) > TOLERANCE_SECONDS.unsigned_abs() {
        return Err(Error::Stale);
    }
    let matches = headers
        .signature
        .split(' ')
        .filter_map(|candidate| candidate.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|tag| {
            secret
                .mac(headers.id, headers.timestamp, body)
                .verify_slice(&tag)
                .is_ok()
        });
    if matches { Ok(()) } else { Err(Error::NoMatch) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    /// The Standard Webhooks reference vector (its specification's example).
    #[test]
    fn signs_the_reference_vector() {
        let secret = Secret::parse(SECRET).unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn any_tampered_part_fails_and_one_matching_signature_of_several_passes() {
        let secret = Secret::parse(SECRET).unwrap();
        let body = b"{\"a\":1}";
        let good = sign(&secret, "evt_1", 1_000, body);
        let ok = |id, ts, sig: &str, body: &[u8]| {
            let headers = Headers {
                id,
                timestamp: ts,
                signature: sig,
            };
            verify(&secret, &headers, body, 1_000)
        };
        assert_eq!(ok("evt_1", "1000", &good, body), Ok(()));
        assert_eq!(ok("evt_2", "1000", &good, body), Err(Error::NoMatch));
        assert_eq!(ok("evt_1", "1001", &good, body), Err(Error::NoMatch));
        assert_eq!(
            ok("evt_1", "1000", &good, b"{\"a\":2}"),
            Err(Error::NoMatch)
        );
        let other = sign(
            &Secret::from_key(b"other".to_vec()).unwrap(),
            "evt_1",
            1_000,
            body,
        );
        assert_eq!(ok("evt_1", "1000", &other, body), Err(Error::NoMatch));
        assert_eq!(
            ok("evt_1", "1000", &format!("{other} {good}"), body),
            Ok(())
        );
        assert_eq!(ok("evt_1", "1000", "v2,abc", body), Err(Error::NoMatch));
        assert_eq!(ok("evt_1", "soon", &good, body), Err(Error::BadTimestamp));
    }

    #[test]
    fn the_timestamp_must_be_within_the_tolerance_either_way() {
        let secret = Secret::parse(SECRET).unwrap();
        let sig = sign(&secret, "evt_1", 10_000, b"");
        let headers = Headers {
            id: "evt_1",
            timestamp: "10000",
            signature: &sig,
        };
        assert_eq!(verify(&secret, &headers, b"", 10_300), Ok(()));
        assert_eq!(verify(&secret, &headers, b"", 9_700), Ok(()));
        assert_eq!(verify(&secret, &headers, b"", 10_301), Err(Error::Stale));
        assert_eq!(verify(&secret, &headers, b"", 9_699), Err(Error::Stale));
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused() {
        let secret = Secret::parse(SECRET).unwrap();
        assert_eq!(secret.reveal(), SECRET);
        assert_eq!(format!("{secret:?}"), "Secret(..)");
        for bad in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_***"] {
            assert_eq!(Secret::parse(bad).err(), Some(Error::BadSecret), "{bad}");
        }
    }
}
