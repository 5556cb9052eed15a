//! Kafka mode: a consumer-group member. It consumes in partition order,
//! groups each partition's events by coupon (order kept within a coupon),
//! hands them to the shared processor, and stores a partition's offset only
//! after every event before it is committed in MySQL. Stored offsets are
//! committed every second, when partitions are revoked, and at shutdown.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::backoff::Backoff;
use common::config::QueueType;
use common::domain::{queue_position_key, CouponId, QueuedEvent};
use common::error::QueueError;
use common::processor::RetryPolicy;
use common::queue::batch;
use common::queue::kafka::kafka_err;
use common::queue::{Batch, KafkaProducer, KafkaSettings, Reject};
use futures::StreamExt;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::MySqlPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::barrier::{self, Barrier};
use crate::pipeline::{drain_batch, DeadLetters, DrainError};

/// The Kafka consumer of one worker process.
pub struct KafkaWorker {
    pub settings: KafkaSettings,
    pub pool: MySqlPool,
    pub batch_size: usize,
    pub session_timeout: Duration,
    /// Longest pause between polls before the member is dropped from the
    /// group; librdkafka also sends it as the rebalance timeout.
    pub max_poll_interval: Duration,
    pub retry: RetryPolicy,
    /// librdkafka debug contexts (`cgrp`, `fetch`, ...), logged at debug level.
    pub debug: Option<String>,
    /// Holds events of a coupon until a queue switch allows them.
    pub barrier: Arc<Barrier>,
}

/// Logs rebalances and exposes the assigned partition count as the gauge
/// `kafka_assigned_partitions`.
#[derive(Default)]
pub struct WorkerContext {
    /// Partitions held now.
    assigned: AtomicUsize,
}

impl ClientContext for WorkerContext {}

impl ConsumerContext for WorkerContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                info!(?partitions, "partitions assigned");
                self.assigned.store(partitions.len(), Ordering::Relaxed);
                metrics::gauge!("kafka_assigned_partitions").set(partitions.len() as f64);
            }
            Rebalance::Revoke(tpl) => {
                info!(
                    partitions = tpl.count(),
                    "partitions revoked; stored offsets are committed"
                );
                self.assigned.store(0, Ordering::Relaxed);
                metrics::gauge!("kafka_assigned_partitions").set(0.0);
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
        loop {
            let chunk = tokio::select! {
                c = stream.next() => c,
                _ = idle_check.tick() => {
                    if consumer.context().assigned.load(Ordering::Relaxed) == 0 {
                        warn!(
                            group = %self.settings.group_id,
                            "this worker holds no partitions; if no worker of the group does, \
                             check the group's lag (queue-size) and the other workers' logs"
                        );
                    }
                    continue;
                }
                _ = cancel.cancelled() => break,
            };
            let Some(chunk) = chunk else { break };
            let mut records = Vec::with_capacity(chunk.len());
            for m in chunk {
                match m {
                    Ok(m) => records.push(Record::from_message(&m)),
                    Err(e) => warn!(error = ?e, "consumer error"),
                }
            }
            if !self.handle_records(&consumer, &dlq, records, &cancel).await {
                break;
            }
        }
        drop(stream);
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => info!("offsets committed; leaving the group"),
            Err(e) => info!(error = ?e, "nothing to commit at shutdown"),
        }
        Ok(())
    }

    /// Processes records partition by partition. A partition whose batch
    /// cannot be committed (database down) is retried in place with backoff,
    /// never skipped. Returns false if shutdown interrupted it.
    async fn handle_records(
        &self,
        consumer: &WorkerConsumer,
        dlq: &KafkaProducer,
        records: Vec<Record>,
        cancel: &CancellationToken,
    ) -> bool {
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        for r in records {
            by_partition.entry(r.partition).or_default().push(r);
        }
        for (partition, records) in by_partition {
            let mut backoff = retry_backoff();
            loop {
                match self
                    .handle_partition(consumer, dlq, partition, &records, cancel)
                    .await
                {
                    Ok(()) => break,
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
        true
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
                let passable = self.barrier.passable(&batch.events).await;
                let rest = batch.events.split_off(passable);
                drain_batch(
                    &TopicDeadLetters(dlq),
                    &self.pool,
                    &batch,
                    self.retry,
                    cancel,
                )
                .await?;
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
}
