//! Where an accepted request stands: `ahead` (requests that will be processed
//! before it) and `etaMs` (that many over its queue's processing rate).
//!
//! Nothing here queries MySQL or scans a queue. Each request is placed on a
//! *lane* (its coupon's stream in Redis mode, its partition in Kafka mode)
//! at a *target*: the lane's progress count at which it is next (see
//! [`Enqueued`]). A lane's progress is the coupon's `processed` counter,
//! which the worker raises as it trims committed entries (Redis), or the
//! worker group's committed offset (Kafka). A background task samples the
//! progress of the lanes in use every [`SAMPLE_EVERY`]; `ahead` is
//! `target - progress`, and the rate is the progress made over the last
//! [`RATE_WINDOW`].
//!
//! Requests are remembered by the api instance that accepted them (a
//! bounded in-memory index); a lookup served by another instance, or after
//! a restart, answers `ahead: null`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::domain::CouponId;
use common::domain::QueueType;
use common::queue::{kafka::partition_for, Enqueued, KafkaProducer, Lane, Producer};
use futures::future::join_all;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::recent::Recent;

/// How often the progress of the lanes in use is read (Kafka: the worker
/// commits its offsets every second, so more often would tell nothing new).
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);
const SAMPLE_KAFKA_EVERY: Duration = Duration::from_secs(1);
/// The rate is the progress over this window; a lane that made none in it
/// has no known rate (`etaMs: null`).
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// A Redis lane nobody asked about for this long is no longer sampled; nor
/// are Kafka's partitions when nobody asked about any of them.
const TRACK_FOR: Duration = Duration::from_secs(120);
/// Accepted requests remembered for lookups, and for how long: about 12 MB
/// when full (sixteen tables of 8,192 slots for a 56-byte entry, and their
/// queues of 32-byte places).
const INDEX_CAPACITY: usize = 100_000;
const INDEX_TTL: Duration = Duration::from_secs(30 * 60);

/// `ahead` and `etaMs` of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub ahead: u64,
    pub eta_ms: Option<u64>,
}

/// The index of accepted requests and the progress of their lanes; cheap
/// to clone.
#[derive(Clone)]
pub struct Waiting {
    inner: Arc<Inner>,
}

struct Inner {
    producer: Producer,
    index: Recent<(Lane, u64)>,
    lanes: Mutex<Lanes>,
    /// One progress read at a time; a caller that finds a read under way
    /// waits for it instead of starting another.
    sampling: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Lanes {
    by_lane: HashMap<Lane, LaneState>,
    /// Kafka: the topic's partition count, once read.
    partitions: Option<i32>,
    /// When a request last needed a lane's progress.
    asked: Option<Instant>,
}

struct LaneState {
    /// Highest progress seen (the counters never go back).
    progress: u64,
    samples: VecDeque<(Instant, u64)>,
    touched: Instant,
}

impl LaneState {
    fn new(progress: u64, now: Instant) -> Self {
        Self {
            progress,
            samples: VecDeque::new(),
            touched: now,
        }
    }

    fn observe(&mut self, progress: u64) {
        self.progress = self.progress.max(progress);
    }

    fn sample(&mut self, now: Instant, progress: u64) {
        self.observe(progress);
        self.samples.push_back((now, self.progress));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Requests processed per second over the window; `None` when nothing
    /// was processed in it (not started, stalled or idle) or it is too short.
    fn rate(&self) -> Option<f64> {
        rate_of(&self.samples)
    }
}

fn rate_of(samples: &VecDeque<(Instant, u64)>) -> Option<f64> {
    let ((t0, p0), (t1, p1)) = (samples.front()?, samples.back()?);
    let span = t1.duration_since(*t0).as_secs_f64();
    (span >= 0.9 && p1 > p0).then(|| (p1 - p0) as f64 / span)
}

/// `ahead` requests at `rate` per second, in whole milliseconds.
fn eta_ms(ahead: u64, rate: Option<f64>) -> Option<u64> {
    rate.map(|r| (ahead as f64 * 1000.0 / r).ceil() as u64)
}

/// The index of accepted requests: the latest `capacity`, none older than
/// [`INDEX_TTL`]. Every new request is admitted; the oldest goes.
fn index(capacity: usize) -> Recent<(Lane, u64)> {
    Recent::new(capacity, INDEX_TTL)
}

impl Waiting {
    pub fn new(producer: Producer) -> Self {
        Self {
            inner: Arc::new(Inner {
                producer,
                index: index(INDEX_CAPACITY),
                lanes: Mutex::default(),
                sampling: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Remembers an accepted request and says where it stands. `None` only
    /// when its lane's progress cannot be read (Kafka broker unreachable
    /// for the offsets query).
    pub async fn accepted(&self, request: Uuid, enqueued: &Enqueued) -> Option<Standing> {
        self.inner
            .index
            .insert(request, (enqueued.lane, enqueued.target));
        if let Some(p) = enqueued.progress {
            self.with_lane(enqueued.lane, p, |l| l.observe(p));
        }
        self.standing(enqueued.lane, enqueued.target).await
    }

    /// Where a request accepted by this instance stands now; `None` if this
    /// instance does not know it (or cannot read its lane).
    pub async fn lookup(&self, request: Uuid) -> Option<Standing> {
        let (lane, target) = self.inner.index.get(&request)?;
        self.standing(lane, target).await
    }

    /// The lane a coupon's requests wait on; Kafka needs the partition
    /// count, read with the progress.
    pub async fn lane_of(&self, coupon: CouponId) -> Option<Lane> {
        match &self.inner.producer {
            Producer::Redis(_) => Some(Lane::Coupon(coupon)),
            Producer::Kafka(_) => {
                if self.partitions().is_none() {
                    self.sample().await;
                }
                self.partitions()
                    .map(|n| Lane::Partition(partition_for(coupon, n)))
            }
        }
    }

    /// The lane's processing rate (requests per second), sampling it from
    /// now on if it was not.
    pub async fn rate(&self, lane: Lane) -> Option<f64> {
        self.progress(lane).await?;
        let lanes = self.inner.lanes.lock().expect("lanes lock");
        lanes.by_lane.get(&lane).and_then(LaneState::rate)
    }

    fn partitions(&self) -> Option<i32> {
        self.inner.lanes.lock().expect("lanes lock").partitions
    }

    /// Where a request at `target` on `lane` stands, for any request whose
    /// place is known (the repeat gate holds it), with the lane's progress;
    /// `progress` read with the place, when given, is taken in first.
    pub async fn standing_at(
        &self,
        lane: Lane,
        target: u64,
        progress: Option<u64>,
    ) -> Option<(Standing, u64)> {
        if let Some(p) = progress {
            self.with_lane(lane, p, |l| l.observe(p));
        }
        let standing = self.standing(lane, target).await?;
        Some((standing, self.touch(lane)?))
    }

    async fn standing(&self, lane: Lane, target: u64) -> Option<Standing> {
        let progress = self.progress(lane).await?;
        let ahead = target.saturating_sub(progress);
        let lanes = self.inner.lanes.lock().expect("lanes lock");
        let rate = lanes.by_lane.get(&lane).and_then(LaneState::rate);
        Some(Standing {
            ahead,
            eta_ms: eta_ms(ahead, rate),
        })
    }

    /// The lane's progress; read now if the lane is not sampled yet.
    async fn progress(&self, lane: Lane) -> Option<u64> {
        if let Some(p) = self.touch(lane) {
            return Some(p);
        }
        match (&self.inner.producer, lane) {
            (Producer::Redis(q), Lane::Coupon(coupon)) => {
                let p = q.processed(coupon).await.ok()?;
                Some(self.with_lane(lane, p, |l| l.observe(p)))
            }
            _ => {
                self.sample().await;
                self.touch(lane)
            }
        }
    }

    fn touch(&self, lane: Lane) -> Option<u64> {
        let now = Instant::now();
        let mut lanes = self.inner.lanes.lock().expect("lanes lock");
        lanes.asked = Some(now);
        let state = lanes.by_lane.get_mut(&lane)?;
        state.touched = now;
        Some(state.progress)
    }

    fn with_lane(&self, lane: Lane, progress: u64, f: impl FnOnce(&mut LaneState)) -> u64 {
        let now = Instant::now();
        let mut lanes = self.inner.lanes.lock().expect("lanes lock");
        lanes.asked = Some(now);
        let state = lanes
            .by_lane
            .entry(lane)
            .or_insert_with(|| LaneState::new(progress, now));
        state.touched = now;
        f(state);
        state.progress
    }

    /// Reads the progress of every lane in use once: each Redis coupon asked
    /// about in the last [`TRACK_FOR`], or every partition of the topic.
    pub async fn sample(&self) {
        let Ok(_one_at_a_time) = self.inner.sampling.try_lock() else {
            // A read is under way: wait for it rather than start another.
            let _done = self.inner.sampling.lock().await;
            return;
        };
        let now = Instant::now();
        match &self.inner.producer {
            Producer::Redis(q) => {
                let coupons: Vec<CouponId> = {
                    let mut lanes = self.inner.lanes.lock().expect("lanes lock");
                    lanes
                        .by_lane
                        .retain(|_, l| now.duration_since(l.touched) < TRACK_FOR);
                    lanes
                        .by_lane
                        .keys()
                        .filter_map(|lane| match lane {
                            Lane::Coupon(c) => Some(*c),
                            Lane::Partition(_) => None,
                        })
                        .collect()
                };
                let read = join_all(coupons.iter().map(|c| q.processed(*c))).await;
                let mut lanes = self.inner.lanes.lock().expect("lanes lock");
                for (coupon, processed) in coupons.into_iter().zip(read) {
                    if let (Ok(p), Some(l)) =
                        (processed, lanes.by_lane.get_mut(&Lane::Coupon(coupon)))
                    {
                        l.sample(now, p);
                    }
                }
            }
            Producer::Kafka(k) => {
                let partitions = {
                    let lanes = self.inner.lanes.lock().expect("lanes lock");
                    let idle = lanes
                        .asked
                        .is_none_or(|t| now.duration_since(t) >= TRACK_FOR);
                    if idle && lanes.partitions.is_some() {
                        return; // nobody waits: no load on the broker
                    }
                    lanes.partitions
                };
                self.sample_kafka(k, partitions, now).await;
            }
        }
    }

    async fn sample_kafka(&self, k: &KafkaProducer, partitions: Option<i32>, now: Instant) {
        match k.partition_progress(partitions).await {
            Ok(partitions) => {
                let mut lanes = self.inner.lanes.lock().expect("lanes lock");
                lanes.partitions = i32::try_from(partitions.len()).ok().filter(|n| *n > 0);
                for p in partitions {
                    let l = lanes
                        .by_lane
                        .entry(Lane::Partition(p.partition))
                        .or_insert_with(|| LaneState::new(p.committed, now));
                    l.sample(now, p.committed);
                }
            }
            Err(e) => tracing::debug!(error = ?e, "reading the partitions' progress"),
        }
    }

    /// Samples every [`SAMPLE_EVERY`] (Kafka: every second) until `cancel`
    /// fires.
    pub fn spawn_sampler(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let every = match &self.inner.producer {
            Producer::Redis(_) => SAMPLE_EVERY,
            Producer::Kafka(_) => SAMPLE_KAFKA_EVERY,
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => this.sample().await,
                    _ = cancel.cancelled() => return,
                }
            }
        })
    }
}

/// The [`Waiting`] of each queue this api has enqueued into: after a
/// switch, requests accepted before it keep their standing in the old queue.
#[derive(Clone)]
pub struct Waitings {
    inner: Arc<WaitingsInner>,
}

struct WaitingsInner {
    by_queue: Mutex<Vec<(QueueType, Waiting)>>,
    samplers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    cancel: CancellationToken,
}

impl Waitings {
    /// Samplers run until `cancel` fires.
    pub fn new(cancel: CancellationToken) -> Self {
        Self {
            inner: Arc::new(WaitingsInner {
                by_queue: Mutex::default(),
                samplers: Mutex::default(),
                cancel,
            }),
        }
    }

    /// The index of `producer`'s queue, made (and sampled) on first use.
    pub fn of(&self, producer: &Producer) -> Waiting {
        let queue = producer.queue_type();
        let mut by_queue = self.inner.by_queue.lock().expect("waitings lock");
        if let Some((_, w)) = by_queue.iter().find(|(q, _)| *q == queue) {
            return w.clone();
        }
        let waiting = Waiting::new(producer.clone());
        let sampler = waiting.spawn_sampler(self.inner.cancel.clone());
        self.inner
            .samplers
            .lock()
            .expect("samplers lock")
            .push(sampler);
        by_queue.push((queue, waiting.clone()));
        waiting
    }

    /// Where a request accepted by this instance stands, in whichever queue.
    pub async fn lookup(&self, request: Uuid) -> Option<Standing> {
        let all: Vec<Waiting> = {
            let by_queue = self.inner.by_queue.lock().expect("waitings lock");
            by_queue.iter().map(|(_, w)| w.clone()).collect()
        };
        for w in all {
            if let Some(s) = w.lookup(request).await {
                return Some(s);
            }
        }
        None
    }

    /// Waits for the samplers (after `cancel` fired).
    pub async fn stopped(&self) {
        let samplers = std::mem::take(&mut *self.inner.samplers.lock().expect("samplers lock"));
        for s in samplers {
            s.await.ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_keeps_the_latest_requests_past_its_capacity() {
        let index = index(1_000);
        let lane = Lane::Partition(0);
        let ids: Vec<Uuid> = (0..5_000).map(|_| Uuid::now_v7()).collect();
        for (i, id) in ids.iter().enumerate() {
            index.insert(*id, (lane, i as u64));
            // Lookups of the early ones, as a crowd polling would make:
            // they do not keep them past the newer ones.
            if i < 1_000 {
                index.get(id);
            }
        }
        assert!(index.len() <= 1_000, "{}", index.len());
        let latest = &ids[ids.len() - 200..];
        let missing = latest.iter().filter(|id| index.get(id).is_none()).count();
        assert_eq!(missing, 0, "of the latest 200 accepted requests");
        assert!(ids[..1_000].iter().all(|id| index.get(id).is_none()));
    }

    #[test]
    fn no_rate_without_progress_or_span() {
        let t = Instant::now();
        let mut s = VecDeque::new();
        assert_eq!(rate_of(&s), None);
        s.push_back((t, 10));
        assert_eq!(rate_of(&s), None);
        s.push_back((t + Duration::from_secs(2), 10));
        assert_eq!(rate_of(&s), None, "nothing processed: no rate");
        s.push_back((t + Duration::from_secs(4), 410));
        assert_eq!(rate_of(&s), Some(100.0));
    }

    #[test]
    fn eta_is_ahead_over_rate_rounded_up() {
        assert_eq!(eta_ms(0, Some(50.0)), Some(0));
        assert_eq!(eta_ms(3, Some(1000.0)), Some(3));
        assert_eq!(eta_ms(1, Some(3.0)), Some(334));
        assert_eq!(eta_ms(10, None), None);
    }

    #[test]
    fn samples_older_than_the_window_are_dropped_and_progress_never_falls() {
        let t = Instant::now();
        let mut l = LaneState::new(5, t);
        l.sample(t, 5);
        l.sample(t + Duration::from_secs(5), 105);
        l.sample(t + RATE_WINDOW + Duration::from_secs(1), 305);
        assert_eq!(l.samples.len(), 2);
        assert_eq!(l.rate(), Some(200.0 / 6.0));
        l.observe(7);
        assert_eq!(l.progress, 305);
    }
}
