DROP TRIGGER payments_guard_voiding ON payments;
DROP FUNCTION payments_guard_voiding();
ALTER TABLE payments DROP CONSTRAINT payments_voided_only_fails;
ALTER TABLE payments DROP COLUMN voiding_at;
