//! Events on [`PgStore`]: [`write_events`] stores the events of a change, with their webhook
//! deliveries, in the change's own transaction (the transactional outbox); [`EventStore`]
//! reads them, a merchant its own accounts' and the platform all.

use std::collections::BTreeSet;

use async_trait::async_trait;
use atomic_core::Result;
use atomic_core::event::{Event, EventFilter};
use atomic_core::id::EventId;
use atomic_core::page::{Page, PageRequest};
use atomic_core::ports::EventStore;
use atomic_core::principal::Principal;
use atomic_core::webhook::{WebhookEndpoint, deliveries_for};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::accounts::limit_plus_one;
use crate::error::from_sqlx;
use crate::rows::{
    self, DeliveryColumns, endpoint_columns, event_columns, owner_uuid, viewer_merchant,
};
use crate::store::PgStore;

// The live endpoints that may receive an event of the owners $1: the platform's, and the
// owners' own.
pub(crate) const RECEIVING_ENDPOINTS: &str = concat!(
    "SELECT ",
    endpoint_columns!(),
    " FROM webhook_endpoints WHERE deleted_at IS NULL \
     AND (owner_merchant IS NULL OR owner_merchant = ANY($1))"
);

// The events ($1..$8) and their deliveries ($9..$21), in one statement. The deliveries' check
// of their event runs at the end of the statement, when the events are in.
pub(crate) const INSERT_EVENTS: &str = "\
WITH new_events AS (
    INSERT INTO events
        (id, type, merchant_account, owner_merchant, payment_id, refund_id, created_at, body)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::uuid[],
        $6::uuid[], $7::timestamptz[], $8::text[])
)
INSERT INTO webhook_deliveries (id, event_id, endpoint_id, status, attempts, failures,
    last_attempt_at, last_status_code, last_error, next_attempt_at, resume_at, manual, created_at)
SELECT * FROM unnest($9::uuid[], $10::uuid[], $11::uuid[], $12::text[], $13::int[], $14::int[],
    $15::timestamptz[], $16::int[], $17::text[], $18::timestamptz[], $19::timestamptz[],
    $20::bool[], $21::timestamptz[])";

const SELECT_EVENT: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE id = $1 AND ($2::uuid IS NULL OR owner_merchant = $2)"
);

// A page of events, newest first: $1 cursor, $2 limit, $3 viewer's merchant (NULL: all),
// $4 type, [$5, $6) created range. Unprepared, so an absent filter drops out of the plan: a
// merchant's page walks `events_owner`, the platform's the primary key.
const LIST_EVENTS: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE ($1::uuid IS NULL OR id < $1) \
     AND ($3::uuid IS NULL OR owner_merchant = $3) \
     AND ($4::text IS NULL OR type = $4) \
     AND ($5::timestamptz IS NULL OR created_at >= $5) \
     AND ($6::timestamptz IS NULL OR created_at < $6) \
     ORDER BY id DESC LIMIT $2"
);

/// Stores `events` and the webhook deliveries they make, in the caller's transaction: the
/// endpoints that exist now (not deleted) receive them as the core's [`deliveries_for`]
/// says. Two statements however many events: the endpoints read, then every event and
/// delivery written.
pub(crate) async fn write_events(conn: &mut PgConnection, events: &[Event]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let endpoints = receiving_endpoints(&mut *conn, &owners_of(events)).await?;
    let deliveries = DeliveryColumns::of(&deliveries_for(events, &endpoints))?;
    insert_events(conn, events, deliveries).await
}

/// The merchants owning `events`, each once, in id order (platform-owned events add none).
fn owners_of(events: &[Event]) -> Vec<Uuid> {
    events
        .iter()
        .filter_map(|e| owner_uuid(e.owner))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The live endpoints that may receive an event of `owners`: the platform's and the owners'.
async fn receiving_endpoints(
    conn: &mut PgConnection,
    owners: &[Uuid],
) -> Result<Vec<WebhookEndpoint>> {
    let found = sqlx::query(RECEIVING_ENDPOINTS)
        .bind(owners)
        .fetch_all(conn)
        .await
        .map_err(from_sqlx)?;
    found.iter().map(rows::endpoint).collect()
}

/// Writes `events` and their `deliveries` with [`INSERT_EVENTS`]: one statement.
async fn insert_events(
    conn: &mut PgConnection,
    events: &[Event],
    deliveries: DeliveryColumns,
) -> Result<()> {
    let events = EventColumns::of(events);
    sqlx::query(INSERT_EVENTS)
        .bind(events.ids)
        .bind(events.types)
        .bind(events.merchant_accounts)
        .bind(events.owners)
        .bind(events.payment_ids)
        .bind(events.refund_ids)
        .bind(events.created_at)
        .bind(events.bodies)
        .bind(deliveries.ids)
        .bind(deliveries.event_ids)
        .bind(deliveries.endpoint_ids)
        .bind(deliveries.statuses)
        .bind(deliveries.attempts)
        .bind(deliveries.failures)
        .bind(deliveries.last_attempt_at)
        .bind(deliveries.last_status_code)
        .bind(deliveries.last_error)
        .bind(deliveries.next_attempt_at)
        .bind(deliveries.resume_at)
        .bind(deliveries.manual)
        .bind(deliveries.created_at)
        .execute(conn)
        .await
        .map_err(from_sqlx)?;
    Ok(())
}

/// The columns of events, one array per column (bound with `unnest`).
#[derive(Default)]
struct EventColumns<'a> {
    ids: Vec<Uuid>,
    types: Vec<&'static str>,
    merchant_accounts: Vec<Uuid>,
    owners: Vec<Option<Uuid>>,
    payment_ids: Vec<Uuid>,
    refund_ids: Vec<Option<Uuid>>,
    created_at: Vec<OffsetDateTime>,
    bodies: Vec<&'a str>,
}

impl<'a> EventColumns<'a> {
    /// The columns of `events`, in order.
    fn of(events: &'a [Event]) -> Self {
        let mut columns = Self::default();
        for e in events {
            columns.ids.push(e.id.as_uuid());
            columns.types.push(e.event_type.as_str());
            columns.merchant_accounts.push(e.merchant_account.as_uuid());
            columns.owners.push(owner_uuid(e.owner));
            columns.payment_ids.push(e.payment_id.as_uuid());
            columns.refund_ids.push(e.refund_id.map(|r| r.as_uuid()));
            columns.created_at.push(e.created_at.as_datetime());
            columns.bodies.push(e.body.as_str());
        }
        columns
    }
}

#[async_trait]
impl EventStore for PgStore {
    async fn event(&self, id: EventId, viewer: Principal) -> Result<Option<Event>> {
        self.call(async {
            let row = sqlx::query(SELECT_EVENT)
                .bind(id.as_uuid())
                .bind(viewer_merchant(viewer))
                .fetch_optional(self.pool())
                .await
                .map_err(from_sqlx)?;
            row.as_ref().map(rows::event).transpose()
        })
        .await
    }

    async fn events(
        &self,
        viewer: Principal,
        filter: &EventFilter,
        page: PageRequest<EventId>,
    ) -> Result<Page<Event>> {
        self.call(async {
            let merchant = viewer_merchant(viewer);
            let cursor = page.starting_after.map(|c| c.as_uuid());
            self.check_cursor(
                "SELECT 1 FROM events WHERE id = $1 AND ($2::uuid IS NULL OR owner_merchant = $2)",
                cursor,
                merchant,
            )
            .await?;
            let found = sqlx::query(LIST_EVENTS)
                .persistent(false)
                .bind(cursor)
                .bind(limit_plus_one(page.limit.get()))
                .bind(merchant)
                .bind(filter.event_type.map(|t| t.as_str()))
                .bind(filter.created.gte.map(|t| t.as_datetime()))
                .bind(filter.created.lt.map(|t| t.as_datetime()))
                .fetch_all(self.pool())
                .await
                .map_err(from_sqlx)?;
            let items = found.iter().map(rows::event).collect::<Result<Vec<_>>>()?;
            Ok(Page::from_overfetch(items, page.limit))
        })
        .await
    }
}
