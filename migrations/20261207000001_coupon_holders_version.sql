-- Raised whenever the coupon's holders (its user_coupon rows) change, in
-- the transaction that changes them, after taking the coupon's row: by the
-- processor with the winners it inserts, by an operator's reset that
-- clears them (scripts/reset-db.sh), and by any change by hand (the rule
-- in docs/operations.md; the database does not enforce it). It only ever
-- grows while the row lives, so a worker that
-- remembers a coupon's holders as they were at one value knows its memory
-- is whole while the value read under the lock is the same
-- (common::processor::Holders). An operator's restock by plain SQL changes
-- `stock` only, never this.
-- Written for the common subset of MySQL 8.0 and MariaDB 10.11.

ALTER TABLE coupon
    ADD COLUMN holders_version BIGINT NOT NULL DEFAULT 0 AFTER queue_epoch;
