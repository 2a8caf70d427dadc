//! A webhook endpoint: where its owner's events go (API.md *Webhooks*). A merchant's endpoint
//! receives that merchant's events, the platform's receives every merchant's; an owner has at
//! most [`MAX_ENDPOINTS_PER_OWNER`]. Its signing secret is made here, from 32 random bytes, and
//! shown to the caller once.

use atomic_webhook_signature::Secret;

use super::{Subscription, WebhookUrl};
use crate::error::Error;
use crate::fresh::Fresh;
use crate::id::WebhookEndpointId;
use crate::payment::Description;
use crate::principal::Owner;
use crate::time::Timestamp;

/// How many endpoints one owner may have (more is 422 `limit_reached`).
pub const MAX_ENDPOINTS_PER_OWNER: usize = 16;

/// A webhook endpoint.
#[derive(Clone, Debug)]
pub struct WebhookEndpoint {
    /// Its id.
    pub id: WebhookEndpointId,
    /// Whose events it receives (the platform's: every merchant's).
    pub owner: Owner,
    /// Where deliveries are sent.
    pub url: WebhookUrl,
    /// Which events it receives.
    pub subscription: Subscription,
    /// The owner's note, if any (bounded as a payment's description is).
    pub description: Option<Description>,
    /// The signing secret (never logged: its `Debug` hides it).
    pub secret: Secret,
    /// When it was made.
    pub created_at: Timestamp,
}

impl WebhookEndpoint {
    /// A new endpoint with a fresh secret from the operating system's random source.
    pub fn new(
        owner: Owner,
        url: WebhookUrl,
        subscription: Subscription,
        description: Option<Description>,
        now: Timestamp,
    ) -> Result<Fresh<Self>, Error> {
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key).map_err(|e| Error::backend(e.to_string()))?;
        let secret = Secret::from_key(key).map_err(|e| Error::backend(e.to_string()))?;
        Ok(Fresh::new(Self {
            id: WebhookEndpointId::generate(),
            owner,
            url,
            subscription,
            description,
            secret,
            created_at: now,
        }))
    }

    /// Whether an event of `merchant` (the platform's own accounts: `Owner::Platform`) of
    /// type `event` is sent here.
    pub fn receives(&self, merchant: Owner, event: super::EventType) -> bool {
        let mine = match self.owner {
            Owner::Platform => true,
            Owner::Merchant(_) => self.owner == merchant,
        };
        mine && self.subscription.includes(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::MerchantId;
    use crate::webhook::EventType;

    fn endpoint(owner: Owner, events: &[&str]) -> WebhookEndpoint {
        WebhookEndpoint::new(
            owner,
            WebhookUrl::parse("https://hooks.example.com/atomic").unwrap(),
            Subscription::parse(events).unwrap(),
            None,
            Timestamp::now(),
        )
        .unwrap()
        .into_inner()
    }

    #[test]
    fn each_endpoint_gets_its_own_32_byte_secret_shown_as_whsec() {
        let a = endpoint(Owner::Platform, &["*"]);
        let b = endpoint(Owner::Platform, &["*"]);
        let shown = a.secret.reveal();
        let encoded = shown.strip_prefix("whsec_").unwrap();
        assert_eq!(encoded.len(), 44, "base64 of 32 bytes");
        assert_ne!(shown, b.secret.reveal());
        assert!(
            !format!("{a:?}").contains(encoded),
            "Debug never shows the secret"
        );
    }

    #[test]
    fn a_merchant_endpoint_receives_its_merchant_and_the_platform_one_everyone() {
        let (m, other) = (MerchantId::generate(), MerchantId::generate());
        let mine = endpoint(Owner::Merchant(m), &["payment.succeeded"]);
        assert!(mine.receives(Owner::Merchant(m), EventType::PaymentSucceeded));
        assert!(!mine.receives(Owner::Merchant(other), EventType::PaymentSucceeded));
        assert!(!mine.receives(Owner::Platform, EventType::PaymentSucceeded));
        assert!(!mine.receives(Owner::Merchant(m), EventType::RefundFailed));
        let platform = endpoint(Owner::Platform, &["*"]);
        assert!(platform.receives(Owner::Merchant(other), EventType::RefundFailed));
        assert!(platform.receives(Owner::Platform, EventType::PaymentCanceled));
    }
}
