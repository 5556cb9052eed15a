//! Configuration of the worker binary.

use std::time::Duration;

use clap::Parser;
use common::config::CommonConfig;

/// Settings of a worker, from flags or the environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "worker", version, about = "Coupon issuance queue worker")]
pub struct WorkerConfig {
    #[command(flatten)]
    pub common: CommonConfig,

    /// Redis mode: pause between polls, in milliseconds.
    #[arg(long, env = "POLL_INTERVAL_MS", value_name = "POLL_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub poll_interval_ms: u64,

    /// Most events of one coupon decided in one transaction.
    #[arg(long, env = "BATCH_SIZE", value_name = "BATCH_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub batch_size: u32,

    /// Address of the health and metrics endpoint.
    #[arg(
        long,
        env = "WORKER_HOST",
        value_name = "WORKER_HOST",
        default_value = "0.0.0.0"
    )]
    pub host: String,

    /// Port of the health and metrics endpoint (0 picks a free one).
    #[arg(
        long,
        env = "WORKER_PORT",
        value_name = "WORKER_PORT",
        default_value_t = 8081
    )]
    pub port: u16,

    /// Redis mode: how long a coupon's lease lasts without renewal, in milliseconds.
    #[arg(long, env = "LEASE_TTL_MS", value_name = "LEASE_TTL_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1000..))]
    pub lease_ttl_ms: u64,

    /// Redis mode: coupons drained at the same time by this worker.
    #[arg(long, env = "COUPON_CONCURRENCY", value_name = "COUPON_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub coupon_concurrency: u32,

    /// Kafka mode: consumer-group session timeout, in milliseconds. Shorter
    /// means a dead worker's partitions move sooner.
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", value_name = "KAFKA_SESSION_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1000..=300_000))]
    pub kafka_session_timeout_ms: u64,

    /// Kafka mode: longest pause between polls before the member leaves the
    /// group, in milliseconds; also the rebalance timeout, i.e. how long a
    /// rebalance waits for a member that died.
    #[arg(long, env = "KAFKA_MAX_POLL_INTERVAL_MS", value_name = "KAFKA_MAX_POLL_INTERVAL_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1000..=3_600_000))]
    pub kafka_max_poll_interval_ms: u64,

    /// Kafka mode: librdkafka debug contexts to log (e.g. `cgrp`), with
    /// `RUST_LOG=librdkafka=debug`.
    #[arg(long, env = "KAFKA_DEBUG", value_name = "KAFKA_DEBUG")]
    pub kafka_debug: Option<String>,

    /// Put every dead letter that is a valid event back on its coupon's
    /// queue, print what was done, and exit.
    #[arg(long)]
    pub replay_dead_letters: bool,
}

impl WorkerConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_numbers_name_the_variable() {
        for (flag, var) in [
            ("--batch-size", "BATCH_SIZE"),
            ("--poll-interval-ms", "POLL_INTERVAL_MS"),
        ] {
            let err = WorkerConfig::try_parse_from(["worker", flag, "0"])
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(var), "{err}");
        }
    }
}
