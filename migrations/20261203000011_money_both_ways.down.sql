-- Reverts 20261203000011_money_both_ways to the v1 schema. Refused while the database holds
-- anything only v1.1 can express (refunds, manual captures): reverting would drop money
-- movements from the books.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM refunds)
       OR EXISTS (SELECT 1 FROM payments WHERE capture_method <> 'automatic') THEN
        RAISE EXCEPTION 'cannot revert money_both_ways: refunds or manual captures are stored';
    END IF;
END $$;

REVOKE ALL ON refunds FROM atomic_server;
REVOKE UPDATE (cancellation_reason, capture_requested, amount_captured, amount_reserved,
    amount_refunded) ON payments FROM atomic_server;

-- The ledger as in 20261125000003 (checks) and 20261125000001 (one posting per payment).
CREATE OR REPLACE FUNCTION ledger_check_transaction(tx uuid) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t ledger_transactions;
    p payments;
    sides int;
    entries int;
BEGIN
    SELECT * INTO t FROM ledger_transactions WHERE id = tx;
    SELECT count(*) FILTER (WHERE (e.direction = 'DEBIT' AND e.account_id = t.debit_account)
                              OR (e.direction = 'CREDIT' AND e.account_id = t.credit_account)),
           count(*)
      INTO sides, entries
      FROM ledger_entries e WHERE e.transaction_id = tx;
    IF sides <> 2 OR entries <> 2 THEN
        RAISE EXCEPTION 'ledger transaction % is not one DEBIT and one CREDIT', tx
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_balanced';
    END IF;
    SELECT * INTO p FROM payments WHERE id = t.payment_id;
    IF NOT FOUND OR p.status <> 'SUCCESS'
       OR p.funding_account <> t.debit_account OR p.merchant_account <> t.credit_account THEN
        RAISE EXCEPTION 'ledger transaction % does not post a SUCCESS payment', tx
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_posts_success';
    END IF;
    IF p.amount <> t.amount OR p.currency <> t.currency THEN
        RAISE EXCEPTION 'ledger transaction % does not post its payment''s amount', tx
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_payment_amount';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION payments_check_posting() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'SUCCESS'
       AND NOT EXISTS (SELECT 1 FROM ledger_transactions WHERE payment_id = NEW.id) THEN
        RAISE EXCEPTION 'payment % is SUCCESS without a ledger transaction', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_success_is_posted';
    END IF;
    RETURN NULL;
END $$;

DROP INDEX ledger_entries_account_created;
ALTER TABLE ledger_entries DROP COLUMN refund_id;
ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_one_per_refund;
DROP INDEX ledger_transactions_one_charge_per_payment;
ALTER TABLE ledger_transactions
    ADD CONSTRAINT ledger_transactions_one_per_payment UNIQUE (payment_id);
ALTER TABLE ledger_transactions DROP COLUMN refund_id;

-- Refunds and their checks.
DROP TRIGGER payments_check_counters ON payments;
DROP FUNCTION payments_check_counters();
DROP TABLE refunds;
DROP FUNCTION refunds_check_commit();
DROP FUNCTION payments_check_refund_counters(uuid);
DROP FUNCTION refunds_refuse_delete();
DROP FUNCTION refunds_guard_update();
DROP FUNCTION refunds_check_insert();

-- Payments as in 20261125000001, 20261201000004 and 20261203000005.
DROP INDEX payments_authorized;
DROP INDEX payments_owner_created;
DROP INDEX payments_metadata;

CREATE OR REPLACE FUNCTION payments_guard_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ((OLD.status = NEW.status AND NEW.status IN ('PENDING', 'PROCESSING'))
         OR (OLD.status = 'PENDING' AND NEW.status = 'PROCESSING')
         OR (OLD.status = 'PROCESSING' AND NEW.status IN ('SUCCESS', 'FAILED'))) THEN
        RAISE EXCEPTION 'illegal payment transition % -> %', OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_legal_transition';
    END IF;
    IF (NEW.id, NEW.merchant_account, NEW.funding_account, NEW.owner_merchant, NEW.amount,
        NEW.currency, NEW.source, NEW.idempotency_key, NEW.idempotency_token, NEW.created_by,
        NEW.created_at)
       IS DISTINCT FROM
       (OLD.id, OLD.merchant_account, OLD.funding_account, OLD.owner_merchant, OLD.amount,
        OLD.currency, OLD.source, OLD.idempotency_key, OLD.idempotency_token, OLD.created_by,
        OLD.created_at) THEN
        RAISE EXCEPTION 'payment % is immutable but for its status', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_immutable';
    END IF;
    RETURN NEW;
END $$;

DROP TRIGGER payments_born_pending ON payments;
CREATE TRIGGER payments_born_pending BEFORE INSERT ON payments
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM 'PENDING' OR NEW.failure_reason IS NOT NULL
          OR NEW.lease_id IS NOT NULL OR NEW.lease_until IS NOT NULL
          OR NEW.voiding_at IS NOT NULL)
    EXECUTE FUNCTION payments_refuse_late_birth();

ALTER TABLE payments DROP CONSTRAINT payments_lease_iff_processing;
ALTER TABLE payments ADD CONSTRAINT payments_lease_iff_processing
    CHECK ((status = 'PROCESSING') = (lease_id IS NOT NULL AND lease_until IS NOT NULL));
ALTER TABLE payments
    DROP CONSTRAINT payments_refunds_within_captured,
    DROP CONSTRAINT payments_captured_iff_success,
    DROP CONSTRAINT payments_capture_requested_processing,
    DROP CONSTRAINT payments_authorization_is_manual,
    DROP CONSTRAINT payments_cancellation_iff_canceled,
    DROP COLUMN metadata,
    DROP COLUMN amount_refunded,
    DROP COLUMN amount_reserved,
    DROP COLUMN amount_captured,
    DROP COLUMN capture_requested,
    DROP COLUMN cancellation_reason,
    DROP COLUMN capture_method;
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('PENDING', 'PROCESSING', 'SUCCESS', 'FAILED'));

DROP FUNCTION metadata_within_bounds(jsonb);
