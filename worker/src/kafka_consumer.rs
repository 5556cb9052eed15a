//! Kafka mode: a consumer-group member. It consumes in partition order,
//! groups each partition's events by coupon (order kept within a coupon),
//! hands them to the shared processor, and stores a partition's offset only
//! after every event before it is committed in MySQL. Stored offsets are
//! committed every second, when partitions are revoked, and at shutdown.
//!
//! It never stops polling: records are buffered per partition while one
//! partition's batch is processed, and a partition whose buffer is full is
//! paused until it drains. So a database outage or a switch barrier that
//! lasts longer than `max.poll.interval.ms` costs no rebalance.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use common::backoff::Backoff;
use common::domain::QueueType;
use common::domain::{queue_position_key, CouponId, QueuedEvent};
use common::error::QueueError;
use common::queue::batch;
use common::queue::kafka::kafka_err;
use common::queue::{Batch, KafkaProducer, KafkaSettings, RedisQueue, Reject, Settled};
use futures::StreamExt;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::barrier::{self};
use crate::pipeline::{DeadLetters, DrainError, Pipeline};

/// The Kafka consumer of one worker process.
pub struct KafkaWorker {
    pub settings: KafkaSettings,
    pub pipeline: Pipeline,
    pub batch_size: usize,
    pub session_timeout: Duration,
    /// Longest pause between polls before the member is dropped from the
    /// group; librdkafka also sends it as the rebalance timeout.
    pub max_poll_interval: Duration,
    /// librdkafka debug contexts (`cgrp`, `fetch`, ...), logged at debug level.
    pub debug: Option<String>,
    /// The Redis that holds the repeat gate (see `common::queue::gate`).
    pub gate: Option<RedisQueue>,
}

/// Logs rebalances and exposes the assigned partition count as the gauge
/// `kafka_assigned_partitions` and the revocations as the counter
/// `kafka_partitions_revoked_total`.
#[derive(Default)]
pub struct WorkerContext {
    /// Partitions held now.
    assigned: AtomicUsize,
    /// Revocations so far: records buffered before one are dropped (their
    /// partitions restart from the committed offsets).
    revocations: AtomicU64,
}

impl ClientContext for WorkerContext {}

impl ConsumerContext for WorkerContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                info!(?partitions, "partitions assigned");
                // librdkafka keeps a partition paused across a re-assignment;
                // the buffers it was paused for were dropped with the revoke.
                if let Err(e) = consumer.resume(tpl) {
                    warn!(error = ?e, "could not resume the assigned partitions");
                }
                self.assigned.store(partitions.len(), Ordering::Relaxed);
                metrics::gauge!("kafka_assigned_partitions").set(partitions.len() as f64);
            }
            Rebalance::Revoke(tpl) => {
                info!(
                    partitions = tpl.count(),
                    "partitions revoked; stored offsets are committed"
                );
                self.assigned.store(0, Ordering::Relaxed);
                self.revocations.fetch_add(1, Ordering::Relaxed);
                metrics::gauge!("kafka_assigned_partitions").set(0.0);
                metrics::counter!("kafka_partitions_revoked_total").increment(tpl.count() as u64);
            }
            Rebalance::Error(e) => warn!(error = ?e, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // "No offset stored" is the normal answer when nothing was processed.
            tracing::debug!(error = ?e, "offset commit");
        }
    }
}

type WorkerConsumer = StreamConsumer<WorkerContext>;

/// How often a worker without partitions says so.
const IDLE_WARNING: Duration = Duration::from_secs(60);

/// Waits between attempts at what needs the broker or the database back.
fn retry_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), Duration::from_secs(5))
}

/// A partition's records as batches of one coupon each, in coupon order,
/// each in queue order; the undecodable records ride with the first batch.
fn batches(records: &[Record]) -> Vec<Batch> {
    let mut rejects = Vec::new();
    let mut by_coupon: BTreeMap<CouponId, Vec<QueuedEvent>> = BTreeMap::new();
    for r in records {
        match batch::decode(&r.payload, None) {
            Ok(event) => by_coupon
                .entry(event.coupon_id)
                .or_default()
                .push(QueuedEvent {
                    event,
                    queue: QueueType::Kafka,
                    position: r.position(),
                }),
            Err(reason) => rejects.push(Reject {
                position: r.position(),
                key: r.key.clone(),
                payload: r.payload.clone(),
                reason,
            }),
        }
    }
    let mut batches: Vec<Batch> = by_coupon
        .into_values()
        .map(|events| Batch {
            events,
            rejects: Vec::new(),
        })
        .collect();
    match batches.first_mut() {
        Some(first) => first.rejects = rejects,
        None if !rejects.is_empty() => batches.push(Batch {
            events: Vec::new(),
            rejects,
        }),
        None => {}
    }
    batches
}

/// The dead-letter topic.
struct TopicDeadLetters<'a>(&'a KafkaProducer);

impl DeadLetters for TopicDeadLetters<'_> {
    const QUEUE: &'static str = "kafka";

    async fn reject(&self, reject: &Reject) -> Result<(), QueueError> {
        self.0
            .dead_letter(
                reject.key.as_deref(),
                &reject.payload,
                &reject.position,
                &reject.reason,
            )
            .await
    }

    async fn failed(&self, event: &QueuedEvent, reason: &str) -> Result<(), QueueError> {
        self.0
            .dead_letter(
                Some(event.event.coupon_id.to_string().as_bytes()),
                event.event.to_json().as_bytes(),
                &event.position,
                reason,
            )
            .await
    }
}

/// A consumed message, copied out of librdkafka's buffer.
#[derive(Debug, Clone)]
struct Record {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

impl Record {
    fn from_message(m: &BorrowedMessage<'_>) -> Self {
        Self {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
        }
    }

    fn position(&self) -> String {
        format!("{}:{}", self.partition, self.offset)
    }
}

/// One partition's batch being processed while the consumer keeps polling;
/// false when shutdown interrupted it.
type Job<'a> = Pin<Box<dyn Future<Output = bool> + 'a>>;

/// Records polled but not processed yet, per partition in offset order.
struct Buffers {
    batch_size: usize,
    by_partition: BTreeMap<i32, VecDeque<Record>>,
    /// Partitions paused because their buffer is full.
    paused: Vec<i32>,
    /// Where the round-robin over partitions stands.
    next: i32,
}

impl Buffers {
    fn new(batch_size: usize) -> Self {
        Self {
            batch_size: batch_size.max(1),
            by_partition: BTreeMap::new(),
            paused: Vec::new(),
            next: 0,
        }
    }

    /// A partition holding this many records is paused.
    fn pause_at(&self) -> usize {
        4 * self.batch_size
    }

    fn push(&mut self, r: Record) {
        self.by_partition
            .entry(r.partition)
            .or_default()
            .push_back(r);
    }

    /// Drops every buffered record after a rebalance; the new assignment
    /// starts unpaused.
    fn clear(&mut self) {
        self.by_partition.clear();
        self.paused.clear();
    }

    /// Up to a batch of the next partition's records, partitions taken in
    /// turn so that a busy one does not starve the others.
    fn next_batch(&mut self) -> Option<(i32, Vec<Record>)> {
        let partition = self
            .by_partition
            .range(self.next..)
            .chain(self.by_partition.range(..self.next))
            .find(|(_, records)| !records.is_empty())
            .map(|(p, _)| *p)?;
        self.next = partition + 1;
        let records = self.by_partition.get_mut(&partition).expect("found above");
        let n = records.len().min(self.batch_size);
        Some((partition, records.drain(..n).collect()))
    }

    fn to_pause(&self) -> Vec<i32> {
        self.by_partition
            .iter()
            .filter(|(p, r)| r.len() >= self.pause_at() && !self.paused.contains(p))
            .map(|(p, _)| *p)
            .collect()
    }

    fn to_resume(&self) -> Vec<i32> {
        self.paused
            .iter()
            .copied()
            .filter(|p| {
                self.by_partition
                    .get(p)
                    .is_none_or(|r| r.len() < self.batch_size)
            })
            .collect()
    }
}

impl KafkaWorker {
    fn consumer(&self) -> Result<WorkerConsumer, DrainError> {
        let mut config = self
            .settings
            .consumer_config(self.session_timeout, self.max_poll_interval);
        if let Some(contexts) = self.debug.as_deref().filter(|d| !d.is_empty()) {
            config.set("debug", contexts);
        }
        config
            .create_with_context(WorkerContext::default())
            .map_err(|e| DrainError::Queue(kafka_err(e)))
    }

    /// Consumes until `cancel` fires; the batch in hand is finished, its
    /// offsets stored and committed, then the consumer leaves the group.
    pub async fn run(&self, cancel: CancellationToken) -> anyhow::Result<()> {
        // Topics may not exist yet (first start, broker just back).
        let mut backoff = retry_backoff();
        while let Err(e) = self.settings.ensure_topics().await {
            warn!(error = ?e, "creating topics failed; retrying");
            if !backoff.wait(&cancel).await {
                return Ok(());
            }
        }
        let consumer = self.consumer()?;
        let dlq = KafkaProducer::new(self.settings.clone(), Duration::from_secs(10))?;
        consumer.subscribe(&[&self.settings.topic])?;
        info!(topic = %self.settings.topic, group = %self.settings.group_id, "kafka consumer started");

        let mut stream = consumer.stream().ready_chunks(self.batch_size);
        // An idle member is normal (more workers than partitions), but one
        // that never gets partitions may face a stuck group: say so.
        let mut idle_check = tokio::time::interval(IDLE_WARNING);
        idle_check.tick().await;
        let mut buffers = Buffers::new(self.batch_size);
        let mut revocations = consumer.context().revocations.load(Ordering::Relaxed);
        // The batch being processed, which keeps going while the loop polls.
        let mut work: Option<Job<'_>> = None;
        loop {
            if work.is_none() {
                if let Some((partition, records)) = buffers.next_batch() {
                    let job = self
                        .handle_partition_retrying(&consumer, &dlq, partition, records, &cancel);
                    work = Some(Box::pin(job));
                }
            }
            tokio::select! {
                chunk = stream.next() => {
                    let Some(chunk) = chunk else { break };
                    let now = consumer.context().revocations.load(Ordering::Relaxed);
                    if now != revocations {
                        // Partitions were taken away: their records come
                        // again from the committed offsets to whoever holds
                        // them now.
                        revocations = now;
                        buffers.clear();
                    }
                    for m in chunk {
                        match m {
                            Ok(m) => buffers.push(Record::from_message(&m)),
                            Err(e) => warn!(error = ?e, "consumer error"),
                        }
                    }
                    self.pause_full(&consumer, &mut buffers);
                }
                done = async { work.as_mut().expect("guarded").as_mut().await }, if work.is_some() => {
                    work = None;
                    if !done {
                        break;
                    }
                    self.resume_drained(&consumer, &mut buffers);
                }
                _ = idle_check.tick() => {
                    if consumer.context().assigned.load(Ordering::Relaxed) == 0 {
                        warn!(
                            group = %self.settings.group_id,
                            "this worker holds no partitions; if no worker of the group does, \
                             check the group's lag (queue-size) and the other workers' logs"
                        );
                    }
                }
                _ = cancel.cancelled() => {
                    // The batch in hand finishes (its waits end at once).
                    if let Some(job) = work.take() {
                        job.await;
                    }
                    break;
                }
            }
        }
        drop(work);
        drop(stream);
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => info!("offsets committed; leaving the group"),
            Err(e) => info!(error = ?e, "nothing to commit at shutdown"),
        }
        Ok(())
    }

    /// Pauses the partitions whose buffer is full: polling goes on (the
    /// group keeps this member) without fetching more of them.
    fn pause_full(&self, consumer: &WorkerConsumer, buffers: &mut Buffers) {
        let full = buffers.to_pause();
        if full.is_empty() {
            return;
        }
        match consumer.pause(&self.partition_list(&full)) {
            Ok(()) => buffers.paused.extend(full),
            Err(e) => warn!(error = ?e, "could not pause partitions"),
        }
    }

    /// Resumes the paused partitions whose buffer has drained.
    fn resume_drained(&self, consumer: &WorkerConsumer, buffers: &mut Buffers) {
        let drained = buffers.to_resume();
        if drained.is_empty() {
            return;
        }
        match consumer.resume(&self.partition_list(&drained)) {
            Ok(()) => buffers.paused.retain(|p| !drained.contains(p)),
            Err(e) => warn!(error = ?e, "could not resume partitions"),
        }
    }

    fn partition_list(&self, partitions: &[i32]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition(&self.settings.topic, p);
        }
        tpl
    }

    /// Processes one partition's records until they are done. A batch that
    /// cannot be committed (database down, broker down for dead letters or
    /// forwarding) is retried in place with backoff, never skipped. Returns
    /// false if shutdown interrupted it.
    async fn handle_partition_retrying(
        &self,
        consumer: &WorkerConsumer,
        dlq: &KafkaProducer,
        partition: i32,
        records: Vec<Record>,
        cancel: &CancellationToken,
    ) -> bool {
        let mut backoff = retry_backoff();
        loop {
            match self
                .handle_partition(consumer, dlq, partition, &records, cancel)
                .await
            {
                Ok(()) => return true,
                Err(_) if cancel.is_cancelled() => return false,
                Err(e) => {
                    warn!(error = ?e, partition, wait = ?backoff.current(), "batch not committed; retrying it");
                    if !backoff.wait(cancel).await {
                        return false;
                    }
                }
            }
        }
    }

    async fn handle_partition(
        &self,
        consumer: &WorkerConsumer,
        dlq: &KafkaProducer,
        partition: i32,
        records: &[Record],
        cancel: &CancellationToken,
    ) -> Result<(), DrainError> {
        // Coupons a queue switch holds wait; the others go first. While they
        // wait, the offset moves up to the earliest held event: everything
        // before it is done, and the other queue's workers may be waiting
        // for exactly that (a coupon switched back and forth).
        let mut waiting = batches(records);
        loop {
            let mut held = Vec::new();
            for mut batch in waiting {
                let passable = self.pipeline.barrier.passable(&batch.events).await;
                let rest = batch.events.split_off(passable);
                let drained = self
                    .pipeline
                    .drain(&TopicDeadLetters(dlq), &batch, cancel)
                    .await?;
                self.settle_gate(&batch, &drained.settled).await;
                if !rest.is_empty() {
                    held.push(Batch {
                        events: rest,
                        rejects: Vec::new(),
                    });
                }
            }
            if held.is_empty() {
                break;
            }
            if let Some(first) = held
                .iter()
                .filter_map(|b| b.events.first())
                .filter_map(|e| queue_position_key(&e.position))
                .map(|(_, offset)| offset)
                .min()
            {
                self.store_offset(consumer, partition, first as i64)?;
            }
            waiting = held;
            tokio::select! {
                _ = tokio::time::sleep(barrier::RECHECK) => {}
                _ = cancel.cancelled() => return Err(DrainError::Held),
            }
        }
        let last = records.last().map_or(0, |r| r.offset);
        self.store_offset(consumer, partition, last + 1)?;
        metrics::counter!("coupon_issue_events_acknowledged_total", "queue" => "kafka")
            .increment(records.len() as u64);
        Ok(())
    }

    /// Settles the users' gate entries of a committed batch. Best effort: an
    /// entry left pending is repaired by the api when its user clicks again
    /// (it finds the request processed and reads its result once).
    async fn settle_gate(&self, batch: &Batch, settled: &[Settled]) {
        let (Some(gate), Some(first)) = (&self.gate, batch.events.first()) else {
            return;
        };
        if let Err(e) = gate.settle(first.event.coupon_id, settled).await {
            metrics::counter!("coupon_issue_gate_settle_failures_total").increment(1);
            warn!(error = %e, "settling the repeat gate failed; the api repairs the entries on the users' next clicks");
        }
    }

    /// Stores `next` as the partition's offset to commit: every record
    /// before it has its result.
    fn store_offset(
        &self,
        consumer: &WorkerConsumer,
        partition: i32,
        next: i64,
    ) -> Result<(), DrainError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.settings.topic, partition, Offset::Offset(next))
            .map_err(|e| DrainError::Queue(kafka_err(e)))?;
        if let Err(e) = consumer.store_offsets(&tpl) {
            // The partition was revoked meanwhile; its new owner resumes from
            // the last commit and the processor skips what is already done.
            warn!(error = ?e, partition, "could not store offset");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::domain::{CouponIssueEvent, UserId};

    fn record(offset: i64, payload: Vec<u8>) -> Record {
        Record {
            partition: 2,
            offset,
            key: Some(b"k".to_vec()),
            payload,
        }
    }

    fn event(coupon: i64, user: i64) -> Vec<u8> {
        let coupon = CouponId::try_from(coupon).unwrap();
        let user = UserId::try_from(user).unwrap();
        CouponIssueEvent::new(coupon, user).to_json().into_bytes()
    }

    #[test]
    fn a_partition_splits_into_one_batch_per_coupon_in_queue_order() {
        let records = [
            record(10, event(7, 1)),
            record(11, event(3, 1)),
            record(12, b"garbage".to_vec()),
            record(13, event(7, 2)),
        ];
        let got = batches(&records);
        let positions: Vec<Vec<&str>> = got
            .iter()
            .map(|b| b.events.iter().map(|e| e.position.as_str()).collect())
            .collect();
        assert_eq!(positions, [vec!["2:11"], vec!["2:10", "2:13"]]);
        assert_eq!(got[0].rejects.len(), 1);
        assert_eq!(got[0].rejects[0].position, "2:12");
        assert_eq!(got[0].rejects[0].key.as_deref(), Some(&b"k"[..]));
        assert!(got[1].rejects.is_empty());

        let only_garbage = batches(&[record(5, b"{}".to_vec())]);
        assert_eq!(only_garbage.len(), 1);
        assert!(only_garbage[0].events.is_empty());
        assert!(batches(&[]).is_empty());
    }

    fn on(partition: i32, offset: i64) -> Record {
        Record {
            partition,
            ..record(offset, event(1, offset + 1))
        }
    }

    #[test]
    fn buffers_hand_out_batches_in_offset_order_taking_partitions_in_turn() {
        let mut b = Buffers::new(2);
        for (p, o) in [(0, 1), (0, 2), (0, 3), (1, 7), (2, 9)] {
            b.push(on(p, o));
        }
        let mut got = Vec::new();
        while let Some((p, records)) = b.next_batch() {
            got.push((p, records.iter().map(|r| r.offset).collect::<Vec<_>>()));
        }
        assert_eq!(
            got,
            [(0, vec![1, 2]), (1, vec![7]), (2, vec![9]), (0, vec![3])]
        );
    }

    #[test]
    fn a_full_partition_is_paused_until_its_buffer_drains() {
        let mut b = Buffers::new(2);
        for o in 0..8 {
            b.push(on(3, o));
        }
        b.push(on(4, 0));
        assert_eq!(b.to_pause(), [3]);
        b.paused.extend(b.to_pause());
        assert!(b.to_pause().is_empty(), "paused once");
        assert!(b.to_resume().is_empty(), "still full");
        for _ in 0..4 {
            b.next_batch();
        }
        assert!(b.to_resume().is_empty(), "a batch is left");
        b.next_batch();
        assert_eq!(b.to_resume(), [3]);
        b.clear();
        assert!(b.paused.is_empty() && b.next_batch().is_none());
    }
}
