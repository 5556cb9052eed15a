//! The api's side of the queues: one producer type over both backends, and
//! both queues built on first use.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use super::gate::{Admitted, Claim, GateState};
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

/// A claim in the repeat gate older than this is taken over by the user's
/// next click, which sends its event again (Kafka mode): by then the api
/// that made it has placed it, dropped it, or is sending it again itself
/// (twice [`ENQUEUE_LIMIT`]).
pub const CLAIM_STALE: Duration = Duration::from_secs(10);

/// After an uncertain outcome (Kafka mode) the api sends a claimed event
/// again, under the same id, once a second for this many times, so that
/// the request id it handed out ends in a result.
const RESEND_TRIES: u32 = 120;

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

    /// A user's click, through the repeat gate (see [`super::gate`]): a new
    /// request is enqueued, a repeat is answered with the user's request.
    /// Redis mode: one script does both. Kafka mode: `gate` is the Redis
    /// that holds it; the entry is claimed, the event produced, and its
    /// place recorded. Without a gate, or while it does not answer, the
    /// click is enqueued as a new request: the door stays open, and the
    /// database's own duplicate check still stands.
    pub async fn admit(
        &self,
        event: &CouponIssueEvent,
        gate: Option<&RedisQueue>,
    ) -> Result<Admitted, QueueError> {
        match (self, gate) {
            (Producer::Redis(q), _) => within_limit(q.admit(event)).await,
            (Producer::Kafka(k), Some(gate)) => admit_to_kafka(k, gate, event).await,
            (Producer::Kafka(_), None) => Ok(Admitted::New(self.enqueue(event).await?)),
        }
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

/// Kafka mode's gate: claim, produce, place (see [`Producer::admit`]).
async fn admit_to_kafka(
    k: &KafkaProducer,
    gate: &RedisQueue,
    event: &CouponIssueEvent,
) -> Result<Admitted, QueueError> {
    // Serialised once: the gate's claim keeps it, the broker gets it.
    let json = event.to_json();
    let (coupon, user) = (event.coupon_id, event.user_id);
    let claim =
        match within_limit(gate.claim(coupon, user, event.event_id, &json, CLAIM_STALE)).await {
            Ok(claim) => claim,
            Err(e) => {
                metrics::counter!("coupon_issue_gate_unavailable_total").increment(1);
                tracing::warn!(error = %e, "repeat gate unavailable: enqueueing without it");
                return Ok(Admitted::New(
                    within_limit(k.enqueue_json(coupon, &json)).await?,
                ));
            }
        };
    match claim {
        Claim::Repeat(entry) => Ok(Admitted::Repeat {
            entry,
            progress: None,
        }),
        Claim::TakenOver(mut entry) => {
            // A claim whose api never placed it: send its event again, under
            // its id (the processor decides a request id once).
            if let GateState::Claimed { event: json, .. } = &entry.state {
                // Read to check it, sent as it was kept.
                match CouponIssueEvent::from_json(json.as_bytes()) {
                    Ok(stale) => match within_limit(k.enqueue_json(stale.coupon_id, json)).await {
                        Ok(enqueued) => {
                            // Queued now whatever the gate says: a failed
                            // place leaves the claim, taken over again later
                            // (the processor decides the id once).
                            if let Err(e) = gate
                                .place(coupon, user, entry.request_id, Some(&enqueued))
                                .await
                            {
                                tracing::warn!(error = %e, "recording a request's place in the gate failed");
                            }
                            entry = super::gate::GateEntry {
                                request_id: entry.request_id,
                                state: GateState::Pending(super::gate::Place {
                                    position: enqueued.position,
                                    lane: enqueued.lane,
                                    target: enqueued.target,
                                }),
                            };
                        }
                        Err(e) => tracing::warn!(error = %e, request_id = %entry.request_id,
                            "sending a stale claim's event again failed; the next click retries"),
                    },
                    Err(e) => tracing::error!(error = %e, "a gate claim holds no readable event"),
                }
            }
            Ok(Admitted::Repeat {
                entry,
                progress: None,
            })
        }
        // A place is recorded off the call's path: if it never lands, the
        // claim goes stale and is sent again under the same id, which the
        // processor skips.
        Claim::Claimed => match within_limit(k.enqueue_json(coupon, &json)).await {
            Ok(enqueued) => {
                gate.place_later(coupon, user, event.event_id, Some(&enqueued));
                Ok(Admitted::New(enqueued))
            }
            Err(e) if e.is_uncertain() => {
                resend_later(k.clone(), gate.clone(), event.clone());
                Err(e)
            }
            // Dropped before the answer: a user whose click was refused may
            // click again at once.
            Err(e) => {
                if let Err(e) = gate.place(coupon, user, event.event_id, None).await {
                    tracing::warn!(error = %e, "dropping a refused request's gate claim failed; it goes stale");
                }
                Err(e)
            }
        },
    }
}

/// Sends a claimed event whose outcome is unknown again, under its id,
/// until the broker acknowledges it, and records its place in the gate.
fn resend_later(k: KafkaProducer, gate: RedisQueue, event: CouponIssueEvent) {
    tokio::spawn(async move {
        for _ in 0..RESEND_TRIES {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Ok(enqueued) = within_limit(k.enqueue(&event)).await {
                gate.place(
                    event.coupon_id,
                    event.user_id,
                    event.event_id,
                    Some(&enqueued),
                )
                .await
                .ok();
                return;
            }
        }
        tracing::warn!(request_id = %event.event_id,
            "gave up sending again a request whose outcome is unknown; the user's next click takes its claim over");
    });
}

/// `enqueue`, returning within [`ENQUEUE_LIMIT`] whatever the broker does.
async fn within_limit<T>(
    enqueue: impl std::future::Future<Output = Result<T, QueueError>>,
) -> Result<T, QueueError> {
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
