//! Refunds: create, read, list. Creation records the intent: the refund is stored `PENDING`
//! with its amount reserved on the payment (one store step, so concurrent refunds never
//! reserve more than was captured), then a job is enqueued; a worker posts it.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::fresh::Fresh;
use crate::id::{PaymentId, RefundId};
use crate::idempotency::{Claim, Completion, Fingerprint, IdempotencyKey};
use crate::money::Amount;
use crate::page::{Page, PageRequest};
use crate::payment::PaymentStatus;
use crate::ports::{Job, JobQueue, PaymentStore, Ports, RefundFilter};
use crate::principal::Principal;
use crate::refund::{Refund, RefundRequest};
use crate::time::Clock;

use super::idempotent::{
    Idempotency, IdempotentWrites, Written, fingerprint, id_response, replayed_id,
};
use super::payments::enqueue_hint;

/// What a refund request is, for its idempotency key.
fn refund_fingerprint(payment_id: PaymentId, request: &RefundRequest) -> Fingerprint {
    let amount = request.amount.map_or(0, Amount::minor_units).to_be_bytes();
    let reason = request.reason.map_or("", |r| r.as_str());
    let metadata = request.metadata.canonical();
    let uuid = payment_id.as_uuid();
    let fields: [&[u8]; 4] = [
        uuid.as_bytes(),
        &amount,
        reason.as_bytes(),
        metadata.as_bytes(),
    ];
    fingerprint("create_refund", &fields)
}

/// Refunds: create, read, list.
#[derive(Clone)]
pub struct RefundService {
    payments: Arc<dyn PaymentStore>,
    queue: Arc<dyn JobQueue>,
    clock: Arc<dyn Clock>,
    writes: IdempotentWrites,
}

impl std::fmt::Debug for RefundService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefundService").finish_non_exhaustive()
    }
}

impl RefundService {
    pub(super) fn new(ports: &Ports, writes: IdempotentWrites) -> Self {
        Self {
            payments: ports.store.payments().clone(),
            queue: ports.queue.clone(),
            clock: ports.clock.clone(),
            writes,
        }
    }

    /// Checks a refund of payment `payment_id` and builds it `PENDING`; writes nothing. The
    /// order of checks is API.md's: the payment (404), its state (409 unless `SUCCESS`), the
    /// amount (422 above what is refundable; a default refund with nothing left is 422 too).
    /// With a held idempotency `claim`, the refund carries its key.
    pub async fn prepare(
        &self,
        caller: Principal,
        payment_id: PaymentId,
        request: RefundRequest,
        claim: Option<&Claim>,
    ) -> Result<Fresh<Refund>> {
        if claim.is_some_and(|c| c.scope != caller) {
            return Err(Error::IdempotencyClaimLost);
        }
        let payment = self
            .payments
            .payment(payment_id, caller)
            .await?
            .ok_or(Error::NotFound)?;
        if payment.status() != PaymentStatus::Success {
            return Err(Error::InvalidState {
                status: payment.status(),
            });
        }
        let amount = match request.amount {
            Some(amount) => amount,
            None => {
                Amount::new(payment.refundable()).map_err(|_| Error::AmountExceedsRefundable)?
            }
        };
        if amount.minor_units() > payment.refundable() {
            return Err(Error::AmountExceedsRefundable);
        }
        Ok(Refund::new(
            &payment,
            amount,
            request,
            claim.map(|c| c.key.clone()),
            caller,
            self.clock.now(),
        ))
    }

    /// Stores a prepared refund, reserving its amount on the payment, with its idempotency
    /// completion, in one store step; then enqueues its job. The work runs as a task of its
    /// own, so a caller that stops waiting cancels none of it.
    pub async fn submit(
        &self,
        refund: &Fresh<Refund>,
        completion: Option<Completion>,
    ) -> Result<()> {
        let (payments, queue, refund) = (self.payments.clone(), self.queue.clone(), refund.clone());
        tokio::spawn(async move {
            payments.create_refund(&refund, completion).await?;
            crate::telemetry::refund_created();
            enqueue_hint(&queue, Job::Refund(refund.id)).await;
            tracing::info!(
                refund_id = %refund.id,
                payment_id = %refund.payment_id,
                amount = refund.amount.minor_units(),
                "refund accepted"
            );
            Ok(())
        })
        .await
        .map_err(Error::backend)?
    }

    /// Creates a refund: prepares and submits it in one call. Under an idempotency `key`, a
    /// second call with the same request answers the refund the first one created (as it
    /// stands now) and creates nothing.
    pub async fn create(
        &self,
        caller: Principal,
        payment_id: PaymentId,
        request: RefundRequest,
        key: Option<IdempotencyKey>,
    ) -> Result<Refund> {
        let idempotency = key.map(|key| Idempotency {
            key,
            fingerprint: refund_fingerprint(payment_id, &request),
        });
        let written = self
            .writes
            .run(
                caller,
                idempotency.as_ref(),
                |claim| async move {
                    self.prepare(caller, payment_id, request, claim.as_ref())
                        .await
                },
                |refund| id_response(refund.id.as_uuid()),
                || {},
                |refund, completion| {
                    let service = self.clone();
                    async move {
                        service.submit(&refund, completion).await?;
                        Ok(refund.into_inner())
                    }
                },
            )
            .await?;
        match written {
            Written::New(refund) => Ok(refund),
            Written::Replayed(stored) => {
                self.get(caller, RefundId::from_uuid(replayed_id(&stored)?))
                    .await
            }
        }
    }

    /// The refund, if the caller may see it.
    pub async fn get(&self, caller: Principal, id: RefundId) -> Result<Refund> {
        self.payments
            .refund(id, caller)
            .await?
            .ok_or(Error::NotFound)
    }

    /// The caller's refunds that pass `filter`, newest first.
    pub async fn list(
        &self,
        caller: Principal,
        filter: &RefundFilter,
        page: PageRequest<RefundId>,
    ) -> Result<Page<Refund>> {
        self.payments.refunds(caller, filter, page).await
    }
}
