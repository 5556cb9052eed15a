//! Kafka backend: topic `coupon-issue-events`, key = coupon id (one coupon's
//! events share a partition and keep their order), idempotent producer with
//! `acks=all`. Dead letters go to `<topic>.dlq`.
//!
//! The producer uses the `murmur2_random` partitioner, the one Java clients
//! use, so [`partition_for`] can tell which partition a coupon lives on (for
//! the queue size) and any Kafka client agrees.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::domain::{CouponId, CouponIssueEvent};
use crate::error::QueueError;
use crate::queue::lane::{Enqueued, Lane};

/// Where the Kafka queue lives.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    pub partitions: i32,
    /// Replication factor of the topics created at start-up.
    pub replication_factor: i32,
}

impl KafkaSettings {
    /// The dead-letter topic: `<topic>.dlq`.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}.dlq", self.topic)
    }

    /// What every Kafka client of the service shares: the brokers, and
    /// short connection timeouts so a dead broker is noticed in seconds.
    /// Every client below starts from this one.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("socket.connection.setup.timeout.ms", "1000")
            .set("reconnect.backoff.max.ms", "1000");
        c
    }

    /// The worker's group membership: offsets are stored by hand after each
    /// batch's transaction commits, and librdkafka commits what was stored
    /// every second and on revoke. `max_poll_interval` is also the rebalance
    /// timeout: how long the coordinator waits for members to rejoin.
    pub fn consumer_config(
        &self,
        session_timeout: Duration,
        max_poll_interval: Duration,
    ) -> ClientConfig {
        let heartbeat = (session_timeout.as_millis() / 3).max(100);
        let mut c = self.client_config();
        c.set("group.id", &self.group_id)
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", "earliest")
            // Joining a busy group on a loaded machine: connect less eagerly.
            .set("socket.connection.setup.timeout.ms", "2000")
            // A fetch the broker holds open returns after this long at most;
            // librdkafka's 500 ms default showed up whole in request-to-result.
            .set("fetch.wait.max.ms", "50")
            .set(
                "session.timeout.ms",
                session_timeout.as_millis().to_string(),
            )
            .set("heartbeat.interval.ms", heartbeat.to_string())
            .set(
                "max.poll.interval.ms",
                max_poll_interval.as_millis().to_string(),
            );
        c
    }

    /// A reader of the dead-letter topic from its start, in a group of its
    /// own (`<group>-dlq-replay`) so that it never takes partitions from the
    /// workers; nothing is committed unless the reader commits by hand (the
    /// replay does, after each dead letter is back on the queue).
    pub fn dead_letter_reader_config(&self) -> ClientConfig {
        let mut c = self.client_config();
        c.set("group.id", format!("{}-dlq-replay", self.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000");
        c
    }

    /// Producer settings: idempotent, `acks=all`, a small linger, and a
    /// delivery timeout so a dead broker turns into an error, not a hang.
    /// The linger (5 ms) lets a crowd's events share produce requests: at
    /// 2 ms the api spent about a third more CPU per accepted request (the
    /// client's broker thread sends more, smaller requests), for ~3 ms less
    /// wait per `202` (docs/performance.md).
    pub fn producer_config(&self, delivery_timeout: Duration) -> ClientConfig {
        let mut c = self.client_config();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("partitioner", "murmur2_random")
            .set(
                "message.timeout.ms",
                delivery_timeout.as_millis().to_string(),
            )
            .set(
                "request.timeout.ms",
                (delivery_timeout.as_millis() / 2).max(500).to_string(),
            );
        c
    }

    /// Creates the topic and its dead-letter topic when they are missing.
    pub async fn ensure_topics(&self) -> Result<(), QueueError> {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().map_err(kafka_err)?;
        let dlq = self.dead_letter_topic();
        let replication = || TopicReplication::Fixed(self.replication_factor);
        let topics = [
            NewTopic::new(&self.topic, self.partitions, replication()),
            NewTopic::new(&dlq, self.partitions, replication()),
        ];
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(5)))
            .request_timeout(Some(Duration::from_secs(5)));
        for result in admin
            .create_topics(&topics, &opts)
            .await
            .map_err(kafka_err)?
        {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(QueueError::Unavailable(format!(
                        "creating topic {name}: {code}"
                    )))
                }
            }
        }
        Ok(())
    }
}

/// A Kafka failure as a queue error.
pub fn kafka_err(e: KafkaError) -> QueueError {
    QueueError::from(e)
}

/// A failed delivery report. Only errors raised before the message could
/// reach a broker say "not queued"; a timeout or a lost connection leaves
/// the outcome unknown (the broker may have written it).
fn delivery_err(e: KafkaError) -> QueueError {
    use RDKafkaErrorCode as C;
    let local_refusal = matches!(
        e.rdkafka_error_code(),
        Some(
            C::QueueFull
                | C::MessageSizeTooLarge
                | C::UnknownTopic
                | C::UnknownTopicOrPartition
                | C::UnknownPartition
                | C::InvalidArgument
                | C::Fatal
                | C::PurgeQueue
        )
    );
    if local_refusal {
        QueueError::Unavailable(e.to_string())
    } else {
        QueueError::Uncertain(e.to_string())
    }
}

/// Kafka's murmur2 (as in the Java client's `Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition a coupon's events go to among `partitions`.
pub fn partition_for(coupon: CouponId, partitions: i32) -> i32 {
    (murmur2(coupon.to_string().as_bytes()) & 0x7fff_ffff) % partitions.max(1)
}

/// Logs the producer's client errors (broker down, ...) through `tracing`.
pub struct ProducerLog;

impl ClientContext for ProducerLog {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka producer");
    }
}

/// One partition's place: the offset up to which the worker group has
/// committed its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionProgress {
    pub partition: i32,
    pub committed: u64,
}

/// The ids of the topic's partitions, as the broker's metadata lists them;
/// empty when the topic does not exist. Blocking: call it off the runtime.
fn topic_partitions(
    inspector: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, QueueError> {
    Ok(inspector
        .fetch_metadata(Some(topic), timeout)
        .map_err(kafka_err)?
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default())
}

/// The producing side of the Kafka queue (the api's enqueue, the worker's
/// dead letters), plus the lag query behind the queue size.
#[derive(Clone)]
pub struct KafkaProducer {
    settings: KafkaSettings,
    delivery_timeout: Duration,
    /// librdkafka reconnects by itself after a broker outage; only a fatal
    /// error (an idempotent producer fenced or out of sequence) leaves it
    /// unusable, and then it is replaced.
    producer: Arc<RwLock<FutureProducer<ProducerLog>>>,
    /// For metadata and the worker group's committed offsets (queue size).
    /// Never subscribes, so it does not join the group.
    inspector: Arc<BaseConsumer>,
}

impl KafkaProducer {
    /// Builds the producer; does not need the broker to be up.
    pub fn new(settings: KafkaSettings, delivery_timeout: Duration) -> Result<Self, QueueError> {
        let producer = Self::producer(&settings, delivery_timeout)?;
        let inspector: BaseConsumer = settings
            .client_config()
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(kafka_err)?;
        Ok(Self {
            settings,
            delivery_timeout,
            producer: Arc::new(RwLock::new(producer)),
            inspector: Arc::new(inspector),
        })
    }

    fn producer(
        settings: &KafkaSettings,
        delivery_timeout: Duration,
    ) -> Result<FutureProducer<ProducerLog>, QueueError> {
        settings
            .producer_config(delivery_timeout)
            .create_with_context(ProducerLog)
            .map_err(kafka_err)
    }

    /// Replaces `failed` if it is still the producer in use.
    fn replace_fatal(&self, failed: &FutureProducer<ProducerLog>) {
        let mut current = self.producer.write().expect("producer lock");
        if current.client().fatal_error().is_none() {
            return; // another caller replaced it already
        }
        tracing::warn!(error = ?failed.client().fatal_error(), "kafka producer failed fatally; replacing it");
        match Self::producer(&self.settings, self.delivery_timeout) {
            Ok(p) => *current = p,
            Err(e) => tracing::warn!(error = ?e, "could not build a new kafka producer"),
        }
    }

    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    /// Sends one record and waits for its delivery report; returns
    /// `partition:offset`.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<String, QueueError> {
        let (partition, offset) = self.deliver(topic, key, payload, headers).await?;
        Ok(format!("{partition}:{offset}"))
    }

    /// Sends one record and waits for its delivery report; returns its
    /// partition and offset.
    async fn deliver(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(i32, i64), QueueError> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        let producer = self.producer.read().expect("producer lock").clone();
        match producer.send(record, Duration::from_millis(100)).await {
            Ok(d) => Ok((d.partition, d.offset)),
            Err((e, _)) => {
                if producer.client().fatal_error().is_some() {
                    self.replace_fatal(&producer);
                }
                Err(delivery_err(e))
            }
        }
    }

    /// Sends the event keyed by its coupon and waits for the delivery report;
    /// returns `partition:offset` and the offset as the request's target
    /// (see [`Enqueued`]).
    pub async fn enqueue(&self, event: &CouponIssueEvent) -> Result<Enqueued, QueueError> {
        self.enqueue_json(event.coupon_id, &event.to_json()).await
    }

    /// [`Self::enqueue`] of an event already serialised (`payload`, its
    /// [`CouponIssueEvent::to_json`]), keyed by `coupon`, its coupon.
    pub async fn enqueue_json(
        &self,
        coupon: CouponId,
        payload: &str,
    ) -> Result<Enqueued, QueueError> {
        let key = coupon.to_string();
        let (partition, offset) = self
            .deliver(
                &self.settings.topic,
                Some(key.as_bytes()),
                payload.as_bytes(),
                None,
            )
            .await?;
        Ok(Enqueued {
            position: format!("{partition}:{offset}"),
            lane: Lane::Partition(partition),
            target: offset.max(0) as u64,
            progress: None,
        })
    }

    /// Sends a dead letter to `<topic>.dlq`: the original payload, keyed like
    /// the original, with headers saying where it came from and why.
    pub async fn dead_letter(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        source: &str,
        reason: &str,
    ) -> Result<(), QueueError> {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "source",
                value: Some(source),
            })
            .insert(Header {
                key: "reason",
                value: Some(reason),
            });
        self.send(
            &self.settings.dead_letter_topic(),
            key,
            payload,
            Some(headers),
        )
        .await
        .map(|_| ())
    }

    /// Lag of the worker group on the coupon's partition: messages of that
    /// partition (any coupon mapped to it) not yet committed by the workers.
    pub async fn partition_lag(&self, coupon: CouponId) -> Result<u64, QueueError> {
        let inspector = self.inspector.clone();
        let topic = self.settings.topic.clone();
        tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(2);
            let partitions = Some(topic_partitions(&inspector, &topic, timeout)?.len() as i32)
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    QueueError::Unavailable(format!("topic {topic} has no partitions"))
                })?;
            let partition = partition_for(coupon, partitions);
            let (low, high) = inspector
                .fetch_watermarks(&topic, partition, timeout)
                .map_err(kafka_err)?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, partition);
            let committed = inspector
                .committed_offsets(tpl, timeout)
                .map_err(kafka_err)?
                .find_partition(&topic, partition)
                .and_then(|p| match p.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(low);
            Ok((high - committed.max(low)).max(0) as u64)
        })
        .await?
    }

    /// Every partition of the topic with the worker group's committed offset
    /// (the log start while the group has committed none): the progress
    /// behind waiting positions. One offsets request, plus a metadata request
    /// when `partitions` is not known yet and a log-start request per
    /// partition without a commit.
    pub async fn partition_progress(
        &self,
        partitions: Option<i32>,
    ) -> Result<Vec<PartitionProgress>, QueueError> {
        let inspector = self.inspector.clone();
        let topic = self.settings.topic.clone();
        tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(2);
            let partitions: Vec<i32> = match partitions {
                Some(n) => (0..n).collect(),
                None => topic_partitions(&inspector, &topic, timeout)?,
            };
            let mut tpl = TopicPartitionList::new();
            for p in &partitions {
                tpl.add_partition(&topic, *p);
            }
            let committed = inspector
                .committed_offsets(tpl, timeout)
                .map_err(kafka_err)?;
            partitions
                .into_iter()
                .map(|partition| {
                    let offset = committed
                        .find_partition(&topic, partition)
                        .and_then(|p| match p.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        });
                    let committed = match offset {
                        Some(o) => o,
                        None => {
                            inspector
                                .fetch_watermarks(&topic, partition, timeout)
                                .map_err(kafka_err)?
                                .0
                        }
                    };
                    Ok(PartitionProgress {
                        partition,
                        committed: committed.max(0) as u64,
                    })
                })
                .collect::<Result<Vec<_>, QueueError>>()
        })
        .await?
    }

    /// The high watermark (next offset) of every partition of the topic;
    /// empty when the broker answers that the topic does not exist.
    pub async fn high_watermarks(&self) -> Result<BTreeMap<i32, i64>, QueueError> {
        let inspector = self.inspector.clone();
        let topic = self.settings.topic.clone();
        tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(2);
            let partitions = topic_partitions(&inspector, &topic, timeout)?;
            if partitions.is_empty() {
                // The broker answered: the topic does not exist, so nothing
                // was ever enqueued under this name.
                tracing::warn!(%topic, "the topic does not exist; it holds nothing");
                return Ok(BTreeMap::new());
            }
            partitions
                .into_iter()
                .map(|p| {
                    let (_, high) = inspector
                        .fetch_watermarks(&topic, p, timeout)
                        .map_err(kafka_err)?;
                    Ok((p, high))
                })
                .collect()
        })
        .await?
    }

    /// Whether the broker answers a metadata request.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let inspector = self.inspector.clone();
        let topic = self.settings.topic.clone();
        tokio::task::spawn_blocking(move || {
            inspector
                .fetch_metadata(Some(&topic), Duration::from_secs(2))
                .map(|_| ())
                .map_err(kafka_err)
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Vectors from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn a_coupon_goes_to_the_partition_a_java_client_picks_for_its_key() {
        // The Java client's DefaultPartitioner for the key "<coupon id>"
        // among 3 partitions: toPositive(murmur2(key)) % 3, worked out apart
        // from this code.
        let expected = [
            (1, 0),
            (2, 2),
            (3, 2),
            (4, 1),
            (5, 0),
            (6, 1),
            (7, 0),
            (8, 0),
            (9, 2),
            (10, 1),
            (11, 0),
            (12, 1),
            (42, 1),
            (123_456_789, 0),
        ];
        for (coupon, partition) in expected {
            let c = CouponId::try_from(coupon).unwrap();
            assert_eq!(partition_for(c, 3), partition, "coupon {coupon}");
        }
    }

    #[test]
    fn coupons_spread_evenly_over_the_partitions() {
        let mut per_partition = [0usize; 3];
        for coupon in 1..=3000 {
            per_partition[partition_for(CouponId::try_from(coupon).unwrap(), 3) as usize] += 1;
        }
        // 1,000 each on average; a hash that clumps would leave one far off.
        assert!(
            per_partition.iter().all(|&n| (900..=1100).contains(&n)),
            "{per_partition:?}"
        );
    }
}
