-- A payment is born PENDING, with none of the fields only the worker sets. Updates were guarded
-- (`payments_guard_update`), inserts were not: an INSERT with status SUCCESS skipped the state
-- machine and its posting check (which fires on UPDATE OF status). The lease, failure reason and
-- voiding mark of a PENDING row were already refused by CHECKs; this names them all in one place.
-- The WHEN clause is evaluated without calling the function, so a lawful insert pays nothing.
CREATE FUNCTION payments_refuse_late_birth() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'payment % must be inserted PENDING, without lease, reason or voiding mark',
        NEW.id
        USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_born_pending';
END $$;
CREATE TRIGGER payments_born_pending BEFORE INSERT ON payments
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM 'PENDING' OR NEW.failure_reason IS NOT NULL
          OR NEW.lease_id IS NOT NULL OR NEW.lease_until IS NOT NULL
          OR NEW.voiding_at IS NOT NULL)
    EXECUTE FUNCTION payments_refuse_late_birth();
