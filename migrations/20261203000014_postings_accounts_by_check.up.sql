-- A posting's accounts are checked by its posting check at commit, not by foreign keys.
--
-- A foreign key check share-locks the account row it finds. Every posting names the system
-- account and the merchant's, the rows every settlement batch updates, so the postings of a
-- batch could only be written while the batch held those rows for update (else each share
-- lock on a row another batch holds becomes a multixact), and the hot rows were held for the
-- whole insert. Without the foreign keys a batch writes its postings first and holds the hot
-- rows only for the balance update and the commit.
--
-- Nothing is lost: at commit `ledger_check_transaction` refuses a posting whose accounts are
-- not its payment's (a charge: funding -> merchant) or its refund's (merchant -> funding),
-- and entries not on exactly those two accounts. A payment's accounts are foreign keys of
-- its own, with its currency (`payments_*_account_fkey`); a refund's are its payment's
-- (checked on insert); the entries share their posting's currency
-- (`ledger_entries_transaction_fkey`). Payments are never deleted, so neither is an account
-- a posting names.
ALTER TABLE ledger_transactions
    DROP CONSTRAINT ledger_transactions_debit_fkey,
    DROP CONSTRAINT ledger_transactions_credit_fkey;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_account_fkey;
