-- Fewer index writes per payment. A payment row is written three times (insert, PROCESSING,
-- final) and none of those updates can be HOT, so every index on `payments` costs three index
-- inserts per payment; with seven indexes that was 20 index writes per payment, a large part of
-- PostgreSQL's CPU under load (BENCHMARKS.md).
--
-- - `payments_status (status, id)` and `payments_owner_status (owner_merchant, status, id)` kept
--   every payment in two status indexes for ever. Lists filtered by a final status read the
--   owner index (or the primary key) and filter, which is cheap because SUCCESS and FAILED are
--   most rows; lists of open payments, the ones that must be fast, use one partial index that
--   holds only PENDING and PROCESSING rows (a payment leaves it when it ends).
-- - `payments_id_amount UNIQUE (id, amount, currency)` existed only as the target of the
--   ledger's composite foreign key. The deferred posting check now compares the transaction's
--   amount and currency with its payment's (it already read that row), and the foreign key
--   points at the primary key. The check reads the payment and the entries once each.
DROP INDEX payments_status;
DROP INDEX payments_owner_status;
CREATE INDEX payments_owner_open ON payments (owner_merchant, status, id)
    WHERE status IN ('PENDING', 'PROCESSING');

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

ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_payment_fkey;
ALTER TABLE ledger_transactions ADD CONSTRAINT ledger_transactions_payment_fkey
    FOREIGN KEY (payment_id) REFERENCES payments (id);
ALTER TABLE payments DROP CONSTRAINT payments_id_amount;
