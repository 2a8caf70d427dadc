DROP TRIGGER refunds_metadata_bounds ON refunds;
DROP TRIGGER payments_metadata_bounds ON payments;
DROP FUNCTION metadata_check_insert();
ALTER TABLE payments ADD CONSTRAINT payments_metadata_bounds CHECK (metadata_within_bounds(metadata));
ALTER TABLE refunds ADD CONSTRAINT refunds_metadata_bounds CHECK (metadata_within_bounds(metadata));
