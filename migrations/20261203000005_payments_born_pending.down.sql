DROP TRIGGER payments_born_pending ON payments;
DROP FUNCTION payments_refuse_late_birth();
