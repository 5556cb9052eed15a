-- Coupons, the coupons users hold, and one result per processed issue request.
-- Written for the common subset of MySQL 8.0 and MariaDB 10.11.

CREATE TABLE coupon (
    coupon_id        BIGINT       NOT NULL AUTO_INCREMENT,
    name             VARCHAR(255) NOT NULL,
    total_quantity   INT          NOT NULL,
    stock            INT          NOT NULL,
    issue_starts_at  DATETIME(6)  NULL,
    issue_ends_at    DATETIME(6)  NULL,
    created_at       DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at       DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    PRIMARY KEY (coupon_id),
    CONSTRAINT chk_coupon_stock_non_negative CHECK (stock >= 0),
    CONSTRAINT chk_coupon_total_non_negative CHECK (total_quantity >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE user_coupon (
    user_coupon_id  BIGINT      NOT NULL AUTO_INCREMENT,
    user_id         BIGINT      NOT NULL,
    coupon_id       BIGINT      NOT NULL,
    status          VARCHAR(20) NOT NULL,
    request_id      CHAR(36)    NOT NULL,
    issued_at       DATETIME(6) NOT NULL,
    PRIMARY KEY (user_coupon_id),
    UNIQUE KEY uk_user_coupon_coupon_user (coupon_id, user_id),
    KEY idx_user_coupon_user (user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE coupon_issue_result (
    request_id      CHAR(36)     NOT NULL,
    coupon_id       BIGINT       NOT NULL,
    user_id         BIGINT       NOT NULL,
    status          VARCHAR(32)  NOT NULL,
    reason          VARCHAR(512) NULL,
    queue_position  VARCHAR(64)  NOT NULL,
    requested_at    DATETIME(6)  NOT NULL,
    processed_at    DATETIME(6)  NOT NULL,
    PRIMARY KEY (request_id),
    KEY idx_coupon_issue_result_coupon_status (coupon_id, status)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
