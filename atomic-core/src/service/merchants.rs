//! Onboarding merchants (platform key only): the merchant, its primary account and its first
//! API key are created together or not at all.

use std::sync::Arc;

use crate::api_key::RawApiKey;
use crate::error::{Error, Result};
use crate::fresh::Fresh;
use crate::id::MerchantId;
use crate::idempotency::{Completion, IdempotencyKey};
use crate::merchant::{Merchant, MerchantName, Onboarding};
use crate::money::Currency;
use crate::ports::{MerchantStore, Ports};
use crate::principal::Principal;
use crate::service::idempotent::{
    Idempotency, IdempotentWrites, Written, id_response, replayed_id,
};
use crate::time::Clock;

/// Merchants.
#[derive(Clone)]
pub struct MerchantService {
    merchants: Arc<dyn MerchantStore>,
    clock: Arc<dyn Clock>,
    writes: IdempotentWrites,
}

/// A merchant as onboarding answers it: with its first key in the clear when the onboarding
/// ran now, without it when the answer is a replay (a secret is shown once).
#[derive(Clone, Debug)]
pub struct Onboarded {
    /// The merchant.
    pub merchant: Merchant,
    /// Its first API key, raw; `None` in a replay.
    pub raw_key: Option<RawApiKey>,
}

impl MerchantService {
    pub(super) fn new(ports: &Ports, writes: IdempotentWrites) -> Self {
        Self {
            merchants: ports.store.merchants().clone(),
            clock: ports.clock.clone(),
            writes,
        }
    }

    /// Builds a merchant, its primary account (named after it) and its first key; writes
    /// nothing. Only the platform may onboard merchants.
    pub fn prepare(
        &self,
        caller: Principal,
        name: MerchantName,
        currency: Currency,
    ) -> Result<(Fresh<Onboarding>, RawApiKey)> {
        if caller != Principal::Platform {
            return Err(Error::Forbidden);
        }
        Onboarding::new(name, currency, self.clock.now())
    }

    /// Stores a prepared onboarding (and its idempotency completion) in one transaction.
    pub async fn submit(
        &self,
        onboarding: &Fresh<Onboarding>,
        completion: Option<Completion>,
    ) -> Result<()> {
        self.merchants.onboard(onboarding, completion).await
    }

    /// Onboards a merchant: prepares and submits it in one call, idempotent under `key` as
    /// [`crate::service::PaymentService::create`] is.
    pub async fn create(
        &self,
        caller: Principal,
        name: MerchantName,
        currency: Currency,
        key: Option<IdempotencyKey>,
    ) -> Result<Onboarded> {
        let fields: [&[u8]; 2] = [name.as_str().as_bytes(), currency.as_str().as_bytes()];
        let idempotency = Idempotency::keyed(key, "merchant", &fields);
        let written = self
            .writes
            .run(
                caller,
                idempotency.as_ref(),
                |_| async { self.prepare(caller, name, currency) },
                |(onboarding, _)| id_response(onboarding.merchant.id.as_uuid()),
                || {},
                |(onboarding, raw), completion| {
                    let service = self.clone();
                    async move {
                        service.submit(&onboarding, completion).await?;
                        let merchant = onboarding.into_inner().merchant;
                        Ok(Onboarded {
                            merchant,
                            raw_key: Some(raw),
                        })
                    }
                },
            )
            .await?;
        match written {
            Written::New(onboarded) => Ok(onboarded),
            Written::Replayed(stored) => {
                let id = MerchantId::from_uuid(replayed_id(&stored)?);
                let merchant = self.merchants.merchant(id).await?.ok_or(Error::NotFound)?;
                Ok(Onboarded {
                    merchant,
                    raw_key: None,
                })
            }
        }
    }
}
