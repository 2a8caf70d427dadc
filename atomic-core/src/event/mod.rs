//! Events: what clients are told happened (API.md *Events*). Each state change a client waits
//! for (a payment authorized, succeeded, failed or canceled; a refund succeeded or failed)
//! writes one [`Event`], in the same store transaction as the change: the store calls
//! [`Event::of_payment`] or [`Event::of_refund`] on each record it has just moved, and those
//! decide whether the new state is one that has an event. The event carries its JSON body,
//! rendered once from the record as stored, so a list, a read and every webhook delivery send
//! the same bytes.

mod event_type;
mod view;

use serde::Serialize;

pub use event_type::EventType;
pub use view::{PaymentView, RefundView};

use crate::id::{AccountId, EventId, PaymentId, RefundId};
use crate::page::CreatedRange;
use crate::payment::{Payment, PaymentStatus};
use crate::principal::Owner;
use crate::refund::{Refund, RefundStatus};
use crate::time::Timestamp;

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Its id (the `webhook-id` of its deliveries).
    pub id: EventId,
    /// What happened.
    pub event_type: EventType,
    /// The credited account of the payment concerned (the API's `merchantId`).
    pub merchant_account: AccountId,
    /// That account's owner: who sees the event, and whose endpoints receive it.
    pub owner: Owner,
    /// The payment concerned (a refund's payment for a refund event).
    pub payment_id: PaymentId,
    /// The refund concerned, for a refund event.
    pub refund_id: Option<RefundId>,
    /// When the change happened (the object's `updatedAt`).
    pub created_at: Timestamp,
    /// The event as API.md renders it: `{"id","type","merchantId","createdAt","data":{"object"}}`.
    pub body: String,
}

/// Which events a list keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this type.
    pub event_type: Option<EventType>,
    /// Only those created in this range.
    pub created: CreatedRange,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rendered<'a, O> {
    id: String,
    #[serde(rename = "type")]
    event_type: &'static str,
    merchant_id: String,
    created_at: String,
    data: Data<'a, O>,
}

#[derive(Serialize)]
struct Data<'a, O> {
    object: &'a O,
}

impl Event {
    /// The event a payment's change to its present state writes, if that state has one:
    /// `AUTHORIZED`, `SUCCESS`, `FAILED` and `CANCELED` do.
    pub fn of_payment(payment: &Payment) -> Option<Self> {
        let event_type = match payment.status() {
            PaymentStatus::Authorized => EventType::PaymentAuthorized,
            PaymentStatus::Success => EventType::PaymentSucceeded,
            PaymentStatus::Failed => EventType::PaymentFailed,
            PaymentStatus::Canceled => EventType::PaymentCanceled,
            PaymentStatus::Pending | PaymentStatus::Processing => return None,
        };
        let subject = Subject {
            merchant_account: payment.merchant_account,
            owner: payment.owner,
            payment_id: payment.id,
            refund_id: None,
            created_at: payment.updated_at(),
        };
        Some(Self::build(event_type, subject, &PaymentView::new(payment)))
    }

    /// The event a refund's change to its present state writes, if that state has one:
    /// `SUCCESS` and `FAILED` do.
    pub fn of_refund(refund: &Refund) -> Option<Self> {
        let event_type = match refund.status() {
            RefundStatus::Success => EventType::RefundSucceeded,
            RefundStatus::Failed => EventType::RefundFailed,
            RefundStatus::Pending | RefundStatus::Processing => return None,
        };
        let subject = Subject {
            merchant_account: refund.merchant_account,
            owner: refund.owner,
            payment_id: refund.payment_id,
            refund_id: Some(refund.id),
            created_at: refund.updated_at(),
        };
        Some(Self::build(event_type, subject, &RefundView::new(refund)))
    }

    fn build<O: Serialize>(event_type: EventType, subject: Subject, object: &O) -> Self {
        let id = EventId::generate();
        let rendered = Rendered {
            id: id.to_string(),
            event_type: event_type.as_str(),
            merchant_id: subject.merchant_account.to_string(),
            created_at: subject.created_at.to_string(),
            data: Data { object },
        };
        Self {
            id,
            event_type,
            merchant_account: subject.merchant_account,
            owner: subject.owner,
            payment_id: subject.payment_id,
            refund_id: subject.refund_id,
            created_at: subject.created_at,
            // Serializing string fields and string maps cannot fail.
            body: serde_json::to_string(&rendered).unwrap_or_default(),
        }
    }
}

/// What an event is about.
struct Subject {
    merchant_account: AccountId,
    owner: Owner,
    payment_id: PaymentId,
    refund_id: Option<RefundId>,
    created_at: Timestamp,
}
