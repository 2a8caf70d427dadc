-- A payment whose charge is being voided can only fail. The worker marks it (under its lease)
-- before it asks the processor to void, so a later attempt, whose charge of the same payment id
-- may replay the original approval, can never post it: the database refuses SUCCESS for it.
-- Once set, the mark stays; it is set only while the payment is PROCESSING.
ALTER TABLE payments ADD COLUMN voiding_at timestamptz;
ALTER TABLE payments ADD CONSTRAINT payments_voided_only_fails
    CHECK (voiding_at IS NULL OR status IN ('PROCESSING', 'FAILED'));

CREATE FUNCTION payments_guard_voiding() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.voiding_at IS NOT NULL AND NEW.voiding_at IS DISTINCT FROM OLD.voiding_at THEN
        RAISE EXCEPTION 'payment % is being voided for good', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_voiding_permanent';
    END IF;
    IF OLD.voiding_at IS NULL AND NEW.voiding_at IS NOT NULL AND OLD.status <> 'PROCESSING' THEN
        RAISE EXCEPTION 'payment % is not being processed', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_voiding_permanent';
    END IF;
    RETURN NEW;
END $$;
-- Fires only for updates that name the column, so the hot path pays nothing for it.
CREATE TRIGGER payments_guard_voiding BEFORE UPDATE OF voiding_at ON payments
    FOR EACH ROW EXECUTE FUNCTION payments_guard_voiding();
