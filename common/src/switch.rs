//! The active queue as a shared record, and what makes a switch between
//! Redis and Kafka keep every coupon's first-come order.
//!
//! * **Epochs.** `queue_epoch` holds one row per epoch: the first comes from
//!   `APP_QUEUE_TYPE`, each switch adds the next with the other queue. The
//!   active queue is the newest epoch's. Every accepted event carries the
//!   epoch it was accepted in, and an epoch's requests all go to its queue.
//! * **Following.** Every api instance keeps a row in `api_instance`: it
//!   re-reads the record every [`FOLLOW_EVERY`] and then writes the epoch it
//!   enqueues into (`followed_epoch`), only once every enqueue into an
//!   earlier epoch's queue has returned. It enqueues only while its last
//!   read is younger than [`VIEW_LEASE`]; so a row older than
//!   [`INSTANCE_STALE`] belongs to an api that cannot enqueue into an old
//!   queue any more (dead, or cut off from MySQL).
//! * **Settling.** Epoch `e` is settled once no live api follows an earlier
//!   one: nothing can enter the previous queue with an epoch below `e` from
//!   then on. When that queue is Kafka, the topic's high watermarks are
//!   recorded at settling: every earlier event lies below them. A switch
//!   waits for the current epoch to settle (normally within a second), so a
//!   queue never holds events of two epochs that wait on each other.
//! * **The barrier.** A worker may process an event of coupon `c` accepted
//!   in epoch `e > 1` once `e` is settled and the previous queue holds no
//!   event of `c` from before `e`: a Redis stream whose head is empty or of
//!   epoch `e` or later, or a Kafka partition whose committed offset reached
//!   the recorded mark. Every earlier event of the coupon is then processed,
//!   whichever queue it went through; see `worker::barrier`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::MySqlPool;

use crate::config::QueueType;
use crate::error::{DbError, QueueError};
use crate::queue::Queues;

/// The epoch a new deployment starts in.
pub const FIRST_EPOCH: u64 = 1;

/// How often an api re-reads the record: a switch reaches every api within
/// this time (plus its in-flight enqueues).
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// How long an api keeps enqueueing after its last successful read of the
/// record; past that it answers `503` until MySQL answers again.
pub const VIEW_LEASE: Duration = Duration::from_secs(3);

/// After this long without a write, an api instance's row is ignored: its
/// view lease ran out and its last enqueue (at most
/// [`crate::queue::ENQUEUE_LIMIT`]) has returned, so it cannot add to an old
/// queue any more.
pub const INSTANCE_STALE: Duration = Duration::from_secs(10);

/// One row of `queue_epoch`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Epoch {
    pub epoch: i64,
    pub queue_type: QueueType,
    /// `start`, `switch` or `fallback`.
    pub reason: String,
    pub started_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
    /// JSON `{"partition": offset}` when the previous epoch's queue is Kafka.
    pub previous_marks: Option<String>,
}

impl Epoch {
    pub fn number(&self) -> u64 {
        self.epoch.max(0) as u64
    }

    /// The queue of the epoch before this one, if any.
    pub fn previous_queue(&self) -> Option<QueueType> {
        (self.number() > FIRST_EPOCH).then(|| self.queue_type.other())
    }

    pub fn is_settled(&self) -> bool {
        self.settled_at.is_some()
    }

    /// The Kafka high watermarks recorded at settling, by partition.
    pub fn marks(&self) -> Result<BTreeMap<i32, i64>, DbError> {
        match &self.previous_marks {
            None => Ok(BTreeMap::new()),
            Some(raw) => serde_json::from_str(raw)
                .map_err(|e| DbError::BadRow(format!("queue_epoch.previous_marks: {e}"))),
        }
    }
}

/// Why a switch or a settling step did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// The queue that had to answer did not.
    #[error("{queue} is unreachable: {error}")]
    Unreachable {
        queue: QueueType,
        #[source]
        error: QueueError,
    },
    /// Some api still enqueues into the previous epoch's queue.
    #[error("the switch to epoch {0} has not taken effect on every api yet")]
    NotSettled(u64),
    /// Another switch won the race.
    #[error("another switch happened at the same time (now epoch {0})")]
    Concurrent(u64),
}

impl From<sqlx::Error> for SwitchError {
    fn from(e: sqlx::Error) -> Self {
        SwitchError::Db(DbError::from_sqlx(e))
    }
}

const SELECT_EPOCH: &str = "SELECT epoch, queue_type, reason, started_at, settled_at, \
     previous_marks FROM queue_epoch";

/// The active epoch: the newest row.
pub async fn active(pool: &MySqlPool) -> Result<Option<Epoch>, DbError> {
    Ok(
        sqlx::query_as(&format!("{SELECT_EPOCH} ORDER BY epoch DESC LIMIT 1"))
            .fetch_optional(pool)
            .await?,
    )
}

/// One epoch's row.
pub async fn epoch(pool: &MySqlPool, epoch: u64) -> Result<Option<Epoch>, DbError> {
    Ok(sqlx::query_as(&format!("{SELECT_EPOCH} WHERE epoch = ?"))
        .bind(epoch as i64)
        .fetch_optional(pool)
        .await?)
}

/// Every epoch, oldest first.
pub async fn history(pool: &MySqlPool) -> Result<Vec<Epoch>, DbError> {
    Ok(sqlx::query_as(&format!("{SELECT_EPOCH} ORDER BY epoch"))
        .fetch_all(pool)
        .await?)
}

/// The active epoch, creating the first one on `configured` if the record
/// is empty (a new deployment).
pub async fn active_or_first(pool: &MySqlPool, configured: QueueType) -> Result<Epoch, DbError> {
    if let Some(e) = active(pool).await? {
        return Ok(e);
    }
    sqlx::query(
        "INSERT IGNORE INTO queue_epoch (epoch, queue_type, reason, started_at, settled_at) \
         VALUES (?, ?, 'start', NOW(6), NOW(6))",
    )
    .bind(FIRST_EPOCH as i64)
    .bind(configured)
    .execute(pool)
    .await?;
    active(pool)
        .await?
        .ok_or_else(|| DbError::BadRow("queue_epoch is empty right after its first insert".into()))
}

/// Starts epoch `after + 1` on `to`. `Concurrent` when another switch added
/// that epoch first.
pub async fn begin(
    pool: &MySqlPool,
    after: u64,
    to: QueueType,
    reason: &str,
) -> Result<Epoch, SwitchError> {
    let next = after + 1;
    let inserted = sqlx::query(
        "INSERT INTO queue_epoch (epoch, queue_type, reason, started_at) VALUES (?, ?, ?, NOW(6))",
    )
    .bind(next as i64)
    .bind(to)
    .bind(reason)
    .execute(pool)
    .await
    .map_err(DbError::from_sqlx);
    match inserted {
        Ok(_) => {}
        Err(DbError::UniqueViolation(_)) => return Err(SwitchError::Concurrent(next)),
        Err(e) => return Err(e.into()),
    }
    epoch(pool, next)
        .await?
        .ok_or_else(|| DbError::BadRow(format!("queue epoch {next} vanished")).into())
}

/// Whether no live api instance enqueues into an epoch before `epoch`.
pub async fn fenced(pool: &MySqlPool, epoch: u64) -> Result<bool, DbError> {
    let behind: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM api_instance WHERE followed_epoch < ? \
         AND last_seen_at > NOW(6) - INTERVAL ? MICROSECOND",
    )
    .bind(epoch as i64)
    .bind(INSTANCE_STALE.as_micros() as i64)
    .fetch_one(pool)
    .await?;
    Ok(behind == 0)
}

/// Settles `e` if it can be: no api enqueues into an earlier epoch any more,
/// and, when the previous queue is Kafka, its high watermarks are recorded.
/// Returns the row as it stands afterwards (settled or not). Any api or
/// worker may call it; the first to record the marks wins.
pub async fn settle(pool: &MySqlPool, queues: &Queues, e: &Epoch) -> Result<Epoch, SwitchError> {
    if e.is_settled() {
        return Ok(e.clone());
    }
    if !fenced(pool, e.number()).await? {
        return Ok(e.clone());
    }
    let marks = match e.previous_queue() {
        Some(QueueType::Kafka) => {
            let kafka = queues
                .kafka()
                .await
                .map_err(|error| SwitchError::Unreachable {
                    queue: QueueType::Kafka,
                    error,
                })?;
            let marks =
                kafka
                    .high_watermarks()
                    .await
                    .map_err(|error| SwitchError::Unreachable {
                        queue: QueueType::Kafka,
                        error,
                    })?;
            Some(serde_json::to_string(&marks).expect("marks serialise"))
        }
        _ => None,
    };
    sqlx::query(
        "UPDATE queue_epoch SET settled_at = NOW(6), previous_marks = ? \
         WHERE epoch = ? AND settled_at IS NULL",
    )
    .bind(marks)
    .bind(e.epoch)
    .execute(pool)
    .await?;
    let now = epoch(pool, e.number())
        .await?
        .ok_or_else(|| DbError::BadRow(format!("queue epoch {} vanished", e.epoch)))?;
    if now.is_settled() {
        tracing::info!(epoch = e.epoch, queue = %e.queue_type, "queue switch settled: no api enqueues into the previous queue any more");
    }
    Ok(now)
}

/// Writes an api instance's row: the epoch it now enqueues into (0 before
/// its first read of the record).
pub async fn follow(pool: &MySqlPool, instance: &str, followed: u64) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO api_instance (instance_id, followed_epoch, last_seen_at) \
         VALUES (?, ?, NOW(6)) ON DUPLICATE KEY UPDATE \
         followed_epoch = VALUES(followed_epoch), last_seen_at = VALUES(last_seen_at)",
    )
    .bind(instance)
    .bind(followed as i64)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes an api instance's row (it stopped and enqueues nothing more).
pub async fn leave(pool: &MySqlPool, instance: &str) -> Result<(), DbError> {
    sqlx::query("DELETE FROM api_instance WHERE instance_id = ?")
        .bind(instance)
        .execute(pool)
        .await?;
    Ok(())
}

/// Live api instances and the epoch each follows.
pub async fn live_instances(pool: &MySqlPool) -> Result<Vec<(String, i64)>, DbError> {
    Ok(sqlx::query_as(
        "SELECT instance_id, followed_epoch FROM api_instance \
         WHERE last_seen_at > NOW(6) - INTERVAL ? MICROSECOND ORDER BY instance_id",
    )
    .bind(INSTANCE_STALE.as_micros() as i64)
    .fetch_all(pool)
    .await?)
}
