//! The services: what the HTTP layer (or a Rust application) calls. Each is a cheap clone
//! over `Arc`'d ports. Creating operations come in two steps, `prepare` (check and build the
//! record, writing nothing) and `submit` (write it, with the idempotency completion, in one
//! store transaction), so the caller can render the exact response that will be stored for
//! replays before anything is written.

mod accounts;
mod api_keys;
mod dispatcher;
mod events;
mod idempotent;
mod merchants;
mod payments;
mod refunds;
mod sweeper;
mod webhooks;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;

pub use accounts::AccountService;
pub use api_keys::{ApiKeyService, Minted};
pub use dispatcher::{Dispatcher, DispatcherConfig};
pub use events::EventService;
pub use idempotent::{Idempotency, IdempotentWrites, Written};
pub use merchants::{MerchantService, Onboarded};
pub use payments::{ENQUEUE_TIMEOUT, ENQUEUE_WAIT, PaymentRequest, PaymentService};
pub use refunds::RefundService;
pub use sweeper::{SweepConfig, SweepReport, Sweeper};
/// The shutdown signal the worker, the sweep and the dispatcher run until (`cancel()` it to
/// stop them); re-exported so embedders need no tokio-util of their own.
pub use tokio_util::sync::CancellationToken;
pub use webhooks::{CreatedEndpoint, EndpointRequest, WebhookService};
pub use worker::{Backoff, Processed, Worker, WorkerConfig};

use crate::account::Account;
use crate::api_key::KeyHash;
use crate::error::Result;
use crate::id::AccountId;
use crate::idempotency::{Claim, ClaimOutcome, Fingerprint, IdempotencyKey, IdempotencyPolicy};
use crate::money::{Currencies, Currency};
use crate::ports::Ports;
use crate::principal::Principal;
use crate::webhook::AddressPolicy;

/// What the core is configured with (parsed once, at start-up, by the application).
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Accepted currencies; each gets a system account at start-up.
    pub currencies: Currencies,
    /// The platform key's SHA-256 (`MERCHANT_API_KEY_HASH`), if any.
    pub platform_key: Option<KeyHash>,
    /// Idempotency key lifetime and lock timeout.
    pub idempotency: IdempotencyPolicy,
    /// How long an authenticated merchant key is remembered without a store lookup (zero:
    /// every request looks its key up). A key revoked through this process stops working at
    /// once; one revoked through another process, within this bound.
    pub api_key_cache_ttl: std::time::Duration,
    /// How long an authorization may wait for its capture (`AUTHORIZATION_TTL`); past it a
    /// capture is refused and the sweep cancels the payment.
    pub authorization_ttl: std::time::Duration,
    /// Which addresses webhook endpoints may resolve to (`WEBHOOK_ALLOW_PRIVATE`).
    pub webhook_policy: AddressPolicy,
    /// How long events are kept (`EVENT_RETENTION`); the sweep deletes older ones.
    pub event_retention: std::time::Duration,
}

/// The default `EVENT_RETENTION`: 30 days.
pub const DEFAULT_EVENT_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(30 * 24 * 3600);

/// The default `AUTHORIZATION_TTL`: 7 days.
pub const DEFAULT_AUTHORIZATION_TTL: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 3600);

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            currencies: Currencies::default(),
            platform_key: None,
            idempotency: IdempotencyPolicy::default(),
            api_key_cache_ttl: std::time::Duration::ZERO,
            authorization_ttl: DEFAULT_AUTHORIZATION_TTL,
            webhook_policy: AddressPolicy::default(),
            event_retention: DEFAULT_EVENT_RETENTION,
        }
    }
}

/// Whether each dependency answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// The ledger store.
    pub store: bool,
    /// The job queue.
    pub queue: bool,
    /// The rate limiter.
    pub limiter: bool,
}

impl Readiness {
    /// Whether everything answers.
    pub fn all_up(&self) -> bool {
        self.store && self.queue && self.limiter
    }
}

/// Every service, built on one set of ports.
#[derive(Clone)]
pub struct Services {
    /// Payments.
    pub payments: PaymentService,
    /// Refunds.
    pub refunds: RefundService,
    /// Accounts and their entries.
    pub accounts: AccountService,
    /// Merchant onboarding.
    pub merchants: MerchantService,
    /// API keys and authentication.
    pub api_keys: ApiKeyService,
    /// Events.
    pub events: EventService,
    /// Webhook endpoints and deliveries.
    pub webhooks: WebhookService,
    writes: IdempotentWrites,
    ports: Ports,
    config: Arc<CoreConfig>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

impl Services {
    /// Builds the services and makes sure every supported currency has its system account.
    pub async fn start(ports: Ports, config: CoreConfig) -> Result<Self> {
        let mut system = HashMap::new();
        for currency in config.currencies.iter() {
            let candidate = Account::system(currency, ports.clock.now());
            let account = ports
                .store
                .accounts()
                .ensure_system_account(&candidate)
                .await?;
            system.insert(currency, account.id);
        }
        let system: Arc<HashMap<Currency, AccountId>> = Arc::new(system);
        let writes = IdempotentWrites::new(ports.store.idempotency().clone(), config.idempotency);
        Ok(Self {
            payments: PaymentService::new(&ports, system, config.authorization_ttl, writes.clone()),
            refunds: RefundService::new(&ports, writes.clone()),
            accounts: AccountService::new(&ports, writes.clone()),
            merchants: MerchantService::new(&ports, writes.clone()),
            api_keys: ApiKeyService::new(
                &ports,
                config.platform_key,
                config.api_key_cache_ttl,
                writes.clone(),
            ),
            events: EventService::new(&ports),
            webhooks: WebhookService::new(&ports, config.webhook_policy, writes.clone()),
            writes,
            ports,
            config: Arc::new(config),
        })
    }

    /// The ports underneath.
    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The idempotent-write protocol, for callers that render their own stored answers (the
    /// HTTP layer keeps the exact response body for replays).
    pub fn idempotent_writes(&self) -> &IdempotentWrites {
        &self.writes
    }

    /// Claims an idempotency key for `scope` under the configured policy.
    pub async fn claim_idempotency_key(
        &self,
        scope: Principal,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
    ) -> Result<ClaimOutcome> {
        self.ports
            .store
            .idempotency()
            .claim(scope, key, fingerprint, self.config.idempotency)
            .await
    }

    /// Releases a held idempotency claim (the operation failed and created nothing).
    pub async fn release_idempotency_key(&self, claim: &Claim) -> Result<()> {
        self.ports.store.idempotency().release(claim).await
    }

    /// A worker over these ports.
    pub fn worker(&self, config: WorkerConfig) -> Worker {
        Worker::new(&self.ports, config)
    }

    /// A recovery sweeper over these ports.
    pub fn sweeper(&self, config: SweepConfig) -> Sweeper {
        Sweeper::new(
            &self.ports,
            config,
            self.config.authorization_ttl,
            self.config.event_retention,
        )
    }

    /// A webhook dispatcher over these ports, connecting only where the configured policy
    /// allows.
    pub fn dispatcher(&self, config: DispatcherConfig) -> Dispatcher {
        Dispatcher::new(
            &self.ports,
            DispatcherConfig {
                policy: self.config.webhook_policy,
                ..config
            },
        )
    }

    /// Asks every dependency at once whether it answers; one that has not answered `within`
    /// counts as down, so a hung dependency never holds the answer longer.
    pub async fn readiness(&self, within: std::time::Duration) -> Readiness {
        async fn answers(
            within: std::time::Duration,
            ping: impl Future<Output = Result<()>>,
        ) -> bool {
            matches!(tokio::time::timeout(within, ping).await, Ok(Ok(())))
        }
        let (store, queue, limiter) = tokio::join!(
            answers(within, self.ports.store.accounts().ping()),
            answers(within, self.ports.queue.ping()),
            answers(within, self.ports.limiter.ping()),
        );
        Readiness {
            store,
            queue,
            limiter,
        }
    }
}
