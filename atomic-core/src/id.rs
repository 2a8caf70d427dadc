//! Typed identifiers. Every id is a UUID; the ones we mint are version 7, so they sort by
//! creation time, which is what newest-first keyset pagination orders by.

use uuid::Uuid;

use crate::error::Invalid;

/// Defines a UUID newtype with `generate`, `from_uuid`, `as_uuid`, `Display`, `Debug` and `FromStr`.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(::uuid::Uuid);

        impl $name {
            /// Mints a new time-ordered (v7) id.
            pub fn generate() -> Self {
                Self(::uuid::Uuid::now_v7())
            }

            /// Wraps an existing UUID (any version).
            pub const fn from_uuid(uuid: ::uuid::Uuid) -> Self {
                Self(uuid)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> ::uuid::Uuid {
                self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.hyphenated())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::error::Invalid;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $crate::id::parse_uuid(s).map(Self)
            }
        }

        impl From<::uuid::Uuid> for $name {
            fn from(uuid: ::uuid::Uuid) -> Self {
                Self(uuid)
            }
        }
    };
}

pub(crate) use id_type;

/// Parses a UUID in its canonical hyphenated form only (36 characters), so an id has one spelling.
pub fn parse_uuid(s: &str) -> Result<Uuid, Invalid> {
    if s.len() != 36 {
        return Err(Invalid::new("must be a UUID"));
    }
    Uuid::try_parse(s).map_err(|_| Invalid::new("must be a UUID"))
}

id_type!(
    /// Identifies a payment.
    PaymentId
);
id_type!(
    /// Identifies a ledger account (a payment's `merchantId` is the credited account's id).
    AccountId
);
id_type!(
    /// Identifies a refund.
    RefundId
);
id_type!(
    /// Identifies a merchant: the tenant that owns accounts and API keys.
    MerchantId
);
id_type!(
    /// Identifies an API key record (never the key itself).
    ApiKeyId
);
id_type!(
    /// Identifies a ledger transaction (one balanced DEBIT/CREDIT pair).
    TransactionId
);
id_type!(
    /// Identifies one ledger entry.
    EntryId
);
id_type!(
    /// Identifies a webhook endpoint.
    WebhookEndpointId
);
id_type!(
    /// Identifies an event.
    EventId
);
id_type!(
    /// Identifies a webhook delivery: one event for one endpoint.
    DeliveryId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_ordered_by_creation() {
        let ids: Vec<PaymentId> = (0..1000).map(|_| PaymentId::generate()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn only_the_hyphenated_form_parses() {
        let id = AccountId::generate();
        assert_eq!(id.to_string().parse::<AccountId>(), Ok(id));
        assert!(
            id.as_uuid()
                .simple()
                .to_string()
                .parse::<AccountId>()
                .is_err()
        );
        assert!("not-a-uuid".parse::<AccountId>().is_err());
        assert!(format!("{{{id}}}").parse::<AccountId>().is_err());
    }
}
