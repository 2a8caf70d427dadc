//! Merchants: the tenants of the platform. A merchant owns its primary account (where a
//! payment goes when it names no `merchantId`), the accounts it opens, and its API keys.

use crate::account::Account;
use crate::api_key::ApiKey;
use crate::id::{AccountId, MerchantId};
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
