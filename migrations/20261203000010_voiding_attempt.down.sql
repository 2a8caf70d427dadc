REVOKE UPDATE (voiding_attempt) ON payments FROM atomic_server;
DROP TRIGGER payments_guard_voiding_attempt ON payments;
DROP FUNCTION payments_guard_voiding_attempt();
ALTER TABLE payments DROP CONSTRAINT payments_voiding_attempt_marked;
ALTER TABLE payments DROP COLUMN voiding_attempt;
