//! Merchants: the tenants of the platform. A merchant owns its primary account (where a
//! payment goes when it names no `merchantId`), the accounts it opens, and its API keys.

use crate::account::Account;
use crate::api_key::{ApiKey, RawApiKey};
use crate::error::Error;
use crate::fresh::Fresh;
use crate::id::{AccountId, MerchantId};
use crate::money::Currency;
use crate::principal::Owner;
use crate::text::Name;
use crate::time::Timestamp;

/// A merchant's name (see [`Name`]).
pub type MerchantName = Name;

/// A merchant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merchant {
    /// Id.
    pub id: MerchantId,
    /// Display name.
    pub name: MerchantName,
    /// The account payments go to when they name none.
    pub primary_account: AccountId,
    /// When it was onboarded.
    pub created_at: Timestamp,
}

/// Everything `POST /merchants` creates, written in one store transaction.
#[derive(Clone, Debug)]
pub struct Onboarding {
    /// The merchant.
    pub merchant: Merchant,
    /// Its primary account.
    pub account: Account,
    /// Its first API key (the record; the raw key is returned to the caller once).
    pub key: ApiKey,
}

impl Onboarding {
    /// A new merchant, its empty primary account (named after it) and its first key, each
    /// naming the others; the raw key is for the caller, once.
    pub fn new(
        name: MerchantName,
        currency: Currency,
        now: Timestamp,
    ) -> Result<(Fresh<Self>, RawApiKey), Error> {
        let id = MerchantId::generate();
        let account = Account::open(name.clone(), currency, Owner::Merchant(id), now);
        let (key, raw) = ApiKey::mint(id, now)?;
        let merchant = Merchant {
            id,
            name,
            primary_account: account.id,
            created_at: now,
        };
        let account = account.into_inner();
        Ok((
            Fresh::new(Self {
                merchant,
                account,
                key,
            }),
            raw,
        ))
    }
}
