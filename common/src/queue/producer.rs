//! The api's side of the queues: one producer type over both backends, and
//! both queues built on first use.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use super::kafka::{KafkaProducer, KafkaSettings};
use super::lane::{Enqueued, QueueSize};
use super::redis::{RedisQueue, RedisSettings};
use crate::domain::{CouponId, CouponIssueEvent, QueueType};
use crate::error::QueueError;

/// How long the api waits for the broker to acknowledge an event.
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest an enqueue can take before it returns, whatever the broker
/// does: Kafka's own delivery timeout is [`ENQUEUE_TIMEOUT`]; this guards
/// against a client that never answers.
pub const ENQUEUE_LIMIT: Duration = Duration::from_secs(5);

/// The producing side of the configured queue.
#[derive(Clone)]
pub enum Producer {
    Redis(RedisQueue),
    Kafka(KafkaProducer),
}

impl Producer {
    /// Builds the producer of `queue`. A single Redis or a
    /// Kafka broker may still be down (the first request connects); a Redis
    /// Cluster must answer now, so a wrong `REDIS_CLUSTER_NODES` stops
    /// start-up.
    pub async fn new(settings: &QueueSettings, queue: QueueType) -> anyhow::Result<Self> {
        match queue {
            QueueType::Redis => Ok(Producer::Redis(
                RedisQueue::connect(&settings.redis, ENQUEUE_TIMEOUT).await?,
            )),
            QueueType::Kafka => Ok(Producer::Kafka(KafkaProducer::new(
                settings.kafka.clone(),
                ENQUEUE_TIMEOUT,
            )?)),
        }
    }

    /// Which queue this produces to.
    pub fn queue_type(&self) -> QueueType {
        match self {
            Producer::Redis(_) => QueueType::Redis,
            Producer::Kafka(_) => QueueType::Kafka,
        }
    }

    /// Hands the event to the broker; returns its queue position once the
    /// broker acknowledged it. An error means it was not enqueued.
    pub async fn enqueue(&self, event: &CouponIssueEvent) -> Result<Enqueued, QueueError> {
        within_limit(async {
            match self {
                Producer::Redis(q) => q.enqueue(event).await,
                Producer::Kafka(k) => k.enqueue(event).await,
            }
        })
        .await
    }

    /// Puts an event accepted earlier into this queue: a late event a worker
    /// forwards (invariant S6 of `common::switch`). A sold-out mark does not
    /// refuse it, since it must get its result; a Redis fence does.
    pub async fn forward(&self, event: &CouponIssueEvent) -> Result<Enqueued, QueueError> {
        within_limit(async {
            match self {
                Producer::Redis(q) => q.requeue(event, true).await,
                Producer::Kafka(k) => k.enqueue(event).await,
            }
        })
        .await
    }

    /// Lifts a worker's sold-out mark after a restock (Redis; Kafka has
    /// none).
    pub async fn reopen(&self, coupon: CouponId) -> Result<(), QueueError> {
        match self {
            Producer::Redis(q) => q.reopen(coupon).await,
            Producer::Kafka(_) => Ok(()),
        }
    }

    /// Accepted requests for this coupon that are not processed yet.
    pub async fn queue_size(&self, coupon: CouponId) -> Result<QueueSize, QueueError> {
        match self {
            Producer::Redis(q) => Ok(QueueSize {
                size: q.queue_size(coupon).await?,
                scope: "coupon",
            }),
            Producer::Kafka(k) => Ok(QueueSize {
                size: k.partition_lag(coupon).await?,
                scope: "partition",
            }),
        }
    }

    /// Whether the broker answers.
    pub async fn ping(&self) -> Result<(), QueueError> {
        match self {
            Producer::Redis(q) => q.ping().await,
            Producer::Kafka(k) => k.ping().await,
        }
    }

    /// Creates the Kafka topics when missing (nothing to do for Redis).
    pub async fn ensure_topics(&self) -> Result<(), QueueError> {
        match self {
            Producer::Redis(_) => Ok(()),
            Producer::Kafka(k) => k.settings().ensure_topics().await,
        }
    }
}

/// `enqueue`, returning within [`ENQUEUE_LIMIT`] whatever the broker does.
async fn within_limit(
    enqueue: impl std::future::Future<Output = Result<Enqueued, QueueError>>,
) -> Result<Enqueued, QueueError> {
    tokio::time::timeout(ENQUEUE_LIMIT, enqueue)
        .await
        .map_err(|_| QueueError::Timeout(ENQUEUE_LIMIT))?
}

/// What both queues connect to.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub redis: RedisSettings,
    pub kafka: KafkaSettings,
}

/// Both queues, each built from its settings the first time it is needed:
/// a service that never switches never connects to the other one.
#[derive(Clone)]
pub struct Queues {
    settings: Arc<QueueSettings>,
    redis: Arc<OnceCell<Producer>>,
    kafka: Arc<OnceCell<Producer>>,
}

impl Queues {
    pub fn new(settings: QueueSettings) -> Self {
        Self {
            settings: Arc::new(settings),
            redis: Default::default(),
            kafka: Default::default(),
        }
    }

    /// Starts with `producer` already built for its queue.
    pub fn with(settings: QueueSettings, producer: Producer) -> Self {
        let queues = Self::new(settings);
        let cell = match producer.queue_type() {
            QueueType::Redis => &queues.redis,
            QueueType::Kafka => &queues.kafka,
        };
        cell.set(producer).ok();
        queues
    }

    /// The producer of `queue`, built now if it is the first call. Building
    /// a Redis Cluster client needs the cluster to answer.
    pub async fn producer(&self, queue: QueueType) -> Result<&Producer, QueueError> {
        let cell = match queue {
            QueueType::Redis => &self.redis,
            QueueType::Kafka => &self.kafka,
        };
        cell.get_or_try_init(|| async {
            Producer::new(&self.settings, queue)
                .await
                .map_err(|e| QueueError::Unavailable(format!("{e:#}")))
        })
        .await
    }

    /// The producer of `queue` if it was built already.
    pub fn built(&self, queue: QueueType) -> Option<&Producer> {
        match queue {
            QueueType::Redis => self.redis.get(),
            QueueType::Kafka => self.kafka.get(),
        }
    }

    pub async fn redis(&self) -> Result<&RedisQueue, QueueError> {
        match self.producer(QueueType::Redis).await? {
            Producer::Redis(q) => Ok(q),
            Producer::Kafka(_) => unreachable!("the Redis cell holds a Redis producer"),
        }
    }

    pub async fn kafka(&self) -> Result<&KafkaProducer, QueueError> {
        match self.producer(QueueType::Kafka).await? {
            Producer::Kafka(k) => Ok(k),
            Producer::Redis(_) => unreachable!("the Kafka cell holds a Kafka producer"),
        }
    }
}
