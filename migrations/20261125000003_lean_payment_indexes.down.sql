ALTER TABLE payments ADD CONSTRAINT payments_id_amount UNIQUE (id, amount, currency);
ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_payment_fkey;
ALTER TABLE ledger_transactions ADD CONSTRAINT ledger_transactions_payment_fkey
    FOREIGN KEY (payment_id, amount, currency) REFERENCES payments (id, amount, currency);

CREATE OR REPLACE FUNCTION ledger_check_transaction(tx uuid) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t ledger_transactions;
    sides int;
BEGIN
    SELECT * INTO t FROM ledger_transactions WHERE id = tx;
    SELECT count(*) INTO sides FROM ledger_entries e
    WHERE e.transaction_id = tx
      AND ((e.direction = 'DEBIT' AND e.account_id = t.debit_account)
        OR (e.direction = 'CREDIT' AND e.account_id = t.credit_account));
    IF sides <> 2 OR (SELECT count(*) FROM ledger_entries WHERE transaction_id = tx) <> 2 THEN
        RAISE EXCEPTION 'ledger transaction % is not one DEBIT and one CREDIT', tx
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_balanced';
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM payments p
        WHERE p.id = t.payment_id AND p.status = 'SUCCESS'
          AND p.funding_account = t.debit_account AND p.merchant_account = t.credit_account
    ) THEN
        RAISE EXCEPTION 'ledger transaction % does not post a SUCCESS payment', tx
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_posts_success';
    END IF;
END $$;

DROP INDEX payments_owner_open;
CREATE INDEX payments_owner_status ON payments (owner_merchant, status, id);
CREATE INDEX payments_status ON payments (status, id);
