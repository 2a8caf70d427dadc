-- Revokes what the up granted in this database. The group role stays: it is the cluster's, and
-- other databases may still grant to it and have login roles in it.
REVOKE ALL ON merchants, accounts, api_keys, idempotency_keys, payments, ledger_transactions,
    ledger_entries, _sqlx_migrations FROM atomic_server;
DO $$
BEGIN
    EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM atomic_server', current_schema());
    EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM atomic_server', current_database());
END $$;
