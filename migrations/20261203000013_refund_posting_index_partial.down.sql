DROP INDEX ledger_transactions_one_per_refund;
ALTER TABLE ledger_transactions
    ADD CONSTRAINT ledger_transactions_one_per_refund UNIQUE (refund_id);
