//! Payments: create, capture, cancel, read. Creation checks the credited account (exists, is
//! not a system account, belongs to the caller, has the payment's currency), stores the payment
//! `PENDING`, then enqueues a job. A capture records the intent (`AUTHORIZED -> PROCESSING`)
//! and enqueues a job; a worker posts it. A cancel moves no money, so it is one
//! compare-and-set. The store write is the commitment: if the enqueue fails the request is
//! still accepted, and the sweep enqueues its job later.

use std::collections::HashMap;
use std::sync::Arc;

use quick_cache::sync::Cache;

use crate::account::AccountKind;
use crate::error::{Error, Invalid, Result};
use crate::failpoint;
use crate::fresh::Fresh;
use crate::id::{AccountId, PaymentId};
use crate::idempotency::{Claim, Completion, Fingerprint, IdempotencyKey};
use crate::metadata::Metadata;
use crate::money::{Amount, Currency};
use crate::page::{Page, PageRequest};
use crate::payment::{
    CancellationReason, CaptureMethod, CardSource, Description, NewPayment, Payment, PaymentStatus,
};
use crate::ports::{
    AccountStore, Job, JobQueue, MerchantStore, PaymentFilter, PaymentStore, Ports,
};
use crate::principal::{Owner, Principal};
use crate::telemetry;
use crate::time::Clock;

use super::idempotent::{
    Idempotency, IdempotentWrites, Written, fingerprint, id_response, replayed_id,
};

/// Most merchant accounts remembered at once; past it the least used are evicted.
const ACCOUNT_CACHE_CAPACITY: usize = 100_000;

/// What a payment needs of the account it credits. None of it ever changes after the account
/// is opened (only the balance does, and accounts are never deleted), so it can be remembered
/// without a bound in time, saving a store read per payment.
#[derive(Clone, Copy, Debug)]
struct Credited {
    id: AccountId,
    owner: Owner,
    currency: Currency,
}

/// How long the hint enqueue of an accepted payment may take before it is left to the sweep.
/// Request timeouts must be longer (the server refuses shorter ones).
pub const ENQUEUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long an accepted payment's answer waits for its enqueue; past it the enqueue goes on in
/// the background (up to [`ENQUEUE_TIMEOUT`]). So a stalled queue adds at most this to a request
/// that already waited on the stalled rate limiter.
pub const ENQUEUE_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// A payment request, already parsed into domain values.
#[derive(Clone, Debug)]
pub struct PaymentRequest {
    /// The account to credit; `None` means the caller's own primary account.
    pub merchant_account: Option<AccountId>,
    /// Amount (at most [`crate::MAX_PAYMENT_AMOUNT`]).
    pub amount: Amount,
    /// Currency.
    pub currency: Currency,
    /// Card token.
    pub source: CardSource,
    /// Description; `None` means the default.
    pub description: Option<Description>,
    /// Automatic (the default) or manual capture.
    pub capture_method: CaptureMethod,
    /// The merchant's own key-value pairs.
    pub metadata: Metadata,
}

impl PaymentRequest {
    /// What the request is, for its idempotency key: every field, so a request that differs
    /// in any of them is a different request.
    pub fn fingerprint(&self) -> Fingerprint {
        let merchant = self
            .merchant_account
            .map(|id| id.as_uuid().hyphenated().to_string())
            .unwrap_or_default();
        let amount = self.amount.minor_units().to_be_bytes();
        let description = self
            .description
            .as_ref()
            .map(|d| d.as_str())
            .unwrap_or("\0");
        let metadata = self.metadata.canonical();
        let fields: [&[u8]; 7] = [
            merchant.as_bytes(),
            &amount,
            self.currency.as_str().as_bytes(),
            self.source.expose().as_bytes(),
            description.as_bytes(),
            self.capture_method.as_str().as_bytes(),
            metadata.as_bytes(),
        ];
        fingerprint("create_payment", &fields)
    }
}

/// Payments: create, capture, cancel, read, list.
#[derive(Clone)]
pub struct PaymentService {
    accounts: Arc<dyn AccountStore>,
    payments: Arc<dyn PaymentStore>,
    merchants: Arc<dyn MerchantStore>,
    queue: Arc<dyn JobQueue>,
    clock: Arc<dyn Clock>,
    system_accounts: Arc<HashMap<Currency, AccountId>>,
    merchant_accounts: Arc<Cache<AccountId, Credited>>,
    authorization_ttl: std::time::Duration,
    writes: IdempotentWrites,
}

impl PaymentService {
    pub(super) fn new(
        ports: &Ports,
        system_accounts: Arc<HashMap<Currency, AccountId>>,
        authorization_ttl: std::time::Duration,
        writes: IdempotentWrites,
    ) -> Self {
        Self {
            accounts: ports.store.accounts().clone(),
            payments: ports.store.payments().clone(),
            merchants: ports.store.merchants().clone(),
            queue: ports.queue.clone(),
            clock: ports.clock.clone(),
            system_accounts,
            merchant_accounts: Arc::new(Cache::new(ACCOUNT_CACHE_CAPACITY)),
            authorization_ttl,
            writes,
        }
    }

    /// The merchant account `id`, if it is one: remembered, or read once from the store.
    async fn merchant_account(&self, id: AccountId) -> Result<Option<Credited>> {
        if let Some(known) = self.merchant_accounts.get(&id) {
            return Ok(Some(known));
        }
        let Some(account) = self
            .accounts
            .account(id, Principal::Platform)
            .await?
            .filter(|a| a.kind == AccountKind::Merchant)
        else {
            return Ok(None);
        };
        let credited = Credited {
            id: account.id,
            owner: account.owner,
            currency: account.currency,
        };
        self.merchant_accounts.insert(id, credited);
        Ok(Some(credited))
    }

    /// Checks a request and builds its `PENDING` payment; writes nothing. With a held
    /// idempotency `claim`, the payment carries its key (and must be submitted with its
    /// completion): a key is never on a payment without the claim that guards it.
    pub async fn prepare(
        &self,
        caller: Principal,
        request: PaymentRequest,
        claim: Option<&Claim>,
    ) -> Result<Fresh<Payment>> {
        if claim.is_some_and(|c| c.scope != caller) {
            return Err(Error::IdempotencyClaimLost);
        }
        // The payment limit holds for library callers too, whatever Amount they built.
        Amount::for_payment(request.amount.minor_units())
            .map_err(|e| Error::invalid_field("amount", e))?;
        let funding = *self.system_accounts.get(&request.currency).ok_or_else(|| {
            Error::invalid_field("currency", Invalid::new("unsupported currency"))
        })?;
        let account = self
            .credited_account(caller, request.merchant_account, request.currency)
            .await?;
        Ok(Payment::new(
            NewPayment {
                merchant_account: account.id,
                funding_account: funding,
                owner: account.owner,
                amount: request.amount,
                currency: request.currency,
                source: request.source,
                description: request.description.unwrap_or_default(),
                capture_method: request.capture_method,
                metadata: request.metadata,
                idempotency_key: claim.map(|c| c.key.clone()),
                created_by: caller,
            },
            self.clock.now(),
        ))
    }

    /// The account a payment credits: the one named, or the calling merchant's primary
    /// account. Read as the platform, then decided: 404 for nothing or a system account, 403
    /// for an account of another merchant (API.md), and only then the currency compared, so
    /// a foreign account's currency is never revealed.
    async fn credited_account(
        &self,
        caller: Principal,
        named: Option<AccountId>,
        currency: Currency,
    ) -> Result<Credited> {
        let target = match (named, caller) {
            (Some(id), _) => id,
            (None, Principal::Merchant(merchant)) => {
                self.merchants
                    .merchant(merchant)
                    .await?
                    .ok_or(Error::MerchantNotFound)?
                    .primary_account
            }
            (None, Principal::Platform) => {
                return Err(Error::invalid_field(
                    "merchantId",
                    Invalid::new("is required with the platform key"),
                ));
            }
        };
        let account = self
            .merchant_account(target)
            .await?
            .ok_or(Error::MerchantNotFound)?;
        if !caller.can_access(account.owner) {
            return Err(Error::Forbidden);
        }
        if account.currency != currency {
            return Err(Error::CurrencyMismatch {
                account: account.currency,
                payment: currency,
            });
        }
        Ok(account)
    }

    /// Stores a prepared payment (and its idempotency completion) in one transaction, then
    /// enqueues its job. Once this returns `Ok`, the payment will be settled.
    ///
    /// The work runs as a task of its own, so a caller that stops waiting (a client that hangs
    /// up, a dropped future) cancels none of it: a payment the store has committed is always
    /// enqueued at once, never left to the sweep.
    ///
    /// Nothing after the store write can fail the answer or hold it long: the job is only a
    /// wake-up hint, the answer waits for its enqueue at most [`ENQUEUE_WAIT`], and a lost one
    /// is re-enqueued by the sweep. So a stalled queue never turns an accepted payment into an
    /// error (which a client would retry, paying twice), as long as requests may run longer
    /// than that bound.
    pub async fn submit(
        &self,
        payment: &Fresh<Payment>,
        completion: Option<Completion>,
    ) -> Result<()> {
        let (service, payment) = (self.clone(), payment.clone());
        tokio::spawn(async move { service.store_and_enqueue(&payment, completion).await })
            .await
            .map_err(Error::backend)?
    }

    async fn store_and_enqueue(
        &self,
        payment: &Fresh<Payment>,
        completion: Option<Completion>,
    ) -> Result<()> {
        self.payments.create_payment(payment, completion).await?;
        telemetry::payment_created(payment.capture_method);
        failpoint::hit(failpoint::PAYMENT_AFTER_INSERT).await;
        enqueue_hint(&self.queue, Job::Payment(payment.id)).await;
        tracing::info!(
            payment_id = %payment.id,
            amount = payment.amount.minor_units(),
            currency = %payment.currency,
            capture_method = payment.capture_method.as_str(),
            source = %payment.source.masked(),
            "payment accepted"
        );
        Ok(())
    }

    /// Creates a payment: prepares and submits it in one call. Under an idempotency `key`, a
    /// second call with the same request answers the payment the first one created (as it
    /// stands now) and creates nothing; the same key with a different request is
    /// [`Error::IdempotencyKeyReused`].
    pub async fn create(
        &self,
        caller: Principal,
        request: PaymentRequest,
        key: Option<IdempotencyKey>,
    ) -> Result<Payment> {
        let idempotency = key.map(|key| Idempotency {
            key,
            fingerprint: request.fingerprint(),
        });
        let written = self
            .writes
            .run(
                caller,
                idempotency.as_ref(),
                |claim| async move { self.prepare(caller, request, claim.as_ref()).await },
                |payment| id_response(payment.id.as_uuid()),
                || {},
                |payment, completion| {
                    let service = self.clone();
                    async move {
                        service.submit(&payment, completion).await?;
                        Ok(payment.into_inner())
                    }
                },
            )
            .await?;
        self.answer(caller, written).await
    }

    /// Captures `amount` (all that was authorized when `None`) of an authorized payment:
    /// [`Self::prepare_capture`] then [`Self::submit_capture`], idempotent under `key` as
    /// [`Self::create`] is.
    pub async fn capture(
        &self,
        caller: Principal,
        id: PaymentId,
        amount: Option<Amount>,
        key: Option<IdempotencyKey>,
    ) -> Result<Payment> {
        let amount_field = amount.map_or(0, Amount::minor_units).to_be_bytes();
        let uuid = id.as_uuid();
        let fields: [&[u8]; 2] = [uuid.as_bytes(), &amount_field];
        let idempotency = Idempotency::keyed(key, "capture", &fields);
        let written = self
            .writes
            .run(
                caller,
                idempotency.as_ref(),
                |_| self.prepare_capture(caller, id, amount),
                |payment| id_response(payment.id.as_uuid()),
                || {},
                |payment, completion| {
                    let service = self.clone();
                    async move { service.submit_capture(&payment, completion).await }
                },
            )
            .await?;
        self.answer(caller, written).await
    }

    /// Cancels an authorized payment: [`Self::prepare_cancel`] then [`Self::submit_cancel`],
    /// idempotent under `key` as [`Self::create`] is.
    pub async fn cancel(
        &self,
        caller: Principal,
        id: PaymentId,
        key: Option<IdempotencyKey>,
    ) -> Result<Payment> {
        let uuid = id.as_uuid();
        let fields: [&[u8]; 1] = [uuid.as_bytes()];
        let idempotency = Idempotency::keyed(key, "cancel", &fields);
        let written = self
            .writes
            .run(
                caller,
                idempotency.as_ref(),
                |_| self.prepare_cancel(caller, id),
                |payment| id_response(payment.id.as_uuid()),
                || {},
                |payment, completion| {
                    let service = self.clone();
                    async move { service.submit_cancel(&payment, completion).await }
                },
            )
            .await?;
        self.answer(caller, written).await
    }

    /// The payment a write made, or the one a replay names, as it stands now.
    async fn answer(&self, caller: Principal, written: Written<Payment>) -> Result<Payment> {
        match written {
            Written::New(payment) => Ok(payment),
            Written::Replayed(stored) => {
                self.get(caller, PaymentId::from_uuid(replayed_id(&stored)?))
                    .await
            }
        }
    }

    /// Checks a capture of `amount` (all that was authorized when `None`) and returns the
    /// payment as it will stand once the capture is accepted; writes nothing. The order of
    /// checks is API.md's: the payment (404), its state (409; an authorization past
    /// `AUTHORIZATION_TTL` counts as gone even before the sweep cancels it), the amount (422).
    pub async fn prepare_capture(
        &self,
        caller: Principal,
        id: PaymentId,
        amount: Option<Amount>,
    ) -> Result<Payment> {
        let mut payment = self.get(caller, id).await?;
        let now = self.clock.now();
        if payment.status() != PaymentStatus::Authorized || self.expired(&payment, now) {
            return Err(Error::InvalidState {
                status: payment.status(),
            });
        }
        let amount = amount.unwrap_or(payment.amount);
        payment.request_capture(amount, now)?;
        Ok(payment)
    }

    /// Records a prepared capture (with its idempotency completion) in one store step, then
    /// enqueues the job a worker posts it from. Answers the payment as it now stands.
    pub async fn submit_capture(
        &self,
        prepared: &Payment,
        completion: Option<Completion>,
    ) -> Result<Payment> {
        let amount = prepared
            .state()
            .capture_requested()
            .ok_or(Error::InvalidState {
                status: prepared.status(),
            })?;
        let (payments, queue, id, at, ttl) = (
            self.payments.clone(),
            self.queue.clone(),
            prepared.id,
            prepared.updated_at(),
            self.authorization_ttl,
        );
        tokio::spawn(async move {
            let payment = payments
                .request_capture(id, amount, at, ttl, completion)
                .await?;
            enqueue_hint(&queue, Job::Payment(id)).await;
            tracing::info!(payment_id = %id, amount = amount.minor_units(), "capture accepted");
            Ok(payment)
        })
        .await
        .map_err(Error::backend)?
    }

    /// Checks a cancel and returns the payment as it will stand once canceled; writes nothing.
    pub async fn prepare_cancel(&self, caller: Principal, id: PaymentId) -> Result<Payment> {
        let mut payment = self.get(caller, id).await?;
        if payment.status() != PaymentStatus::Authorized {
            return Err(Error::InvalidState {
                status: payment.status(),
            });
        }
        payment.cancel(CancellationReason::Requested, self.clock.now())?;
        Ok(payment)
    }

    /// Cancels a prepared authorization (with its idempotency completion) in one
    /// compare-and-set; nothing was ever posted, so no worker is involved.
    pub async fn submit_cancel(
        &self,
        prepared: &Payment,
        completion: Option<Completion>,
    ) -> Result<Payment> {
        let payment = self
            .payments
            .cancel(
                prepared.id,
                CancellationReason::Requested,
                prepared.updated_at(),
                completion,
            )
            .await?;
        telemetry::payment_written(&payment);
        tracing::info!(payment_id = %payment.id, "authorization canceled");
        Ok(payment)
    }

    /// Whether an `AUTHORIZED` payment's authorization is past `AUTHORIZATION_TTL`.
    fn expired(&self, payment: &Payment, now: crate::time::Timestamp) -> bool {
        payment.updated_at().saturating_add(self.authorization_ttl) <= now
    }

    /// The payment, if the caller may see it.
    pub async fn get(&self, caller: Principal, id: PaymentId) -> Result<Payment> {
        self.payments
            .payment(id, caller)
            .await?
            .ok_or(Error::NotFound)
    }

    /// The caller's payments that pass `filter`, newest first.
    pub async fn list(
        &self,
        caller: Principal,
        filter: &PaymentFilter,
        page: PageRequest<PaymentId>,
    ) -> Result<Page<Payment>> {
        self.payments.payments(caller, filter, page).await
    }
}

/// Enqueues the wake-up hint of a write the store has committed. The enqueue runs as a task of
/// its own for up to [`ENQUEUE_TIMEOUT`]; the caller waits for it at most [`ENQUEUE_WAIT`]. A
/// lost hint delays the job until the sweep finds it, never loses it.
pub(super) async fn enqueue_hint(queue: &Arc<dyn JobQueue>, job: Job) {
    let queue = queue.clone();
    let enqueue = tokio::spawn(async move {
        match tokio::time::timeout(ENQUEUE_TIMEOUT, queue.enqueue(&[job])).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(?job, ?error, "enqueue failed; the sweep will retry");
            }
            Err(_) => {
                tracing::warn!(?job, "enqueue timed out; the sweep will retry");
            }
        }
    });
    // A healthy queue answers well within the wait; a stalled one costs the answer no more
    // than it, and the enqueue ends on its own.
    let _ = tokio::time::timeout(ENQUEUE_WAIT, enqueue).await;
}
