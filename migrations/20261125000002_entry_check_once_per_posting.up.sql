-- The posting check ran three times per posting: once for the transaction row and once for each
-- of its two entries. The transaction's own deferred check already sees both entries at commit,
-- and an entry can never be added to a posting afterwards (UNIQUE (transaction_id, direction)
-- leaves no third side, and a posting committed with one side is refused by that check), so
-- the per-entry run only repeated it. Measured: it was a large share of PostgreSQL's CPU per
-- settled payment.
DROP TRIGGER ledger_entries_check ON ledger_entries;
DROP FUNCTION ledger_entries_check();
