-- The server's own database role. Migrations run as the owner of the schema; the server connects
-- as a login role that is a member of `atomic_server`, owns nothing, and holds only the grants
-- below. Not being an owner, it cannot ALTER a table, disable a trigger or drop a guard; not
-- being a superuser, it cannot SET session_replication_role (which skips triggers); and the
-- ledger is INSERT and SELECT only. Updates are limited to the columns the server moves.
--
-- Roles belong to the cluster, grants to a database: the group role is created once (by the
-- first database migrated on the cluster, or by a concurrent one) and granted to per database.
-- An operator makes the login role (README):
--   CREATE ROLE atomic_app LOGIN PASSWORD '…' IN ROLE atomic_server;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'atomic_server') THEN
        CREATE ROLE atomic_server NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- another database's migration created it at the same moment
END $$;

DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO atomic_server', current_database());
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO atomic_server', current_schema());
END $$;

GRANT SELECT, INSERT ON merchants TO atomic_server;
GRANT SELECT, INSERT, UPDATE (balance) ON accounts TO atomic_server;
GRANT SELECT, INSERT, UPDATE (revoked_at) ON api_keys TO atomic_server;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO atomic_server;
GRANT SELECT, INSERT,
    UPDATE (status, failure_reason, lease_id, lease_until, touched_at, updated_at, voiding_at)
    ON payments TO atomic_server;
-- Read only, so a server started with MIGRATE=false can name the migrations it lacks.
GRANT SELECT ON _sqlx_migrations TO atomic_server;
-- The ledger is append-only for the server too (its triggers refuse the owner as well).
GRANT SELECT, INSERT ON ledger_transactions, ledger_entries TO atomic_server;
-- No sequences (ids are UUIDs) and no function the server calls directly: trigger functions
-- run without an EXECUTE check, and the drift ones are SECURITY DEFINER.
