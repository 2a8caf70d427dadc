CREATE OR REPLACE FUNCTION ledger_transactions_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_check_transaction(NEW.id);
    RETURN NULL;
END $$;
DROP TRIGGER accounts_check_opening_balance ON accounts;
DROP TRIGGER accounts_check_balance ON accounts;
DROP FUNCTION accounts_check_balance();
DROP FUNCTION ledger_check_balances();
DROP TRIGGER ledger_entries_record_drift ON ledger_entries;
DROP FUNCTION ledger_entries_record_drift();
DROP TRIGGER accounts_record_opening_balance ON accounts;
DROP TRIGGER accounts_record_balance_change ON accounts;
DROP FUNCTION accounts_record_drift();
DROP FUNCTION ledger_record_drift(jsonb);
DROP TABLE ledger_balance_drift;
