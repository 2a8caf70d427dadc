-- L4 held by the database: within one database transaction, every account's balance moves by
-- exactly the entries written for it (CREDIT adds, DEBIT subtracts), and an account is opened
-- with a zero balance. A balance UPDATE the journal does not explain, or entries whose balance
-- is not moved, are refused at commit.
--
-- How: statement-level triggers with transition tables (one call per statement, however many
-- rows: a settlement batch is one statement) add each statement's balance changes, and subtract
-- its entries, into a per-transaction drift; at commit a deferred check refuses any drift left.
-- The drift is kept in an UNLOGGED table that only the owner can touch (the triggers that write
-- it are SECURITY DEFINER), so the server's role can neither see nor clear it. A settlement
-- statement moves balances and writes entries together, so its drift row is written by the first
-- of its two triggers and deleted by the second: a committed transaction leaves no row.
CREATE UNLOGGED TABLE ledger_balance_drift (
    xact  xid8 PRIMARY KEY,
    -- account id -> (balance moved − journal moved) so far in this transaction, never 0.
    drift jsonb NOT NULL
);
REVOKE ALL ON ledger_balance_drift FROM PUBLIC;

-- Adds `change` (account id -> amount) to this transaction's drift.
CREATE FUNCTION ledger_record_drift(change jsonb) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    x xid8 := pg_current_xact_id();
    merged jsonb;
BEGIN
    SELECT jsonb_object_agg(account, total) INTO merged FROM (
        SELECT account, sum(amount) AS total FROM (
            SELECT d.key AS account, d.value::numeric AS amount
              FROM ledger_balance_drift b, jsonb_each_text(b.drift) d WHERE b.xact = x
            UNION ALL
            SELECT c.key, c.value::numeric FROM jsonb_each_text(change) c
        ) s GROUP BY account HAVING sum(amount) <> 0
    ) t;
    IF merged IS NULL THEN
        DELETE FROM ledger_balance_drift WHERE xact = x;
    ELSE
        INSERT INTO ledger_balance_drift (xact, drift) VALUES (x, merged)
            ON CONFLICT (xact) DO UPDATE SET drift = EXCLUDED.drift;
    END IF;
END $$;
REVOKE EXECUTE ON FUNCTION ledger_record_drift(jsonb) FROM PUBLIC;

-- Balance changes of one UPDATE (or opening balances of one INSERT) of accounts.
CREATE FUNCTION accounts_record_drift() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    change jsonb;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        SELECT jsonb_object_agg(id, delta) INTO change FROM (
            SELECT id, sum(amount) AS delta FROM (
                SELECT id, balance::numeric AS amount FROM new_rows
                UNION ALL
                SELECT id, -balance::numeric FROM old_rows
            ) s GROUP BY id HAVING sum(amount) <> 0
        ) t;
    ELSE
        SELECT jsonb_object_agg(id, balance) INTO change FROM new_rows WHERE balance <> 0;
    END IF;
    IF change IS NOT NULL THEN
        PERFORM ledger_record_drift(change);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER accounts_record_balance_change AFTER UPDATE ON accounts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION accounts_record_drift();
CREATE TRIGGER accounts_record_opening_balance AFTER INSERT ON accounts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION accounts_record_drift();

-- What one INSERT of entries moves, taken off the drift.
CREATE FUNCTION ledger_entries_record_drift() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    change jsonb;
BEGIN
    SELECT jsonb_object_agg(account_id, moved) INTO change FROM (
        SELECT account_id,
               sum(CASE direction WHEN 'CREDIT' THEN -amount ELSE amount END)::numeric AS moved
          FROM new_entries GROUP BY account_id
    ) t WHERE moved <> 0;
    IF change IS NOT NULL THEN
        PERFORM ledger_record_drift(change);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER ledger_entries_record_drift AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_record_drift();

-- At commit: no drift left. `_if_assigned`: a transaction that wrote nothing has none.
CREATE FUNCTION ledger_check_balances() RETURNS void LANGUAGE plpgsql
    SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    left_over jsonb;
BEGIN
    SELECT drift INTO left_over FROM ledger_balance_drift
     WHERE xact = pg_current_xact_id_if_assigned();
    IF FOUND THEN
        RAISE EXCEPTION 'balances moved other than their entries (account: balance - journal): %',
            left_over
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_balances_follow_journal';
    END IF;
END $$;

CREATE FUNCTION accounts_check_balance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_check_balances();
    RETURN NULL;
END $$;
-- A balance moved (or an account opened with one) without a posting: checked at commit.
CREATE CONSTRAINT TRIGGER accounts_check_balance AFTER UPDATE OF balance, id ON accounts
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.balance IS DISTINCT FROM NEW.balance OR OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION accounts_check_balance();
CREATE CONSTRAINT TRIGGER accounts_check_opening_balance AFTER INSERT ON accounts
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.balance <> 0)
    EXECUTE FUNCTION accounts_check_balance();

-- Entries without their balance change: every entry belongs to a ledger transaction written in
-- the same database transaction (a posting is complete at commit, and a complete one takes no
-- more entries), so the posting's own deferred check also checks the drift, after its own
-- checks. No extra trigger event per posting.
CREATE OR REPLACE FUNCTION ledger_transactions_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_check_transaction(NEW.id);
    PERFORM ledger_check_balances();
    RETURN NULL;
END $$;
