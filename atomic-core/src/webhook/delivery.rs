//! A webhook delivery: one event for one endpoint, and its attempts (API.md *Webhooks* and
//! *Precise rules of v1.1*, Retries). The first attempt is due when the event is written;
//! after the n-th failed scheduled attempt the next is due `schedule[n-1]` later, and once the
//! schedule is spent the delivery is `FAILED`. A manual retry makes one attempt now: a 2xx
//! delivers, a failure puts the schedule back where it stood (`FAILED` if it was spent). When
//! its endpoint is deleted, a `PENDING` delivery ends `FAILED` with `endpoint_deleted`.

use crate::error::Invalid;
use crate::event::Event;
use crate::id::{DeliveryId, EventId, WebhookEndpointId};
use crate::ports::SendOutcome;
use crate::time::Timestamp;

use super::{RetrySchedule, WebhookEndpoint};

/// `lastError` of the deliveries a deleted endpoint leaves.
pub const ENDPOINT_DELETED: &str = "endpoint_deleted";

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(rename_all = "UPPERCASE"))]
pub enum DeliveryStatus {
    /// An attempt is due (now or at `nextAttemptAt`).
    Pending,
    /// A 2xx was received.
    Delivered,
    /// No attempt is left.
    Failed,
}

impl DeliveryStatus {
    /// The status as the API writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Delivered => "DELIVERED",
            Self::Failed => "FAILED",
        }
    }

    /// The status written `text`.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or(Invalid::new("must be PENDING, DELIVERED or FAILED"))
    }
}

/// One delivery. Its fields are public to read and to restore from a store; only the methods
/// below move it, as the rules above say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// Its id.
    pub id: DeliveryId,
    /// The event delivered.
    pub event_id: EventId,
    /// Where.
    pub endpoint_id: WebhookEndpointId,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made, manual ones included.
    pub attempts: u32,
    /// Scheduled attempts that failed: the position in the retry schedule.
    pub failures: u32,
    /// When the last attempt was made.
    pub last_attempt_at: Option<Timestamp>,
    /// The status code the last attempt got, if it got an answer.
    pub last_status_code: Option<u16>,
    /// Why the last attempt got no 2xx, when it got no answer (or `endpoint_deleted`).
    pub last_error: Option<String>,
    /// When the next attempt is due; `None` unless `PENDING`.
    pub next_attempt_at: Option<Timestamp>,
    /// While a manual attempt is due: when the schedule's next attempt was due before it
    /// (`None`: the schedule was spent). `None` otherwise.
    pub resume_at: Option<Timestamp>,
    /// Whether the due attempt is a manual retry.
    pub manual: bool,
    /// When it was made (with its event).
    pub created_at: Timestamp,
}

impl WebhookDelivery {
    /// The delivery of `event`, written at `at`, to `endpoint`: `PENDING`, due at once.
    pub fn new(event_id: EventId, endpoint_id: WebhookEndpointId, at: Timestamp) -> Self {
        Self {
            id: DeliveryId::generate(),
            event_id,
            endpoint_id,
            status: DeliveryStatus::Pending,
            attempts: 0,
            failures: 0,
            last_attempt_at: None,
            last_status_code: None,
            last_error: None,
            next_attempt_at: Some(at),
            resume_at: None,
            manual: false,
            created_at: at,
        }
    }

    /// Records an attempt made at `at` that got `outcome`.
    pub fn attempted(&mut self, at: Timestamp, outcome: &SendOutcome, schedule: &RetrySchedule) {
        self.attempts = self.attempts.saturating_add(1);
        self.last_attempt_at = Some(at);
        (self.last_status_code, self.last_error) = match outcome {
            SendOutcome::Answered(code) => (Some(*code), None),
            SendOutcome::Failed(why) => (None, Some(why.clone())),
        };
        let next = if outcome.delivered() {
            None
        } else if self.manual {
            self.resume_at
        } else {
            self.failures = self.failures.saturating_add(1);
            schedule
                .after_failure(self.failures)
                .map(|wait| at.saturating_add(wait))
        };
        self.status = match (outcome.delivered(), next) {
            (true, _) => DeliveryStatus::Delivered,
            (false, Some(_)) => DeliveryStatus::Pending,
            (false, None) => DeliveryStatus::Failed,
        };
        self.next_attempt_at = next;
        self.manual = false;
        self.resume_at = None;
    }

    /// A manual retry asked at `at`, whatever the status: one attempt due now.
    pub fn retry_now(&mut self, at: Timestamp) {
        if !self.manual {
            self.resume_at = match self.status {
                DeliveryStatus::Pending => self.next_attempt_at,
                DeliveryStatus::Delivered | DeliveryStatus::Failed => None,
            };
        }
        self.manual = true;
        self.status = DeliveryStatus::Pending;
        self.next_attempt_at = Some(at);
    }

    /// Its endpoint was deleted: a `PENDING` delivery ends `FAILED`; others stay as they are.
    pub fn endpoint_deleted(&mut self) {
        if self.status == DeliveryStatus::Pending {
            self.status = DeliveryStatus::Failed;
            self.last_error = Some(ENDPOINT_DELETED.to_owned());
            self.next_attempt_at = None;
            self.resume_at = None;
            self.manual = false;
        }
    }
}

/// The deliveries `events` make: one per event and endpoint that receives it. `endpoints` are
/// those that exist (not deleted) in the transaction that writes the events.
pub fn deliveries_for(events: &[Event], endpoints: &[WebhookEndpoint]) -> Vec<WebhookDelivery> {
    events
        .iter()
        .flat_map(|event| {
            endpoints
                .iter()
                .filter(|endpoint| endpoint.receives(event.owner, event.event_type))
                .map(|endpoint| WebhookDelivery::new(event.id, endpoint.id, event.created_at))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn delivery(at: Timestamp) -> WebhookDelivery {
        WebhookDelivery::new(EventId::generate(), WebhookEndpointId::generate(), at)
    }

    fn failed() -> SendOutcome {
        SendOutcome::Answered(500)
    }

    #[test]
    fn failures_follow_the_schedule_then_the_delivery_fails() {
        let schedule = RetrySchedule::parse("5s,1m").unwrap();
        let t0 = Timestamp::now();
        let mut d = delivery(t0);
        assert_eq!(
            d.next_attempt_at,
            Some(t0),
            "the first attempt is immediate"
        );
        d.attempted(t0, &failed(), &schedule);
        assert_eq!(
            d.next_attempt_at,
            Some(t0.saturating_add(Duration::from_secs(5)))
        );
        let t1 = t0.saturating_add(Duration::from_secs(5));
        d.attempted(t1, &SendOutcome::Failed("timeout".into()), &schedule);
        assert_eq!(
            d.next_attempt_at,
            Some(t1.saturating_add(Duration::from_secs(60)))
        );
        assert_eq!(
            (d.last_status_code, d.last_error.as_deref()),
            (None, Some("timeout"))
        );
        d.attempted(t1, &SendOutcome::Answered(302), &schedule);
        assert_eq!(
            (d.status, d.attempts, d.next_attempt_at),
            (DeliveryStatus::Failed, 3, None),
            "1 + len(schedule) attempts, a 3xx is a failure"
        );
    }

    #[test]
    fn a_2xx_delivers() {
        let mut d = delivery(Timestamp::now());
        d.attempted(
            Timestamp::now(),
            &SendOutcome::Answered(204),
            &RetrySchedule::default(),
        );
        assert_eq!(
            (d.status, d.next_attempt_at),
            (DeliveryStatus::Delivered, None)
        );
    }

    #[test]
    fn a_failed_manual_retry_puts_the_schedule_back_where_it_stood() {
        let schedule = RetrySchedule::parse("5s,1m").unwrap();
        let t0 = Timestamp::now();
        let mut d = delivery(t0);
        d.attempted(t0, &failed(), &schedule);
        let due = d.next_attempt_at;
        d.retry_now(t0);
        d.retry_now(t0);
        assert_eq!(
            (d.status, d.next_attempt_at),
            (DeliveryStatus::Pending, Some(t0))
        );
        d.attempted(t0, &failed(), &schedule);
        assert_eq!(
            (d.status, d.next_attempt_at, d.failures),
            (DeliveryStatus::Pending, due, 1)
        );

        let mut spent = delivery(t0);
        for _ in 0..3 {
            spent.attempted(t0, &failed(), &schedule);
        }
        spent.retry_now(t0);
        assert_eq!(spent.status, DeliveryStatus::Pending);
        spent.attempted(t0, &failed(), &schedule);
        assert_eq!(
            (spent.status, spent.next_attempt_at),
            (DeliveryStatus::Failed, None)
        );
        spent.retry_now(t0);
        spent.attempted(t0, &SendOutcome::Answered(200), &schedule);
        assert_eq!(spent.status, DeliveryStatus::Delivered);
    }

    #[test]
    fn deleting_the_endpoint_fails_only_pending_deliveries() {
        let mut pending = delivery(Timestamp::now());
        pending.endpoint_deleted();
        assert_eq!(
            (
                pending.status,
                pending.last_error.as_deref(),
                pending.next_attempt_at
            ),
            (DeliveryStatus::Failed, Some(ENDPOINT_DELETED), None)
        );
        let mut delivered = delivery(Timestamp::now());
        delivered.attempted(
            Timestamp::now(),
            &SendOutcome::Answered(200),
            &RetrySchedule::default(),
        );
        delivered.endpoint_deleted();
        assert_eq!(delivered.status, DeliveryStatus::Delivered);
    }

    #[test]
    fn statuses_read_back() {
        for s in [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
        ] {
            assert_eq!(DeliveryStatus::parse(s.as_str()), Ok(s));
        }
        assert!(DeliveryStatus::parse("pending").is_err());
    }
}
