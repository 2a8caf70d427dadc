-- A refund is posted at most once, by a unique index that holds only refund postings: a
-- charge posting (no refund) adds no entry to it, and charges are most postings.
ALTER TABLE ledger_transactions DROP CONSTRAINT ledger_transactions_one_per_refund;
CREATE UNIQUE INDEX ledger_transactions_one_per_refund ON ledger_transactions (refund_id)
    WHERE refund_id IS NOT NULL;
