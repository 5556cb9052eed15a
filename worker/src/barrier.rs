//! The per-coupon barrier of a queue switch (invariant S5 of
//! `common::switch`): an event of coupon `c` accepted in epoch `e > 1` waits
//! until `e` is settled and the previous queue holds nothing of `c` from
//! before `e`. The decision is `switch::barrier_releases`; this module reads
//! what it decides on. Released pairs are remembered, so the check costs one
//! look at the old queue per coupon and switch, and nothing at all while the
//! service has never switched.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::domain::FIRST_EPOCH;
use common::domain::{CouponId, CouponIssueEvent, QueueType, QueuedEvent};
use common::error::DbError;
use common::queue::kafka::partition_for;
use common::queue::Queues;
use common::switch::{self, barrier_releases, unreachable, Epoch, PreviousQueue, SwitchError};
use sqlx::MySqlPool;
use tracing::{info, warn};

/// How often a held coupon is checked again.
pub const RECHECK: Duration = Duration::from_millis(50);

/// The barrier of one worker process.
pub struct Barrier {
    pool: MySqlPool,
    queues: Queues,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Settled epochs.
    settled: HashMap<u64, Epoch>,
    released: HashSet<(u64, CouponId)>,
    /// When each held pair was first held.
    held: HashMap<(u64, CouponId), Instant>,
    /// When a failed check was last logged.
    last_warning: Option<Instant>,
}

impl Barrier {
    pub fn new(pool: MySqlPool, queues: Queues) -> Self {
        Self {
            pool,
            queues,
            state: Mutex::default(),
        }
    }

    /// How many of `events` (one coupon's, in queue order) may be processed
    /// now: the index of the first one the barrier holds, or the length.
    pub async fn passable(&self, events: &[QueuedEvent]) -> usize {
        for (i, q) in events.iter().enumerate() {
            if !self.released(&q.event).await {
                return i;
            }
        }
        events.len()
    }

    async fn released(&self, event: &CouponIssueEvent) -> bool {
        let key = (event.epoch, event.coupon_id);
        if barrier_releases(event.epoch, false, PreviousQueue::None) {
            // The first epoch: nothing to look at.
            return true;
        }
        if self.state().released.contains(&key) {
            return true;
        }
        match self.check(event.epoch, event.coupon_id).await {
            Ok(true) => {
                let mut state = self.state();
                state.released.insert(key);
                let waited = state
                    .held
                    .remove(&key)
                    .map_or(Duration::ZERO, |t| t.elapsed());
                metrics::histogram!("coupon_switch_barrier_wait_seconds")
                    .record(waited.as_secs_f64());
                metrics::gauge!("coupon_switch_barrier_held_coupons").set(state.held.len() as f64);
                info!(coupon = %event.coupon_id, epoch = event.epoch, waited_ms = waited.as_millis() as u64,
                    "switch barrier released: the previous queue holds nothing earlier of this coupon");
                true
            }
            Ok(false) => {
                let mut state = self.state();
                if state.held.insert(key, Instant::now()).is_none() {
                    info!(coupon = %event.coupon_id, epoch = event.epoch,
                        "switch barrier holds this coupon until the previous queue has processed its earlier requests");
                }
                metrics::gauge!("coupon_switch_barrier_held_coupons").set(state.held.len() as f64);
                false
            }
            Err(e) => {
                let mut state = self.state();
                state.held.entry(key).or_insert_with(Instant::now);
                if state
                    .last_warning
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(5))
                {
                    state.last_warning = Some(Instant::now());
                    warn!(error = %e, coupon = %event.coupon_id, epoch = event.epoch,
                        "cannot check the switch barrier; holding the coupon");
                }
                false
            }
        }
    }

    /// Forwards late events (invariant S6 of `common::switch`), in order, to
    /// the active queue, each stamped with the active epoch; a Redis fence
    /// met on the way sends it to the newer epoch. `Err` leaves them where
    /// they are, unacknowledged, to be forwarded again (the processor skips
    /// a request id that already has its result).
    pub async fn forward(&self, late: &[QueuedEvent]) -> Result<(), SwitchError> {
        let Some(first) = late.first() else {
            return Ok(());
        };
        let mut active = switch::active(&self.pool)
            .await?
            .ok_or_else(|| DbError::BadRow("queue_epoch is empty".into()))?;
        for q in late {
            if active.number() <= q.event.epoch {
                // Only a record that lost epochs the coupons have processed
                // gets here; forwarding would make the event late again.
                return Err(SwitchError::Db(DbError::BadRow(format!(
                    "event {} of epoch {} is late but the active epoch is {}: \
                     the queue record holds fewer epochs than coupon {} has processed",
                    q.event.event_id, q.event.epoch, active.epoch, q.event.coupon_id
                ))));
            }
            loop {
                let mut event = q.event.clone();
                event.epoch = active.number();
                let queue = active.queue_type;
                let producer = self
                    .queues
                    .producer(queue)
                    .await
                    .map_err(unreachable(queue))?;
                match producer.forward(&event).await {
                    Ok(_) => {
                        metrics::counter!("coupon_issue_forwarded_total", "from" => q.queue.as_str(), "to" => queue.as_str())
                            .increment(1);
                        break;
                    }
                    Err(common::error::QueueError::Fenced(fence)) => {
                        let newer = switch::active(&self.pool).await?;
                        match newer {
                            Some(e) if e.number() >= fence => active = e,
                            _ => {
                                return Err(SwitchError::Db(DbError::BadRow(format!(
                                    "fenced at epoch {fence}, which the record does not hold"
                                ))))
                            }
                        }
                    }
                    Err(e) => return Err(unreachable(queue)(e)),
                }
            }
        }
        info!(coupon = %first.event.coupon_id, events = late.len(), epoch = active.epoch, queue = %active.queue_type,
            "late events forwarded to the active queue");
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("barrier lock")
    }

    /// Whether `epoch` is settled and the previous queue has nothing of
    /// `coupon` from before it.
    async fn check(&self, epoch: u64, coupon: CouponId) -> Result<bool, SwitchError> {
        let Some(e) = self.settled_epoch(epoch).await? else {
            return Ok(barrier_releases(epoch, false, PreviousQueue::None));
        };
        let previous = match e.previous_queue() {
            None => PreviousQueue::None,
            Some(QueueType::Redis) => {
                let redis = self
                    .queues
                    .redis()
                    .await
                    .map_err(unreachable(QueueType::Redis))?;
                let head = redis
                    .read_head(coupon, 1)
                    .await
                    .map_err(unreachable(QueueType::Redis))?;
                match head.first() {
                    None => PreviousQueue::RedisEmpty,
                    Some(entry) => PreviousQueue::RedisHead(
                        entry
                            .payload
                            .as_deref()
                            .and_then(|p| CouponIssueEvent::from_json(p).ok())
                            .map(|ev| ev.epoch),
                    ),
                }
            }
            Some(QueueType::Kafka) => {
                let marks = e.marks()?;
                let partitions = i32::try_from(marks.len())
                    .map_err(|_| DbError::BadRow("queue_epoch.previous_marks: too many".into()))?;
                if partitions == 0 {
                    PreviousQueue::None
                } else {
                    let partition = partition_for(coupon, partitions);
                    let kafka = self
                        .queues
                        .kafka()
                        .await
                        .map_err(unreachable(QueueType::Kafka))?;
                    let progress = kafka
                        .partition_progress(Some(partitions))
                        .await
                        .map_err(unreachable(QueueType::Kafka))?;
                    PreviousQueue::Kafka {
                        committed: progress
                            .iter()
                            .find(|p| p.partition == partition)
                            .map(|p| p.committed as i64),
                        mark: marks.get(&partition).copied().unwrap_or(0),
                    }
                }
            }
        };
        Ok(barrier_releases(epoch, true, previous))
    }

    /// The epoch's row once it is settled (settling it if it can be);
    /// `None` while it is not.
    async fn settled_epoch(&self, epoch: u64) -> Result<Option<Epoch>, SwitchError> {
        if let Some(e) = self.state().settled.get(&epoch) {
            return Ok(Some(e.clone()));
        }
        let Some(row) = switch::epoch(&self.pool, epoch).await? else {
            // An epoch the record does not know (the record was reset):
            // nothing to wait for.
            warn!(
                epoch,
                "event of an epoch the queue record does not hold; not held"
            );
            let stand_in = first_epoch_like(epoch);
            self.state().settled.insert(epoch, stand_in.clone());
            return Ok(Some(stand_in));
        };
        let row = switch::settle(&self.pool, &self.queues, &row).await?;
        if !row.is_settled() {
            return Ok(None);
        }
        self.state().settled.insert(epoch, row.clone());
        Ok(Some(row))
    }
}

/// A stand-in for an epoch the record lost: settled, with no previous queue.
fn first_epoch_like(epoch: u64) -> Epoch {
    Epoch {
        epoch: FIRST_EPOCH as i64,
        queue_type: QueueType::Redis,
        reason: format!("unknown epoch {epoch}"),
        started_at: chrono::Utc::now(),
        settled_at: Some(chrono::Utc::now()),
        previous_marks: None,
    }
}
