-- The active queue as a shared record, so that a running service can move
-- between Redis and Kafka: one row per epoch (the first from APP_QUEUE_TYPE,
-- one more per switch), the api instances that follow it, and on every
-- result the queue and epoch its request was accepted in.
-- Written for the common subset of MySQL 8.0 and MariaDB 10.11.

CREATE TABLE queue_epoch (
    epoch           BIGINT       NOT NULL,
    queue_type      VARCHAR(16)  NOT NULL,
    reason          VARCHAR(32)  NOT NULL,
    started_at      DATETIME(6)  NOT NULL,
    -- Set once no api can enqueue into the previous epoch's queue any more;
    -- a next switch waits for it.
    settled_at      DATETIME(6)  NULL,
    -- When the previous epoch's queue is Kafka: the topic's high watermarks
    -- at settling, as JSON {"partition": offset, ...}. Everything the
    -- previous epochs put there lies below them.
    previous_marks  TEXT         NULL,
    PRIMARY KEY (epoch)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE api_instance (
    instance_id     VARCHAR(64)  NOT NULL,
    -- The epoch whose queue this instance enqueues into; 0 until it has read
    -- the record. Written only once enqueues into earlier queues are over.
    followed_epoch  BIGINT       NOT NULL,
    last_seen_at    DATETIME(6)  NOT NULL,
    PRIMARY KEY (instance_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

ALTER TABLE coupon_issue_result
    ADD COLUMN queue_type  VARCHAR(16) NOT NULL DEFAULT 'redis' AFTER queue_position,
    ADD COLUMN queue_epoch BIGINT      NOT NULL DEFAULT 1 AFTER queue_type;
