-- How many users hold the coupon (its user_coupon rows), raised by the
-- processor in the transaction that inserts them, under the coupon's row
-- lock. A worker that remembers a coupon's holders checks its memory
-- against this count (common::processor::Holders) instead of reading the
-- holders among each batch's users. An operator's restock by plain SQL
-- changes `stock` only, never this count.
-- Written for the common subset of MySQL 8.0 and MariaDB 10.11.

ALTER TABLE coupon
    ADD COLUMN issued_count INT NOT NULL DEFAULT 0 AFTER queue_epoch;

UPDATE coupon c
   SET issued_count = (SELECT COUNT(*) FROM user_coupon uc WHERE uc.coupon_id = c.coupon_id);
