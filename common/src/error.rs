//! Error types of the shared subsystems.

use crate::domain::DecodeError;

/// MySQL error number of a duplicate key (`ER_DUP_ENTRY`).
const ER_DUP_ENTRY: &str = "1062";
/// Error numbers that mean "try the same thing again": deadlock, lock wait
/// timeout, too many connections, server shutting down, connection killed.
const RETRYABLE_CODES: [&str; 6] = ["1213", "1205", "1040", "1053", "1927", "2013"];

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
        if let sqlx::Error::Database(db) = &e {
            if db.code().as_deref() == Some(ER_DUP_ENTRY) {
                return DbError::UniqueViolation(db.message().to_string());
            }
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
                sqlx::Error::Database(db) => db
                    .code()
                    .is_some_and(|c| RETRYABLE_CODES.contains(&c.as_ref())),
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
    #[error("undecodable event: {0}")]
    Decode(#[from] DecodeError),
}

impl From<redis::RedisError> for QueueError {
    fn from(e: redis::RedisError) -> Self {
        QueueError::Unavailable(e.to_string())
    }
}

impl From<rdkafka::error::KafkaError> for QueueError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        QueueError::Unavailable(e.to_string())
    }
}
