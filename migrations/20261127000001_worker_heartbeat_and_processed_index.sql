-- Workers announce themselves every few seconds (the dashboard lists those
-- seen lately), and results get an index on processed_at so the dashboard's
-- processed-per-second figures read only the last minutes.
-- Written for the common subset of MySQL 8.0 and MariaDB 10.11.

CREATE TABLE worker_heartbeat (
    worker_id     VARCHAR(64)  NOT NULL,
    queue_type    VARCHAR(16)  NOT NULL,
    host          VARCHAR(255) NOT NULL,
    pid           INT          NOT NULL,
    started_at    DATETIME(6)  NOT NULL,
    last_seen_at  DATETIME(6)  NOT NULL,
    PRIMARY KEY (worker_id),
    KEY idx_worker_heartbeat_last_seen (last_seen_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE INDEX idx_coupon_issue_result_processed_at ON coupon_issue_result (processed_at);
