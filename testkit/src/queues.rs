//! What a test's queues hold, read from Redis and the broker directly rather
//! than through the api (whose figures are the active queue's).

use common::domain::{CouponId, CouponIssueEvent, QueueType, QueuedEvent};
use common::queue::redis::RedisKeys;
use common::queue::{Producer, RedisQueue};

use crate::app::TestApp;

/// Reads one of a test's queues over connections it keeps, so that a
/// test can poll it quickly.
pub struct QueueReader {
    producer: Producer,
    keys: RedisKeys,
    /// For the leases (Redis only).
    redis: Option<RedisConnection>,
}

enum RedisConnection {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl QueueReader {
    /// Entries of the coupon not acknowledged yet (Redis: its stream's
    /// length; Kafka: the worker group's lag on its partition).
    pub async fn size(&self, coupon: CouponId) -> u64 {
        self.producer
            .queue_size(coupon)
            .await
            .expect("the queue answers")
            .size
    }

    /// The pid of the worker that holds the coupon's Redis lease, if one
    /// does. A worker names itself `worker-<pid>-<uuid>` in its leases.
    pub async fn lease_holder(&mut self, coupon: CouponId) -> Option<u32> {
        let mut get = redis::cmd("GET");
        get.arg(self.keys.lease(coupon));
        let holder: Option<String> = match self.redis.as_mut().expect("a Redis reader") {
            RedisConnection::Single(c) => get.query_async(c).await.unwrap(),
            RedisConnection::Cluster(c) => get.query_async(c).await.unwrap(),
        };
        holder?
            .strip_prefix("worker-")?
            .split('-')
            .next()?
            .parse()
            .ok()
    }
}

impl TestApp {
    /// A reader of this app's `queue`.
    pub async fn queue_reader(&self, queue: QueueType) -> QueueReader {
        let producer = Producer::new(&self.common.queue_settings(), queue)
            .await
            .expect("the test's queue settings");
        let redis = match (queue, &self.common.redis_cluster_nodes) {
            (QueueType::Kafka, _) => None,
            (QueueType::Redis, Some(nodes)) => {
                let client = redis::cluster::ClusterClient::new(nodes.urls().to_vec()).unwrap();
                Some(RedisConnection::Cluster(
                    client.get_async_connection().await.unwrap(),
                ))
            }
            (QueueType::Redis, None) => {
                let client = redis::Client::open(self.common.redis_url.as_str()).unwrap();
                Some(RedisConnection::Single(
                    client.get_multiplexed_async_connection().await.unwrap(),
                ))
            }
        };
        QueueReader {
            producer,
            keys: RedisKeys::new(self.common.redis_key_prefix.as_str()),
            redis,
        }
    }

    /// Entries of the coupon in `queue` not acknowledged yet; see
    /// [`QueueReader::size`].
    pub async fn queue_size_in(&self, queue: QueueType, coupon: CouponId) -> u64 {
        self.queue_reader(queue).await.size(coupon).await
    }

    /// Every entry ever added to the coupon's queue in the app's queue
    /// type: Redis, those acknowledged (the processed count) plus those
    /// left; Kafka, every message of the test's topic (a test's topic holds
    /// one sale). Unlike a count of results it needs no wait: what is not
    /// there now was never queued.
    pub async fn entries_enqueued(&self, coupon: CouponId) -> u64 {
        match self.queue_reader(self.common.queue_type).await.producer {
            Producer::Redis(q) => {
                q.processed(coupon).await.unwrap() + q.queue_size(coupon).await.unwrap()
            }
            Producer::Kafka(k) => k.high_watermarks().await.unwrap().values().sum::<i64>() as u64,
        }
    }

    /// A handle of this app's Redis queue (its keys; a single node or the
    /// cluster), as the api and the workers make it.
    pub async fn redis_queue(&self) -> RedisQueue {
        match Producer::new(&self.common.queue_settings(), QueueType::Redis)
            .await
            .expect("the test's queue settings")
        {
            Producer::Redis(q) => q,
            Producer::Kafka(_) => unreachable!("the Redis producer"),
        }
    }

    /// Decides the events waiting in the coupon's Redis stream here, as a
    /// worker would (results written, stock taken), without a worker
    /// process; they stay in the stream.
    pub async fn decide_queued(&self, coupon: CouponId) {
        let q = self.redis_queue().await;
        let events: Vec<QueuedEvent> = q
            .read_head(coupon, 1_000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| QueuedEvent {
                event: CouponIssueEvent::from_json(e.payload.as_deref().expect("an event"))
                    .expect("an event"),
                queue: QueueType::Redis,
                position: e.id,
            })
            .collect();
        common::processor::process_batch(&self.db.pool, &events)
            .await
            .expect("the batch is decided");
    }

    /// The events waiting in the coupon's Redis stream, oldest first.
    pub async fn queued_events(&self, coupon: CouponId) -> Vec<CouponIssueEvent> {
        let q = self.redis_queue().await;
        q.read_head(coupon, 100_000)
            .await
            .unwrap()
            .iter()
            .map(|e| {
                let payload = e.payload.as_deref().expect("an entry with an event");
                CouponIssueEvent::from_json(payload).expect("an event")
            })
            .collect()
    }
}
