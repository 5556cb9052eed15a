//! The queue interface: one producer type for the api and the consumer side
//! of each backend for the worker, chosen by [`QueueType`].

pub mod batch;
pub mod kafka;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::OnceCell;

use crate::config::{CommonConfig, QueueType};
use crate::domain::{CouponId, CouponIssueEvent};
use crate::error::QueueError;

pub use self::batch::{Batch, Reject};
pub use self::kafka::{KafkaProducer, KafkaSettings, PartitionProgress};
pub use self::redis::RedisQueue;

/// How long the api waits for the broker to acknowledge an event.
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest an enqueue can take before it returns, whatever the broker
/// does: Kafka's own delivery timeout is [`ENQUEUE_TIMEOUT`]; this guards
/// against a client that never answers.
pub const ENQUEUE_LIMIT: Duration = Duration::from_secs(5);

/// Requests not yet processed, and what the number covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueSize {
    pub size: u64,
    /// `coupon` when the number counts only this coupon's requests;
    /// `partition` when it counts the whole partition the coupon maps to.
    pub scope: &'static str,
}

/// The queue whose progress decides when an accepted request's turn comes:
/// a coupon's stream (Redis) or a partition of the topic (Kafka, shared by
/// the coupons that hash to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    Coupon(CouponId),
    Partition(i32),
}

/// What the queue answered for an accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// `queue_position`: the Redis entry id or Kafka `partition:offset`.
    pub position: String,
    pub lane: Lane,
    /// The lane's progress count at which this request is next in line:
    /// `target - progress` requests are ahead of it. Progress counts
    /// processed entries (Redis: the coupon's `processed` counter) or is the
    /// worker group's committed offset (Kafka); `target` is then the
    /// request's offset.
    pub target: u64,
    /// The lane's progress read in the same step as the enqueue, when the
    /// backend gives it (Redis); Kafka's comes from the committed offsets.
    pub progress: Option<u64>,
}

impl Enqueued {
    /// Requests ahead of this one when its lane stands at `progress`.
    pub fn ahead(&self, progress: u64) -> u64 {
        self.target.saturating_sub(progress)
    }
}

/// The producing side of the configured queue.
#[derive(Clone)]
pub enum Producer {
    Redis(RedisQueue),
    Kafka(KafkaProducer),
}

impl Producer {
    /// Builds the producer for the configured backend. A single Redis or a
    /// Kafka broker may still be down (the first request connects); a Redis
    /// Cluster must answer now, so a wrong `REDIS_CLUSTER_NODES` stops
    /// start-up.
    pub async fn from_config(config: &CommonConfig) -> anyhow::Result<Self> {
        Self::for_queue(config, config.queue_type).await
    }

    /// Builds the producer of `queue` from the configuration.
    pub async fn for_queue(config: &CommonConfig, queue: QueueType) -> anyhow::Result<Self> {
        match queue {
            QueueType::Redis => Ok(Producer::Redis(
                RedisQueue::from_config(config, ENQUEUE_TIMEOUT).await?,
            )),
            QueueType::Kafka => Ok(Producer::Kafka(KafkaProducer::new(
                KafkaSettings::from_config(config),
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
        let fut = async {
            match self {
                Producer::Redis(q) => q.enqueue(event).await,
                Producer::Kafka(k) => k.enqueue(event).await,
            }
        };
        let limit = ENQUEUE_LIMIT;
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| QueueError::Timeout(limit))?
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

/// Both queues, each built from the configuration the first time it is
/// needed: a service that never switches never connects to the other one.
#[derive(Clone)]
pub struct Queues {
    config: Arc<CommonConfig>,
    redis: Arc<OnceCell<Producer>>,
    kafka: Arc<OnceCell<Producer>>,
}

impl Queues {
    pub fn new(config: &CommonConfig) -> Self {
        Self {
            config: Arc::new(config.clone()),
            redis: Default::default(),
            kafka: Default::default(),
        }
    }

    /// Starts with `producer` already built for its queue.
    pub fn with(config: &CommonConfig, producer: Producer) -> Self {
        let queues = Self::new(config);
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
            Producer::for_queue(&self.config, queue)
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
