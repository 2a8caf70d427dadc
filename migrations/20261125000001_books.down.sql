-- Reverts 20261125000001_books: drops every table and function it created.
DROP TABLE IF EXISTS ledger_entries;
DROP TABLE IF EXISTS ledger_transactions;
DROP TABLE IF EXISTS payments;
DROP TABLE IF EXISTS idempotency_keys;
DROP TABLE IF EXISTS api_keys;
ALTER TABLE IF EXISTS merchants DROP CONSTRAINT IF EXISTS merchants_primary_account_fkey;
DROP TABLE IF EXISTS accounts;
DROP TABLE IF EXISTS merchants;
DROP FUNCTION IF EXISTS ledger_refuse_change();
DROP FUNCTION IF EXISTS payments_check_posting();
DROP FUNCTION IF EXISTS ledger_entries_check();
DROP FUNCTION IF EXISTS ledger_transactions_check();
DROP FUNCTION IF EXISTS ledger_check_transaction(uuid);
DROP FUNCTION IF EXISTS payments_refuse_delete();
DROP FUNCTION IF EXISTS payments_guard_update();
DROP FUNCTION IF EXISTS payments_check_accounts();
