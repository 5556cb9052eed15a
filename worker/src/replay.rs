//! Replays the dead-letter queue: every dead letter that decodes as an issue
//! event goes back to its coupon's queue (same request id, new queue
//! position), where the processor decides it again and replaces its
//! `SYSTEM_ERROR`. Dead letters that do not decode are left for an operator.

use std::collections::HashSet;
use std::time::Duration;

use common::domain::CouponIssueEvent;
use common::domain::QueueType;
use common::queue::{KafkaProducer, KafkaSettings, RedisQueue};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;

use crate::config::WorkerConfig;

/// What a replay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Dead letters put back on their coupon's queue.
    pub replayed: usize,
    /// Dead letters that are not events; left where they are (Redis) or
    /// skipped (Kafka, whose log cannot be edited).
    pub undecodable: usize,
}

/// Replays every dead letter present now.
pub async fn replay_dead_letters(config: &WorkerConfig) -> anyhow::Result<ReplaySummary> {
    let c = &config.common;
    match c.queue_type {
        QueueType::Redis => {
            let queue = RedisQueue::connect(&c.redis_settings(), Duration::from_secs(5)).await?;
            replay_redis(&queue).await
        }
        QueueType::Kafka => replay_kafka(c.kafka_settings()).await,
    }
}

async fn replay_redis(queue: &RedisQueue) -> anyhow::Result<ReplaySummary> {
    let mut summary = ReplaySummary::default();
    let mut cursor: Option<String> = None;
    loop {
        let letters = queue.dead_letters(cursor.as_deref(), 500).await?;
        let Some(last) = letters.last() else { break };
        cursor = Some(last.id.clone());
        for letter in &letters {
            match CouponIssueEvent::from_json(&letter.payload) {
                Ok(event) => {
                    queue.requeue(&event, false).await?;
                    queue.delete_dead_letter(&letter.id).await?;
                    summary.replayed += 1;
                }
                Err(e) => {
                    tracing::warn!(dead_letter = %letter.id, reason = %e, "left in the dead-letter queue");
                    summary.undecodable += 1;
                }
            }
        }
    }
    Ok(summary)
}

async fn replay_kafka(settings: KafkaSettings) -> anyhow::Result<ReplaySummary> {
    let dlq_topic = settings.dead_letter_topic();
    let consumer: StreamConsumer = settings.dead_letter_reader_config().create()?;
    consumer.subscribe(&[&dlq_topic])?;
    let producer = KafkaProducer::new(settings.clone(), Duration::from_secs(10))?;
    let partitions = {
        let md = consumer.fetch_metadata(Some(&dlq_topic), Duration::from_secs(10))?;
        md.topics().first().map_or(0, |t| t.partitions().len())
    };
    let mut at_end = HashSet::new();
    let mut summary = ReplaySummary::default();
    while at_end.len() < partitions {
        let msg = match tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await {
            Err(_) => anyhow::bail!("no answer from the dead-letter topic within 30 s"),
            Ok(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                continue;
            }
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(m)) => m,
        };
        at_end.remove(&msg.partition());
        match CouponIssueEvent::from_json(msg.payload().unwrap_or_default()) {
            Ok(event) => {
                producer.enqueue(&event).await?;
                summary.replayed += 1;
            }
            Err(e) => {
                tracing::warn!(partition = msg.partition(), offset = msg.offset(), reason = %e, "skipped undecodable dead letter");
                summary.undecodable += 1;
            }
        }
        consumer.commit_message(&msg, CommitMode::Sync)?;
    }
    Ok(summary)
}
