-- Money both ways (API.md "Contract v1.1"): authorize now and capture later, cancel, refunds,
-- metadata and created-range filters. The database refuses what the contract forbids:
--   * a status change outside the table of API.md (payments and refunds), and any change of
--     what a payment or refund is;
--   * a second charge posting of a payment, a second posting of a refund;
--   * a charge posting of another amount than `amount_captured`, a refund posting of another
--     amount, accounts or payment than its refund's, or whose refund is not SUCCESS (at commit);
--   * refund reservations above what was captured: `amount_reserved` (the sum of the payment's
--     refunds that are not FAILED) is a counter on the payment under a CHECK, so concurrent
--     refunds serialize on the payment row and can never overshoot;
--   * counters that disagree with the refunds (at commit): `amount_reserved` = Σ refunds not
--     FAILED, `amount_refunded` = Σ SUCCESS refunds;
--   * metadata outside its bounds.

-- Metadata bounds: a JSON object of at most 20 keys; a key is 1..40 characters of
-- [A-Za-z0-9_.-]; a value is a string of at most 500 characters. A NUL cannot be stored at
-- all: jsonb refuses the escape \u0000 (SQLSTATE 22P05) before any check runs.
CREATE FUNCTION metadata_within_bounds(m jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT jsonb_typeof(m) = 'object'
       AND (SELECT count(*) FROM jsonb_object_keys(m)) <= 20
       AND NOT EXISTS (
           SELECT 1 FROM jsonb_each(m) AS e(key, value)
           WHERE e.key !~ '^[A-Za-z0-9_.-]{1,40}$'
              OR jsonb_typeof(e.value) <> 'string'
              OR char_length(e.value #>> '{}') > 500)
$$;

-- ---------------------------------------------------------------------------------------------
-- Payments.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN
    ('PENDING', 'PROCESSING', 'AUTHORIZED', 'SUCCESS', 'FAILED', 'CANCELED'));
ALTER TABLE payments
    ADD COLUMN capture_method text NOT NULL DEFAULT 'automatic'
        CONSTRAINT payments_capture_method_known CHECK (capture_method IN ('automatic', 'manual')),
    ADD COLUMN cancellation_reason text
        CONSTRAINT payments_cancellation_reason_known
        CHECK (cancellation_reason IN ('requested', 'expired')),
    ADD COLUMN capture_requested bigint,
    ADD COLUMN amount_captured bigint NOT NULL DEFAULT 0,
    ADD COLUMN amount_reserved bigint NOT NULL DEFAULT 0,
    ADD COLUMN amount_refunded bigint NOT NULL DEFAULT 0,
    ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT payments_metadata_bounds CHECK (metadata_within_bounds(metadata));

ALTER TABLE payments
    ADD CONSTRAINT payments_cancellation_iff_canceled
        CHECK ((status = 'CANCELED') = (cancellation_reason IS NOT NULL)),
    -- Only a manual capture is ever AUTHORIZED, CANCELED or capturing.
    ADD CONSTRAINT payments_authorization_is_manual
        CHECK (capture_method = 'manual'
               OR (status NOT IN ('AUTHORIZED', 'CANCELED') AND capture_requested IS NULL)),
    -- A capture is asked of the authorized amount, and waits only while PROCESSING.
    ADD CONSTRAINT payments_capture_requested_processing
        CHECK (capture_requested IS NULL
               OR (status = 'PROCESSING' AND capture_requested BETWEEN 1 AND amount)),
    -- Something was captured exactly when SUCCESS; an automatic capture takes it all.
    ADD CONSTRAINT payments_captured_iff_success
        CHECK ((status = 'SUCCESS') = (amount_captured > 0)
               AND (capture_method = 'manual' OR status <> 'SUCCESS' OR amount_captured = amount)),
    -- 0 <= refunded <= reserved <= captured <= amount.
    ADD CONSTRAINT payments_refunds_within_captured
        CHECK (0 <= amount_refunded AND amount_refunded <= amount_reserved
               AND amount_reserved <= amount_captured AND amount_captured <= amount);

-- A lease exists only while PROCESSING, and a PROCESSING payment is held unless a capture was
-- just asked (nobody holds it until a worker claims it).
ALTER TABLE payments DROP CONSTRAINT payments_lease_iff_processing;
ALTER TABLE payments ADD CONSTRAINT payments_lease_iff_processing
    CHECK ((lease_id IS NULL) = (lease_until IS NULL)
           AND (lease_id IS NULL OR status = 'PROCESSING')
           AND (status <> 'PROCESSING' OR lease_id IS NOT NULL OR capture_requested IS NOT NULL));

-- Born PENDING, with none of the fields the worker, a capture or a refund sets.
DROP TRIGGER payments_born_pending ON payments;
CREATE TRIGGER payments_born_pending BEFORE INSERT ON payments
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM 'PENDING' OR NEW.failure_reason IS NOT NULL
          OR NEW.lease_id IS NOT NULL OR NEW.lease_until IS NOT NULL
          OR NEW.voiding_at IS NOT NULL OR NEW.cancellation_reason IS NOT NULL
          OR NEW.capture_requested IS NOT NULL OR NEW.amount_captured <> 0
          OR NEW.amount_reserved <> 0 OR NEW.amount_refunded <> 0)
    EXECUTE FUNCTION payments_refuse_late_birth();

-- The state machine of API.md v1.1:
--   PENDING -> PROCESSING -> SUCCESS | FAILED             (automatic capture)
--   PROCESSING -> AUTHORIZED -> PROCESSING -> SUCCESS | FAILED, AUTHORIZED -> CANCELED (manual)
-- and the same status again only for the bookkeeping of PENDING (sweep marks), PROCESSING
-- (leases) and SUCCESS (refund counters). What a payment is never changes; the captured amount
-- is written once, by the SUCCESS that posts it, and is the capture asked (or the whole amount);
-- the refund counters move only while SUCCESS, and `amount_refunded` never goes down.
CREATE OR REPLACE FUNCTION payments_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ((OLD.status = NEW.status AND NEW.status IN ('PENDING', 'PROCESSING', 'SUCCESS'))
         OR (OLD.status = 'PENDING' AND NEW.status = 'PROCESSING')
         OR (OLD.status = 'PROCESSING' AND NEW.status IN ('SUCCESS', 'FAILED'))
         OR (OLD.status = 'PROCESSING' AND NEW.status = 'AUTHORIZED'
             AND OLD.capture_requested IS NULL)
         OR (OLD.status = 'AUTHORIZED' AND NEW.status = 'PROCESSING'
             AND NEW.capture_requested IS NOT NULL)
         OR (OLD.status = 'AUTHORIZED' AND NEW.status = 'CANCELED')) THEN
        RAISE EXCEPTION 'illegal payment transition % -> %', OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_legal_transition';
    END IF;
    IF (NEW.id, NEW.merchant_account, NEW.funding_account, NEW.owner_merchant, NEW.amount,
        NEW.currency, NEW.source, NEW.description, NEW.capture_method, NEW.metadata,
        NEW.idempotency_key, NEW.idempotency_token, NEW.created_by, NEW.created_at)
       IS DISTINCT FROM
       (OLD.id, OLD.merchant_account, OLD.funding_account, OLD.owner_merchant, OLD.amount,
        OLD.currency, OLD.source, OLD.description, OLD.capture_method, OLD.metadata,
        OLD.idempotency_key, OLD.idempotency_token, OLD.created_by, OLD.created_at) THEN
        RAISE EXCEPTION 'payment % is immutable but for its state', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_immutable';
    END IF;
    IF NEW.capture_requested IS DISTINCT FROM OLD.capture_requested
       AND NOT (OLD.status = 'AUTHORIZED' AND NEW.status = 'PROCESSING')
       AND NOT (OLD.status = 'PROCESSING' AND NEW.status <> 'PROCESSING') THEN
        RAISE EXCEPTION 'payment % capture is asked only of an authorization', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_legal_transition';
    END IF;
    IF NEW.amount_captured IS DISTINCT FROM OLD.amount_captured
       AND NOT (OLD.status = 'PROCESSING' AND NEW.status = 'SUCCESS'
                AND NEW.amount_captured = coalesce(OLD.capture_requested, OLD.amount)) THEN
        RAISE EXCEPTION 'payment % captures once, what was asked', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_capture_once';
    END IF;
    IF (NEW.amount_reserved, NEW.amount_refunded) IS DISTINCT FROM
       (OLD.amount_reserved, OLD.amount_refunded)
       AND NOT (OLD.status = 'SUCCESS' AND NEW.status = 'SUCCESS'
                AND NEW.amount_refunded >= OLD.amount_refunded) THEN
        RAISE EXCEPTION 'payment % refund counters move only while SUCCESS, forward', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_refund_counters';
    END IF;
    RETURN NEW;
END $$;

-- Lists: metadata filters (`metadata @> '{"orderId":"A-1"}'`) by a GIN index that holds only
-- the payments that have metadata (a query repeats `metadata <> '{}'`, true of every match of
-- a non-empty filter, so the planner can use it, and a payment without metadata costs it
-- nothing); a merchant's created range by (owner, created_at) when it is narrow, else by the
-- newest-first walk of (owner, id) that every page already takes.
CREATE INDEX payments_metadata ON payments USING gin (metadata jsonb_path_ops)
    WHERE metadata <> '{}';
CREATE INDEX payments_owner_created ON payments (owner_merchant, created_at, id);
-- Authorizations waiting (what expiry looks at).
CREATE INDEX payments_authorized ON payments (updated_at) WHERE status = 'AUTHORIZED';

-- ---------------------------------------------------------------------------------------------
-- Refunds. Their accounts, owner and currency are their payment's (checked on insert); their
-- amount is reserved on the payment in the same transaction as the insert.
CREATE TABLE refunds (
    id                uuid PRIMARY KEY,
    payment_id        uuid NOT NULL REFERENCES payments (id),
    merchant_account  uuid NOT NULL,
    funding_account   uuid NOT NULL,
    owner_merchant    uuid REFERENCES merchants (id),
    amount            bigint NOT NULL CHECK (amount BETWEEN 1 AND 99999999),
    currency          char(3) NOT NULL,
    reason            text CHECK (reason IN ('duplicate', 'fraudulent', 'requested_by_customer')),
    status            text NOT NULL
        CHECK (status IN ('PENDING', 'PROCESSING', 'SUCCESS', 'FAILED')),
    failure_reason    text
        CHECK (failure_reason IN ('insufficient_balance', 'processing_error')),
    metadata          jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT refunds_metadata_bounds CHECK (metadata_within_bounds(metadata)),
    idempotency_key   text,
    idempotency_token uuid,
    created_by        uuid,
    lease_id          uuid,
    lease_until       timestamptz,
    touched_at        timestamptz NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    CONSTRAINT refunds_reason_iff_failed CHECK ((status = 'FAILED') = (failure_reason IS NOT NULL)),
    CONSTRAINT refunds_lease_iff_processing
        CHECK ((status = 'PROCESSING') = (lease_id IS NOT NULL AND lease_until IS NOT NULL)),
    CONSTRAINT refunds_one_per_claim UNIQUE (idempotency_token)
);
CREATE INDEX refunds_owner ON refunds (owner_merchant, id);
CREATE INDEX refunds_payment ON refunds (payment_id, id);
CREATE INDEX refunds_open ON refunds (touched_at) WHERE status IN ('PENDING', 'PROCESSING');
CREATE INDEX refunds_metadata ON refunds USING gin (metadata jsonb_path_ops)
    WHERE metadata <> '{}';
CREATE INDEX refunds_owner_created ON refunds (owner_merchant, created_at, id);

-- A refund is born PENDING, of its payment's accounts, owner and currency.
CREATE FUNCTION refunds_check_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM 'PENDING' OR NEW.failure_reason IS NOT NULL
       OR NEW.lease_id IS NOT NULL OR NEW.lease_until IS NOT NULL THEN
        RAISE EXCEPTION 'refund % must be inserted PENDING, without lease or reason', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'refunds_born_pending';
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM payments p
        WHERE p.id = NEW.payment_id AND p.merchant_account = NEW.merchant_account
          AND p.funding_account = NEW.funding_account AND p.currency = NEW.currency
          AND p.owner_merchant IS NOT DISTINCT FROM NEW.owner_merchant
    ) THEN
        RAISE EXCEPTION 'refund % disagrees with its payment', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'refunds_match_payment';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refunds_check_insert BEFORE INSERT ON refunds
    FOR EACH ROW EXECUTE FUNCTION refunds_check_insert();

-- PENDING -> PROCESSING -> SUCCESS | FAILED; PENDING and PROCESSING again for sweep marks and
-- leases. What a refund is never changes.
CREATE FUNCTION refunds_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ((OLD.status = NEW.status AND NEW.status IN ('PENDING', 'PROCESSING'))
         OR (OLD.status = 'PENDING' AND NEW.status = 'PROCESSING')
         OR (OLD.status = 'PROCESSING' AND NEW.status IN ('SUCCESS', 'FAILED'))) THEN
        RAISE EXCEPTION 'illegal refund transition % -> %', OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'refunds_legal_transition';
    END IF;
    IF (NEW.id, NEW.payment_id, NEW.merchant_account, NEW.funding_account, NEW.owner_merchant,
        NEW.amount, NEW.currency, NEW.reason, NEW.metadata, NEW.idempotency_key,
        NEW.idempotency_token, NEW.created_by, NEW.created_at)
       IS DISTINCT FROM
       (OLD.id, OLD.payment_id, OLD.merchant_account, OLD.funding_account, OLD.owner_merchant,
        OLD.amount, OLD.currency, OLD.reason, OLD.metadata, OLD.idempotency_key,
        OLD.idempotency_token, OLD.created_by, OLD.created_at) THEN
        RAISE EXCEPTION 'refund % is immutable but for its state', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'refunds_immutable';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refunds_guard_update BEFORE UPDATE ON refunds
    FOR EACH ROW EXECUTE FUNCTION refunds_guard_update();

CREATE FUNCTION refunds_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'refunds are never deleted'
        USING ERRCODE = 'check_violation', CONSTRAINT = 'refunds_permanent';
END $$;
CREATE TRIGGER refunds_refuse_delete BEFORE DELETE ON refunds
    FOR EACH ROW EXECUTE FUNCTION refunds_refuse_delete();

-- At commit: a payment's counters are the sums of its refunds.
CREATE FUNCTION payments_check_refund_counters(payment uuid) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    p payments;
    reserved bigint;
    refunded bigint;
BEGIN
    SELECT * INTO p FROM payments WHERE id = payment;
    SELECT coalesce(sum(amount) FILTER (WHERE status <> 'FAILED'), 0),
           coalesce(sum(amount) FILTER (WHERE status = 'SUCCESS'), 0)
      INTO reserved, refunded
      FROM refunds WHERE payment_id = payment;
    IF p.amount_reserved <> reserved OR p.amount_refunded <> refunded THEN
        RAISE EXCEPTION 'payment % counters (reserved %, refunded %) are not its refunds (%, %)',
            payment, p.amount_reserved, p.amount_refunded, reserved, refunded
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_counters_match_refunds';
    END IF;
END $$;

CREATE FUNCTION payments_check_counters() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM payments_check_refund_counters(NEW.id);
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER payments_check_counters
    AFTER UPDATE OF amount_reserved, amount_refunded ON payments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.amount_reserved IS DISTINCT FROM NEW.amount_reserved
          OR OLD.amount_refunded IS DISTINCT FROM NEW.amount_refunded)
    EXECUTE FUNCTION payments_check_counters();

-- A refund inserted, or ended: its payment's counters must have followed; a SUCCESS refund has
-- its posting.
CREATE FUNCTION refunds_check_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM payments_check_refund_counters(NEW.payment_id);
    IF NEW.status = 'SUCCESS'
       AND NOT EXISTS (SELECT 1 FROM ledger_transactions WHERE refund_id = NEW.id) THEN
        RAISE EXCEPTION 'refund % is SUCCESS without a ledger transaction', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'refunds_success_is_posted';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER refunds_check_insert_commit AFTER INSERT ON refunds
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refunds_check_commit();
CREATE CONSTRAINT TRIGGER refunds_check_end_commit AFTER UPDATE OF status ON refunds
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.status IN ('SUCCESS', 'FAILED') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION refunds_check_commit();

-- ---------------------------------------------------------------------------------------------
-- The ledger: a transaction is a payment's charge posting (`refund_id` NULL, at most one per
-- payment) or a refund's posting (at most one per refund); entries carry their transaction's.
ALTER TABLE ledger_transactions ADD COLUMN refund_id uuid REFERENCES refunds (id);
ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_one_per_payment;
CREATE UNIQUE INDEX ledger_transactions_one_charge_per_payment ON ledger_transactions (payment_id)
    WHERE refund_id IS NULL;
ALTER TABLE ledger_transactions
    ADD CONSTRAINT ledger_transactions_one_per_refund UNIQUE (refund_id);
ALTER TABLE ledger_entries ADD COLUMN refund_id uuid REFERENCES refunds (id);
CREATE INDEX ledger_entries_account_created ON ledger_entries (account_id, created_at, id);

-- At commit (L2, L3, L13): every transaction written has both sides on the right accounts with
-- its refund; a charge posts its SUCCESS payment's captured amount from the funding to the
-- merchant account; a refund posting posts its SUCCESS refund's amount back.
CREATE OR REPLACE FUNCTION ledger_check_transaction(tx uuid) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t ledger_transactions;
    p payments;
    r refunds;
    sides int;
    entries int;
BEGIN
    SELECT * INTO t FROM ledger_transactions WHERE id = tx;
    SELECT count(*) FILTER (WHERE ((e.direction = 'DEBIT' AND e.account_id = t.debit_account)
                                OR (e.direction = 'CREDIT' AND e.account_id = t.credit_account))
                               AND e.refund_id IS NOT DISTINCT FROM t.refund_id),
           count(*)
      INTO sides, entries
      FROM ledger_entries e WHERE e.transaction_id = tx;
    IF sides <> 2 OR entries <> 2 THEN
        RAISE EXCEPTION 'ledger transaction % is not one DEBIT and one CREDIT', tx
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_balanced';
    END IF;
    IF t.refund_id IS NOT NULL THEN
        SELECT * INTO r FROM refunds WHERE id = t.refund_id;
        IF NOT FOUND OR r.status <> 'SUCCESS' OR r.payment_id <> t.payment_id
           OR r.merchant_account <> t.debit_account OR r.funding_account <> t.credit_account THEN
            RAISE EXCEPTION 'ledger transaction % does not post a SUCCESS refund', tx
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_posts_refund';
        END IF;
        IF r.amount <> t.amount OR r.currency <> t.currency THEN
            RAISE EXCEPTION 'ledger transaction % does not post its refund''s amount', tx
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_refund_amount';
        END IF;
        RETURN;
    END IF;
    SELECT * INTO p FROM payments WHERE id = t.payment_id;
    IF NOT FOUND OR p.status <> 'SUCCESS'
       OR p.funding_account <> t.debit_account OR p.merchant_account <> t.credit_account THEN
        RAISE EXCEPTION 'ledger transaction % does not post a SUCCESS payment', tx
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_posts_success';
    END IF;
    IF p.amount_captured <> t.amount OR p.currency <> t.currency THEN
        RAISE EXCEPTION 'ledger transaction % does not post its payment''s captured amount', tx
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_payment_amount';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION payments_check_posting() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'SUCCESS' AND NOT EXISTS (
        SELECT 1 FROM ledger_transactions WHERE payment_id = NEW.id AND refund_id IS NULL) THEN
        RAISE EXCEPTION 'payment % is SUCCESS without a ledger transaction', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_success_is_posted';
    END IF;
    RETURN NULL;
END $$;
-- The status check fires on every UPDATE OF status; refund counters do not touch it.

-- ---------------------------------------------------------------------------------------------
-- The server's role: the columns it moves, and refunds like payments.
GRANT UPDATE (cancellation_reason, capture_requested, amount_captured, amount_reserved,
    amount_refunded) ON payments TO atomic_server;
GRANT SELECT, INSERT,
    UPDATE (status, failure_reason, lease_id, lease_until, touched_at, updated_at)
    ON refunds TO atomic_server;
