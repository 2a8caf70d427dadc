-- The voiding mark names the attempt being voided: the lease that charged. A later claim of
-- the payment then voids that attempt and fails the payment, never charging it again. Like the
-- mark, the attempt is set once and stays.
ALTER TABLE payments ADD COLUMN voiding_attempt uuid;
UPDATE payments SET voiding_attempt = lease_id
    WHERE voiding_at IS NOT NULL AND status = 'PROCESSING';
ALTER TABLE payments ADD CONSTRAINT payments_voiding_attempt_marked
    CHECK (voiding_attempt IS NULL OR voiding_at IS NOT NULL);

CREATE FUNCTION payments_guard_voiding_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.voiding_attempt IS NOT NULL
       AND NEW.voiding_attempt IS DISTINCT FROM OLD.voiding_attempt THEN
        RAISE EXCEPTION 'payment % is being voided for good', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_voiding_permanent';
    END IF;
    RETURN NEW;
END $$;
-- Fires only for updates that name the column, so the hot path pays nothing for it.
CREATE TRIGGER payments_guard_voiding_attempt BEFORE UPDATE OF voiding_attempt ON payments
    FOR EACH ROW EXECUTE FUNCTION payments_guard_voiding_attempt();

-- The server's role sets the mark with the attempt (see the server role's migration).
GRANT UPDATE (voiding_attempt) ON payments TO atomic_server;
