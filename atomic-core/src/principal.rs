//! Who is asking ([`Principal`]) and who owns a record ([`Owner`]), and the one rule joining
//! them: the platform sees everything, a merchant sees only what it owns.

use std::fmt;

use crate::id::MerchantId;

/// The caller of an operation, as established by its API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Principal {
    /// The platform key (`MERCHANT_API_KEY_HASH`): may act for every merchant.
    Platform,
    /// A merchant key: may act only for its merchant.
    Merchant(MerchantId),
}

impl Principal {
    /// Whether this caller may see or use something owned by `owner`.
    pub fn can_access(&self, owner: Owner) -> bool {
        match (self, owner) {
            (Principal::Platform, _) => true,
            (Principal::Merchant(me), Owner::Merchant(them)) => *me == them,
            (Principal::Merchant(_), Owner::Platform) => false,
        }
    }

    /// The owner of what this caller creates.
    pub fn as_owner(&self) -> Owner {
        match self {
            Principal::Platform => Owner::Platform,
            Principal::Merchant(id) => Owner::Merchant(*id),
        }
    }

    /// The merchant, if this is a merchant key.
    pub fn merchant(&self) -> Option<MerchantId> {
        match self {
            Principal::Platform => None,
            Principal::Merchant(id) => Some(*id),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Platform => f.write_str("platform"),
            Principal::Merchant(id) => write!(f, "merchant:{id}"),
        }
    }
}

/// Who owns an account (and so the payments into it and their entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The platform: system accounts and accounts created with the platform key.
    Platform,
    /// A merchant.
    Merchant(MerchantId),
}

impl Owner {
    /// The merchant, if a merchant owns it.
    pub fn merchant(&self) -> Option<MerchantId> {
        match self {
            Owner::Platform => None,
            Owner::Merchant(id) => Some(*id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merchants_see_only_their_own() {
        let a = MerchantId::generate();
        let b = MerchantId::generate();
        assert!(Principal::Platform.can_access(Owner::Merchant(a)));
        assert!(Principal::Platform.can_access(Owner::Platform));
        assert!(Principal::Merchant(a).can_access(Owner::Merchant(a)));
        assert!(!Principal::Merchant(a).can_access(Owner::Merchant(b)));
        assert!(!Principal::Merchant(a).can_access(Owner::Platform));
    }
}
