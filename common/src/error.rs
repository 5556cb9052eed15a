//! Error types of the shared subsystems.

use crate::domain::DecodeError;

use sqlx::mysql::MySqlDatabaseError;

/// MySQL error number of a duplicate key (`ER_DUP_ENTRY`).
const ER_DUP_ENTRY: u16 = 1062;
/// Error numbers that mean "try the same thing again": deadlock, lock wait
/// timeout, too many connections, server shutting down, connection killed,
/// lost connection.
const RETRYABLE_NUMBERS: [u16; 6] = [1213, 1205, 1040, 1053, 1927, 2013];

/// The MySQL error number (not the SQLSTATE) of a database error.
fn mysql_number(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    }
}

/// Failures of the processor and the other database work.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("duplicate key: {0}")]
    UniqueViolation(String),
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl DbError {
    /// Maps a sqlx error, turning MySQL error 1062 into [`DbError::UniqueViolation`].
    /// This is the one place that knows the number.
    pub fn from_sqlx(e: sqlx::Error) -> Self {
        if mysql_number(&e) == Some(ER_DUP_ENTRY) {
            return DbError::UniqueViolation(e.to_string());
        }
        DbError::Sqlx(e)
    }

    /// Whether retrying the same work later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Sqlx(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_) => true,
                sqlx::Error::Database(_) => {
                    mysql_number(e).is_some_and(|n| RETRYABLE_NUMBERS.contains(&n))
                }
                _ => false,
            },
            // Two writers raced on the same (coupon, user); a retry sees the winner.
            DbError::UniqueViolation(_) => true,
            DbError::InvalidBatch(_) | DbError::Migrate(_) => false,
        }
    }
}

/// Failures of a queue backend.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    #[error("queue did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The request reached the broker but its answer was lost: it may or may
    /// not be queued.
    #[error("queue outcome unknown: {0}")]
    Uncertain(String),
    #[error("undecodable event: {0}")]
    Decode(#[from] DecodeError),
    /// Refused, nothing enqueued: a worker marked the coupon sold out.
    #[error("coupon {0} is sold out")]
    SoldOut(crate::domain::CouponId),
}

impl From<redis::RedisError> for QueueError {
    fn from(e: redis::RedisError) -> Self {
        QueueError::Unavailable(e.to_string())
    }
}

impl QueueError {
    /// Whether the work may have reached the broker despite the error.
    pub fn is_uncertain(&self) -> bool {
        matches!(self, QueueError::Uncertain(_) | QueueError::Timeout(_))
    }
}

impl From<rdkafka::error::KafkaError> for QueueError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        QueueError::Unavailable(e.to_string())
    }
}
