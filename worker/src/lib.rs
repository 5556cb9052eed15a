//! The queue worker: takes accepted issue events off the configured queue and
//! feeds them, one coupon's batch at a time, to the shared processor. Any
//! number of workers may run at once, on any host.

pub mod barrier;
pub mod config;
pub mod health;
pub mod heartbeat;
pub mod kafka_consumer;
pub mod pipeline;
pub mod redis_poller;
pub mod replay;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::domain::QueueType;
use common::processor::{Holders, RetryPolicy};
use common::queue::{Producer, Queues, RedisQueue};
use common::{db, telemetry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::WorkerConfig;

use crate::barrier::Barrier;
use crate::kafka_consumer::KafkaWorker;
use crate::pipeline::Pipeline;
use crate::redis_poller::RedisPoller;

/// A worker with its health endpoint bound, not yet running.
pub struct Worker {
    config: WorkerConfig,
    listener: TcpListener,
    pool: sqlx::MySqlPool,
    /// The configured queue; the poller's in Redis mode, the health check's in both.
    queue: Producer,
}

impl Worker {
    /// Prepares the database pool and the queue, and binds the health
    /// endpoint. MySQL, a single Redis and Kafka may still be down (the
    /// worker waits for them while it runs); a Redis Cluster must answer.
    pub async fn build(config: WorkerConfig) -> anyhow::Result<Self> {
        let pool = db::pool(&config.common.database_url, 8).context("DATABASE_URL")?;
        let queue = match config.common.queue_type {
            QueueType::Redis => Producer::Redis(
                RedisQueue::connect(&config.common.redis_settings(), Duration::from_secs(5))
                    .await?,
            ),
            QueueType::Kafka => Producer::new(&config.common.queue_settings(), QueueType::Kafka)
                .await
                .context("queue settings")?,
        };
        let addr = format!("{}:{}", config.host, config.port);
        let listener = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding WORKER_HOST:WORKER_PORT {addr}"))?;
        Ok(Self {
            config,
            listener,
            pool,
            queue,
        })
    }

    /// Address of the health endpoint.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Consumes until `cancel` fires, then finishes the batch in hand,
    /// acknowledges it and returns.
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let common = &self.config.common;
        let health = ops::OpsState {
            pool: self.pool.clone(),
            queue: self.queue.clone(),
            metrics: telemetry::metrics_handle(),
        };
        let server = tokio::spawn(health::serve(self.listener, health, cancel.clone()));
        let worker_id = format!(
            "worker-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let heartbeat =
            heartbeat::Heartbeat::for_this_process(worker_id.clone(), common.queue_type)
                .spawn(self.pool.clone(), cancel.clone());
        let queues = Queues::with(common.queue_settings(), self.queue.clone());
        let barrier = Arc::new(Barrier::new(self.pool.clone(), queues.clone()));
        let holders = Arc::new(Holders::default());
        let pipeline = || Pipeline {
            pool: self.pool.clone(),
            retry: RetryPolicy::default(),
            barrier: barrier.clone(),
            holders: holders.clone(),
        };
        let result = match &self.queue {
            Producer::Redis(queue) => {
                let holder = worker_id;
                let wake = Arc::new(tokio::sync::Notify::new());
                let listener = queue.spawn_wake_listener(wake.clone(), cancel.clone());
                let poller = RedisPoller {
                    queue: queue.clone(),
                    pipeline: pipeline(),
                    batch_size: self.config.batch_size as usize,
                    poll_interval: self.config.poll_interval(),
                    lease_ttl: self.config.lease_ttl(),
                    concurrency: self.config.coupon_concurrency as usize,
                    holder,
                    wake,
                };
                poller.run(cancel.clone()).await;
                listener.await.ok();
                Ok(())
            }
            Producer::Kafka(_) => {
                // The repeat gate lives in Redis in Kafka mode too.
                let gate = match queues.redis().await {
                    Ok(redis) => Some(redis.clone()),
                    Err(e) => {
                        tracing::warn!(error = %e, "no Redis for the repeat gate: results are written, gate entries settle when users click again");
                        None
                    }
                };
                let consumer = KafkaWorker {
                    gate,
                    settings: common.kafka_settings(),
                    pipeline: pipeline(),
                    batch_size: self.config.batch_size as usize,
                    session_timeout: Duration::from_millis(self.config.kafka_session_timeout_ms),
                    max_poll_interval: Duration::from_millis(
                        self.config.kafka_max_poll_interval_ms,
                    ),
                    debug: self.config.kafka_debug.clone(),
                };
                consumer.run(cancel.clone()).await
            }
        };
        cancel.cancel();
        server.await.ok();
        heartbeat.await.ok();
        result
    }
}
