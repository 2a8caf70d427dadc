-- Events and webhooks (API.md *Events*, *Webhooks*; DESIGN.md *Transactional outbox*).
--
-- An event is written in the transaction of the change it tells, with the deliveries it makes
-- (one per event and endpoint that receives it). Its body is kept as the text the core
-- rendered, byte for byte: every delivery of it is signed over the same bytes. Endpoints are
-- deleted softly (their deliveries stay, for the audit); a delivery is claimed by a dispatcher
-- under a lease (`lease`, `leased_until`) and written back by the holder of that lease.

-- ---------------------------------------------------------------------------------------------
-- Events. No foreign keys to the payment or refund, nor to the owner: the event is inserted by
-- the settlement batch beside its change, and a foreign key check would share-lock rows other
-- batches update. The change's own row says the same thing, and events are purged after
-- `EVENT_RETENTION` while payments stay.
CREATE TABLE events (
    id               uuid PRIMARY KEY,
    type             text NOT NULL,
    merchant_account uuid NOT NULL,
    -- The account's owner; NULL for an account created with the platform key.
    owner_merchant   uuid,
    payment_id       uuid NOT NULL,
    refund_id        uuid,
    created_at       timestamptz NOT NULL,
    body             text NOT NULL,
    CONSTRAINT events_type_known CHECK (type IN ('payment.authorized', 'payment.succeeded',
        'payment.failed', 'payment.canceled', 'refund.succeeded', 'refund.failed')),
    -- A refund's event names its refund; a payment's does not.
    CONSTRAINT events_refund_of_refund_event CHECK ((refund_id IS NOT NULL) = (type LIKE 'refund.%'))
);

-- One event per change (L15): a payment enters each of its event states once, and so does a
-- refund.
CREATE UNIQUE INDEX events_one_per_payment_change ON events (payment_id, type)
    WHERE refund_id IS NULL;
CREATE UNIQUE INDEX events_one_per_refund_change ON events (refund_id, type)
    WHERE refund_id IS NOT NULL;
-- A merchant's list, newest first; the platform's walks the primary key.
CREATE INDEX events_owner ON events (owner_merchant, id);
-- Created ranges, and the retention purge.
CREATE INDEX events_created ON events (created_at, id);

-- ---------------------------------------------------------------------------------------------
-- Endpoints. The owner is a merchant, or NULL for the platform (which receives every
-- merchant's events).
CREATE TABLE webhook_endpoints (
    id             uuid PRIMARY KEY,
    owner_merchant uuid,
    url            text NOT NULL,
    events         text[] NOT NULL,
    description    text,
    secret         text NOT NULL,
    created_at     timestamptz NOT NULL,
    deleted_at     timestamptz,
    CONSTRAINT webhook_endpoints_url_bounded CHECK (
        char_length(url) BETWEEN 1 AND 2048 AND url ~ '^https?://'),
    CONSTRAINT webhook_endpoints_events_known CHECK (
        events = ARRAY['*']
        OR (cardinality(events) >= 1 AND events <@ ARRAY['payment.authorized',
            'payment.succeeded', 'payment.failed', 'payment.canceled', 'refund.succeeded',
            'refund.failed'])),
    CONSTRAINT webhook_endpoints_description_bounded CHECK (char_length(description) <= 1000),
    CONSTRAINT webhook_endpoints_secret_shape CHECK (secret LIKE 'whsec\_%')
);

-- An owner's live endpoints: its list, the limit of 16, and the endpoints an event reaches.
CREATE INDEX webhook_endpoints_owner_live ON webhook_endpoints (owner_merchant, id)
    WHERE deleted_at IS NULL;

-- ---------------------------------------------------------------------------------------------
-- Deliveries: one per (event, endpoint) (L16), deleted with their event. The endpoint is not a
-- foreign key: a platform endpoint receives every event, so its key check would share-lock one
-- row from every concurrent settlement batch (multixacts, the cost migration 14 took off the
-- accounts). Deliveries are made from the endpoints read in their own transaction, and
-- endpoints are only ever marked deleted, never removed, so the reference cannot dangle.
CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY,
    event_id         uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    endpoint_id      uuid NOT NULL,
    status           text NOT NULL,
    attempts         integer NOT NULL,
    failures         integer NOT NULL,
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    next_attempt_at  timestamptz,
    resume_at        timestamptz,
    manual           boolean NOT NULL,
    created_at       timestamptz NOT NULL,
    -- The dispatcher's hold on it: who, and until when.
    lease            uuid,
    leased_until     timestamptz,
    CONSTRAINT webhook_deliveries_one_per_endpoint UNIQUE (event_id, endpoint_id),
    CONSTRAINT webhook_deliveries_status_known
        CHECK (status IN ('PENDING', 'DELIVERED', 'FAILED')),
    -- An attempt is due exactly while the delivery is PENDING.
    CONSTRAINT webhook_deliveries_due_iff_pending
        CHECK ((status = 'PENDING') = (next_attempt_at IS NOT NULL)),
    CONSTRAINT webhook_deliveries_counts
        CHECK (attempts >= 0 AND failures >= 0 AND failures <= attempts),
    CONSTRAINT webhook_deliveries_status_code_range
        CHECK (last_status_code BETWEEN 0 AND 65535),
    -- The schedule's place is kept only while a manual attempt is due.
    CONSTRAINT webhook_deliveries_resume_only_manual CHECK (resume_at IS NULL OR manual),
    CONSTRAINT webhook_deliveries_manual_pending CHECK (NOT manual OR status = 'PENDING'),
    CONSTRAINT webhook_deliveries_lease_whole CHECK ((lease IS NULL) = (leased_until IS NULL))
);

-- The claim: an endpoint's due deliveries, oldest first (and the endpoints that have any).
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint_id, next_attempt_at, id)
    WHERE status = 'PENDING';
-- The holds an endpoint has.
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (endpoint_id)
    WHERE lease IS NOT NULL;
-- An endpoint's list, newest first.
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);

-- ---------------------------------------------------------------------------------------------
-- The server's role (see the server role's migration). The purge deletes events; their
-- deliveries go by the cascade, which runs as the table's owner.
GRANT SELECT, INSERT, DELETE ON events TO atomic_server;
GRANT SELECT, INSERT, UPDATE (deleted_at) ON webhook_endpoints TO atomic_server;
GRANT SELECT, INSERT,
    UPDATE (status, attempts, failures, last_attempt_at, last_status_code, last_error,
        next_attempt_at, resume_at, manual, lease, leased_until)
    ON webhook_deliveries TO atomic_server;
