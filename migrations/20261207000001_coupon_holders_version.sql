-- Raised whenever the coupon's holders (its user_coupon rows) change, in
-- the transaction that changes them: by the processor with the winners it
-- inserts, under the coupon's row lock, and by an operator's reset that
-- clears them (scripts/reset-db.sh). It only ever grows, so a worker that
-- remembers a coupon's holders as they were at one value knows its memory
-- is whole while the value read under the lock is the same
-- (common::processor::Holders). An operator's restock by plain SQL changes
-- `stock` only, never this.
-- Written for the common subset of MySQL 8.0 and MariaDB 10.11.

ALTER TABLE coupon
    ADD COLUMN holders_version BIGINT NOT NULL DEFAULT 0 AFTER queue_epoch;
