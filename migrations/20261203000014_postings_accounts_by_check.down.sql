ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_account_fkey
    FOREIGN KEY (account_id, currency) REFERENCES accounts (id, currency);
ALTER TABLE ledger_transactions
    ADD CONSTRAINT ledger_transactions_debit_fkey
        FOREIGN KEY (debit_account, currency) REFERENCES accounts (id, currency),
    ADD CONSTRAINT ledger_transactions_credit_fkey
        FOREIGN KEY (credit_account, currency) REFERENCES accounts (id, currency);
