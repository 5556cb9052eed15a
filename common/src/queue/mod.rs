//! The queue interface: one producer type for the api and the consumer side
//! of each backend for the worker, chosen by
//! [`QueueType`](crate::domain::QueueType). Each backend takes its own
//! settings ([`RedisSettings`], [`KafkaSettings`]); `config` builds them.

pub mod batch;
pub mod gate;
pub mod kafka;
mod lane;
mod producer;
pub mod redis;

pub use self::batch::{Batch, Reject};
pub use self::gate::{Admitted, GateEntry, GateState, Place, Settled};
pub use self::kafka::{KafkaProducer, KafkaSettings, PartitionProgress};
pub use self::lane::{Enqueued, Lane, QueueSize};
pub use self::producer::{
    Producer, QueueSettings, Queues, CLAIM_STALE, ENQUEUE_LIMIT, ENQUEUE_TIMEOUT,
};
pub use self::redis::{RedisQueue, RedisSettings};
