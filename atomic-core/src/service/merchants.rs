//! Onboarding merchants (platform key only): the merchant, its primary account and its first
//! API key are created together or not at all.

use std::sync::Arc;

use crate::account::Account;
use crate::api_key::{ApiKey, RawApiKey};
use crate::error::{Error, Result};
use crate::id::MerchantId;
use crate::idempotency::Completion;
use crate::merchant::{Merchant, MerchantName, Onboarding};
use crate::money::Currency;
use crate::ports::{MerchantStore, Ports};
use crate::principal::{Owner, Principal};
use crate::time::Clock;

/// Merchants.
#[derive(Clone)]
pub struct MerchantService {
    merchants: Arc<dyn MerchantStore>,
    clock: Arc<dyn Clock>,
}

impl MerchantService {
    pub(super) fn new(ports: &Ports) -> Self {
        Self {
            merchants: ports.store.merchants().clone(),
            clock: ports.clock.clone(),
        }
    }

    /// Builds a merchant, its primary account (named after it) and its first key; writes
    /// nothing. Only the platform may onboard merchants.
    pub fn prepare(
        &self,
        caller: Principal,
        name: MerchantName,
        currency: Currency,
    ) -> Result<(Onboarding, RawApiKey)> {
        if caller != Principal::Platform {
            return Err(Error::Forbidden);
        }
        let now = self.clock.now();
        let merchant_id = MerchantId::generate();
        // The primary account carries the merchant's name.
        let account = Account::open(name.clone(), currency, Owner::Merchant(merchant_id), now);
        let (key, raw) = ApiKey::mint(merchant_id, now)?;
        let merchant = Merchant {
            id: merchant_id,
            name,
            primary_account: account.id,
            created_at: now,
        };
        Ok((
            Onboarding {
                merchant,
                account,
                key,
            },
            raw,
        ))
    }

    /// Stores a prepared onboarding (and its idempotency completion) in one transaction.
    pub async fn submit(
        &self,
        onboarding: &Onboarding,
        completion: Option<Completion>,
    ) -> Result<()> {
        self.merchants.onboard(onboarding, completion).await
    }
}
