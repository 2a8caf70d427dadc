//! [`RecordingWebhooks`]: the outside network for core's own tests and the default
//! [`crate::Ports::in_memory`]: it resolves IP literals only and keeps every request it is
//! given instead of sending it, answering a status the test sets. It never touches a network;
//! servers wire a real sender.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::ports::{HostResolver, ResolveError, SendOutcome, WebhookRequest, WebhookSender};
use crate::webhook::{AddressPolicy, WebhookUrl};

/// Records webhook requests; see the module documentation.
#[derive(Clone, Debug)]
pub struct RecordingWebhooks {
    inner: Arc<Mutex<Recorded>>,
}

#[derive(Debug)]
struct Recorded {
    sent: Vec<WebhookRequest>,
    answer: SendOutcome,
}

impl Default for RecordingWebhooks {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Recorded {
                sent: Vec::new(),
                answer: SendOutcome::Answered(204),
            })),
        }
    }
}

impl RecordingWebhooks {
    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every request given so far, in order.
    pub fn sent(&self) -> Vec<WebhookRequest> {
        self.lock().sent.clone()
    }

    /// Answers every later request with `outcome` (the default: `204`).
    pub fn answer(&self, outcome: SendOutcome) {
        self.lock().answer = outcome;
    }
}

#[async_trait]
impl HostResolver for RecordingWebhooks {
    async fn resolve(&self, url: &WebhookUrl) -> Result<Vec<IpAddr>, ResolveError> {
        url.literal_ip()
            .map(|ip| vec![ip])
            .ok_or_else(|| ResolveError("no name resolves without a network".into()))
    }
}

#[async_trait]
impl WebhookSender for RecordingWebhooks {
    async fn send(&self, request: &WebhookRequest, policy: AddressPolicy) -> SendOutcome {
        if let Some(Err(range)) = request.url.literal_ip().map(|ip| policy.admits(ip)) {
            return SendOutcome::Failed(format!("refused address: {range}"));
        }
        let mut recorded = self.lock();
        recorded.sent.push(request.clone());
        recorded.answer.clone()
    }
}
