//! Merchants: the tenants of the platform. A merchant owns its primary account (where a
//! payment goes when it names no `merchantId`), the accounts it opens, and its API keys.

use crate::account::Account;
use crate::api_key::ApiKey;
use crate::error::Invalid;
use crate::id::{AccountId, MerchantId};
use crate::text;
use crate::time::Timestamp;

/// A merchant's display name: 1..=255 characters, one line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MerchantName(String);

impl MerchantName {
    /// Validates a name.
    pub fn parse(name: impl Into<String>) -> Result<Self, Invalid> {
        let name = name.into();
        text::check(&name, 1, 255, text::Lines::Single)?;
        Ok(Self(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

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
