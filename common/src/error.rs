//! Error types of the shared subsystems.

use crate::domain::{CouponId, DecodeError};

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
    /// The processor was handed a batch it must refuse (too large, or
    /// events of more than one coupon): a caller's bug.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// A stored row holds a value this build cannot read (a request id
    /// that is not a UUID, an unknown status, a non-positive id).
    #[error("undecodable row: {0}")]
    BadRow(String),
    /// The coupon just inserted was not found right after (deleted at once).
    #[error("coupon {0} vanished right after it was inserted")]
    CouponVanished(CouponId),
    /// The coupon's stock did not cover the batch's winners although its
    /// row was locked: something wrote it outside the lock.
    #[error("stock of coupon {0} changed under its lock")]
    StockChanged(CouponId),
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
            DbError::InvalidBatch(_)
            | DbError::BadRow(_)
            | DbError::CouponVanished(_)
            | DbError::StockChanged(_)
            | DbError::Migrate(_) => false,
        }
    }
}

/// Failures of a queue backend.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker cannot be reached, or refused the request: nothing was done.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    #[error("queue did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The request reached the broker but its answer was lost: it may or may
    /// not be queued.
    #[error("queue outcome unknown: {0}")]
    Uncertain(String),
    /// The broker answered, but not in a shape this client reads.
    #[error("unexpected reply from the queue: {0}")]
    BadReply(String),
    /// The task that ran a blocking client call panicked or was cancelled.
    #[error("queue client task failed: {0}")]
    TaskFailed(#[from] tokio::task::JoinError),
    #[error("undecodable event: {0}")]
    Decode(#[from] DecodeError),
    /// Refused, nothing enqueued: a worker marked the coupon sold out.
    #[error("coupon {0} is sold out")]
    SoldOut(crate::domain::CouponId),
    /// Refused, nothing enqueued: a queue switch at this epoch moved the
    /// service off this queue, and the event's epoch is earlier (see
    /// `common::switch`, invariant S3).
    #[error("the queue is fenced since epoch {0}")]
    Fenced(u64),
}

impl From<redis::RedisError> for QueueError {
    fn from(e: redis::RedisError) -> Self {
        use redis::ErrorKind;
        match e.kind() {
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => {
                QueueError::BadReply(e.to_string())
            }
            _ => QueueError::Unavailable(e.to_string()),
        }
    }
}

impl QueueError {
    /// Whether the work may have reached the broker despite the error.
    pub fn is_uncertain(&self) -> bool {
        matches!(self, QueueError::Uncertain(_) | QueueError::Timeout(_))
    }

    /// Whether the queue itself is down or refused (a client may try again
    /// later), as opposed to a fault on this side.
    pub fn is_unavailable(&self) -> bool {
        match self {
            QueueError::Unavailable(_) | QueueError::Timeout(_) | QueueError::Uncertain(_) => true,
            QueueError::BadReply(_)
            | QueueError::TaskFailed(_)
            | QueueError::Decode(_)
            | QueueError::SoldOut(_)
            | QueueError::Fenced(_) => false,
        }
    }
}

impl From<rdkafka::error::KafkaError> for QueueError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        QueueError::Unavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unreachable_or_refusing_queue_counts_as_unavailable() {
        let lost =
            |kind, what: &'static str| QueueError::from(redis::RedisError::from((kind, what)));
        assert!(matches!(
            lost(redis::ErrorKind::UnexpectedReturnType, "not a string"),
            QueueError::BadReply(_)
        ));
        assert!(matches!(
            lost(redis::ErrorKind::Io, "connection refused"),
            QueueError::Unavailable(_)
        ));
        assert!(QueueError::Unavailable("down".into()).is_unavailable());
        assert!(QueueError::Timeout(std::time::Duration::from_secs(1)).is_unavailable());
        assert!(QueueError::Uncertain("lost".into()).is_uncertain());
        assert!(!QueueError::BadReply("XRANGE".into()).is_unavailable());
        assert!(!QueueError::BadReply("XRANGE".into()).is_uncertain());
    }

    #[test]
    fn refused_batches_bad_rows_and_broken_invariants_are_not_retried() {
        let coupon = CouponId::try_from(1).unwrap();
        for e in [
            DbError::InvalidBatch("two coupons".into()),
            DbError::BadRow("request id".into()),
            DbError::CouponVanished(coupon),
            DbError::StockChanged(coupon),
        ] {
            assert!(!e.is_transient(), "{e}");
        }
        assert!(DbError::UniqueViolation("race".into()).is_transient());
        assert!(DbError::Sqlx(sqlx::Error::PoolTimedOut).is_transient());
    }
}
