//! The active queue as a shared record, and what makes a switch between
//! Redis and Kafka keep every coupon's first-come order. The argument is
//! these invariants; the code cites them where each one holds
//! (`// invariant S3`).
//!
//! * **S1, the record.** `queue_epoch` holds one row per epoch; each switch
//!   adds the next epoch with the other queue ([`begin`]). The newest row is
//!   the active queue. `APP_QUEUE_TYPE` only seeds an empty record
//!   ([`active_or_first`]): an api, alone or not, follows the record.
//! * **S2, routing.** Every event carries the epoch its api routed it by, and
//!   goes to that epoch's queue. An api re-reads the record every
//!   [`FOLLOW_EVERY`]; while MySQL is unreachable it keeps its last view (the
//!   door stays open). It reports the epoch it follows in `api_instance`
//!   only once every enqueue of an earlier route has returned.
//! * **S3, the Redis fence.** Each coupon has a fence in its Redis slot: the
//!   newest epoch that moved the service off Redis. The enqueue script
//!   refuses a new event of an earlier epoch (answered fenced, with the
//!   fence's epoch: [`crate::error::QueueError::Fenced`]), atomically
//!   with the append; the api then takes that epoch's route (the fence epoch's
//!   queue is Kafka) and sends the request there. A cut-off api therefore
//!   cannot add an old-epoch entry to Redis after the fence went up, however
//!   long it paused.
//! * **S4, settling.** Epoch `e` settles ([`settle`]) once nothing more can
//!   enter the previous queue unseen by the barrier: previous Redis, every
//!   coupon's fence is raised to `e` (S3); previous Kafka, which cannot
//!   refuse a write, every live api follows `e` or later (a row older than
//!   [`INSTANCE_STALE`] is not live) and the topic's high watermarks are
//!   recorded as the marks of `e`. A switch waits for the current epoch to
//!   settle, so a queue never holds events of two epochs that wait on each
//!   other.
//! * **S5, the barrier.** A worker processes an event of coupon `c` accepted
//!   in epoch `e > 1` only once `e` settled and the previous queue holds
//!   nothing of `c` from before `e` ([`barrier_releases`]): a Redis stream
//!   whose head is empty or of epoch `e` or later, or a Kafka partition whose
//!   committed offset reached the mark.
//! * **S6, late events.** What S4 cannot stop (a Kafka write of an api cut
//!   off from MySQL, landing after the marks; an entry for a coupon created
//!   after the fences went up) is caught by the processor: under the coupon's
//!   row lock it compares the event's epoch with the highest epoch the coupon
//!   has processed (`coupon.queue_epoch`). An earlier one is *late*: it is not
//!   decided where it stands but forwarded to the active queue with the
//!   active epoch, and is decided there, in that queue's order.
//!
//! Hence, per coupon, requests are decided in accept order: by epoch, then
//! by position in the epoch's queue, where a forwarded event's place is the
//! one it got in the queue it was forwarded to.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::MySqlPool;

use crate::db;
use crate::domain::{CouponId, QueueType, FIRST_EPOCH};
use crate::error::{DbError, QueueError};
use crate::queue::{Queues, ENQUEUE_LIMIT};

/// How often an api re-reads the record: a switch reaches every api within
/// this time (plus its in-flight enqueues).
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// After this long without a write, an api instance's row is not live: a
/// connected api writes it every [`FOLLOW_EVERY`], after its enqueues in
/// flight (each at most [`ENQUEUE_LIMIT`]) returned. An api cut off from
/// MySQL for longer may still enqueue; what it adds to Kafka is late (S6).
pub const INSTANCE_STALE: Duration = Duration::from_secs(10);

// A connected api's row never looks stale while it is merely waiting for an
// enqueue to return (S4).
const _: () =
    assert!(FOLLOW_EVERY.as_millis() + ENQUEUE_LIMIT.as_millis() < INSTANCE_STALE.as_millis());

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

/// Whether every live api instance follows `epoch` or later (S4).
pub async fn followed_by_all(pool: &MySqlPool, epoch: u64) -> Result<bool, DbError> {
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

/// Settles `e` if it can be now (invariant S4): previous Redis, raises every
/// coupon's fence to `e`; previous Kafka, once every live api follows `e`,
/// records the topic's high watermarks. Returns the row as it stands
/// afterwards (settled or not). Any api or worker may call it; the first to
/// record the marks wins.
pub async fn settle(pool: &MySqlPool, queues: &Queues, e: &Epoch) -> Result<Epoch, SwitchError> {
    if e.is_settled() {
        return Ok(e.clone());
    }
    let marks = match e.previous_queue() {
        None => None,
        Some(QueueType::Redis) => {
            // invariant S3: after this, no entry of an earlier epoch enters
            // any of these coupons' streams.
            let coupons: Vec<CouponId> = db::coupon_stocks(pool)
                .await?
                .into_iter()
                .filter_map(|(id, _)| CouponId::try_from(id).ok())
                .collect();
            let redis = queues
                .redis()
                .await
                .map_err(unreachable(QueueType::Redis))?;
            redis
                .raise_fences(&coupons, e.number())
                .await
                .map_err(unreachable(QueueType::Redis))?;
            None
        }
        Some(QueueType::Kafka) => {
            if !followed_by_all(pool, e.number()).await? {
                return Ok(e.clone());
            }
            let kafka = queues
                .kafka()
                .await
                .map_err(unreachable(QueueType::Kafka))?;
            let marks = kafka
                .high_watermarks()
                .await
                .map_err(unreachable(QueueType::Kafka))?;
            Some(serde_json::to_string(&marks).expect("marks serialise"))
        }
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
        tracing::info!(epoch = e.epoch, queue = %e.queue_type, "queue switch settled: nothing more enters the previous queue unseen");
    }
    Ok(now)
}

/// Maps a queue failure during a switch step to [`SwitchError::Unreachable`].
pub fn unreachable(queue: QueueType) -> impl Fn(QueueError) -> SwitchError {
    move |error| SwitchError::Unreachable { queue, error }
}

/// What the previous epoch's queue shows of one coupon, read by a worker
/// after the epoch settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviousQueue {
    /// The first epoch (or one the record lost): nothing came before it.
    None,
    /// Redis: the coupon's stream is empty.
    RedisEmpty,
    /// Redis: the epoch of the head entry of the coupon's stream; `None`
    /// when it cannot be decoded (the Redis workers dead-letter it first).
    RedisHead(Option<u64>),
    /// Kafka: the group's committed offset on the coupon's partition (`None`
    /// before the first commit), and the mark recorded at settling.
    Kafka { committed: Option<i64>, mark: i64 },
}

/// Whether the barrier lets an event of epoch `epoch` through (invariant
/// S5): its epoch has settled and the previous queue holds nothing of the
/// coupon from before it.
pub fn barrier_releases(epoch: u64, settled: bool, previous: PreviousQueue) -> bool {
    if epoch <= FIRST_EPOCH {
        return true;
    }
    if !settled {
        return false;
    }
    match previous {
        PreviousQueue::None | PreviousQueue::RedisEmpty => true,
        PreviousQueue::RedisHead(head) => head.is_some_and(|h| h >= epoch),
        PreviousQueue::Kafka { committed, mark } => committed.unwrap_or(0) >= mark,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_epoch_is_never_held() {
        assert!(barrier_releases(
            FIRST_EPOCH,
            false,
            PreviousQueue::RedisHead(Some(0))
        ));
    }

    #[test]
    fn an_epoch_that_has_not_settled_holds_whatever_the_previous_queue_shows() {
        for previous in [
            PreviousQueue::None,
            PreviousQueue::RedisEmpty,
            PreviousQueue::RedisHead(Some(9)),
            PreviousQueue::Kafka {
                committed: Some(100),
                mark: 1,
            },
        ] {
            assert!(!barrier_releases(2, false, previous), "{previous:?}");
        }
    }

    #[test]
    fn a_redis_stream_releases_once_its_head_is_of_the_epoch_or_later() {
        assert!(barrier_releases(3, true, PreviousQueue::RedisEmpty));
        assert!(!barrier_releases(
            3,
            true,
            PreviousQueue::RedisHead(Some(1))
        ));
        assert!(!barrier_releases(
            3,
            true,
            PreviousQueue::RedisHead(Some(2))
        ));
        assert!(barrier_releases(3, true, PreviousQueue::RedisHead(Some(3))));
        assert!(barrier_releases(3, true, PreviousQueue::RedisHead(Some(5))));
        // An undecodable head is dead-lettered by the Redis workers first.
        assert!(!barrier_releases(3, true, PreviousQueue::RedisHead(None)));
    }

    #[test]
    fn a_kafka_partition_releases_once_its_committed_offset_reaches_the_mark() {
        let kafka = |committed, mark| PreviousQueue::Kafka { committed, mark };
        assert!(!barrier_releases(2, true, kafka(None, 5)));
        assert!(!barrier_releases(2, true, kafka(Some(4), 5)));
        assert!(barrier_releases(2, true, kafka(Some(5), 5)));
        assert!(barrier_releases(2, true, kafka(Some(9), 5)));
        // An empty partition at settling: nothing to wait for.
        assert!(barrier_releases(2, true, kafka(None, 0)));
    }
}
