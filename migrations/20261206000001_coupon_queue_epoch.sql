-- The processor's fence against late events (invariant S6 of
-- common::switch): the highest queue epoch any processed request of the
-- coupon was accepted in. Read and raised under the coupon's row lock; a
-- request of an earlier epoch that arrives after it is forwarded to the
-- active queue instead of being decided out of order.
-- Written for the common subset of MySQL 8.0 and MariaDB 10.11.

ALTER TABLE coupon
    ADD COLUMN queue_epoch BIGINT NOT NULL DEFAULT 1 AFTER stock;
