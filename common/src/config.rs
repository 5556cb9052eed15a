//! Typed configuration shared by both binaries, the top layer: every setting
//! is an environment variable and a CLI flag (clap names the variable when a
//! value is bad, so start-up fails with a message an operator can act on),
//! and [`CommonConfig`] converts them into each module's own settings
//! ([`RedisSettings`], [`KafkaSettings`]).

use std::str::FromStr;

use clap::Args;

use crate::domain::QueueType;
use crate::queue::redis::{check_key_prefix, check_url, ClusterNodes, RedisSettings};
use crate::queue::{KafkaSettings, QueueSettings};
use crate::telemetry::LogFormat;

/// Default MySQL url: the `application` user of `docker-compose.yml` and `scripts/`.
pub const DEFAULT_DATABASE_URL: &str =
    "mysql://application:application@127.0.0.1:3306/e_commerce_db";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const DEFAULT_KAFKA_BROKERS: &str = "127.0.0.1:9092";
pub const DEFAULT_KAFKA_TOPIC: &str = "coupon-issue-events";
pub const DEFAULT_KAFKA_GROUP_ID: &str = "coupon-issue-consumer-group";

/// Settings both the api and the worker need.
#[derive(Debug, Clone, Args)]
pub struct CommonConfig {
    /// Queue backend.
    #[arg(long = "queue", env = "APP_QUEUE_TYPE", value_name = "APP_QUEUE_TYPE", default_value_t = QueueType::Redis, value_parser = parse_queue_type)]
    pub queue_type: QueueType,

    /// MySQL / MariaDB connection url.
    #[arg(long, env = "DATABASE_URL", value_name = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, value_parser = parse_mysql_url)]
    pub database_url: String,

    /// Redis connection url.
    #[arg(long, env = "REDIS_URL", value_name = "REDIS_URL", default_value = DEFAULT_REDIS_URL, value_parser = parse_redis_url)]
    pub redis_url: String,

    /// Redis Cluster seed nodes, comma separated
    /// (`redis://host:port,redis://host:port,...`). When set, Redis mode runs
    /// on the cluster and `REDIS_URL` is not used.
    #[arg(long, env = "REDIS_CLUSTER_NODES", value_name = "REDIS_CLUSTER_NODES", value_parser = parse_cluster_nodes)]
    pub redis_cluster_nodes: Option<ClusterNodes>,

    /// Prefix for every Redis key, so that tenants and tests can share one Redis.
    #[arg(
        long,
        env = "REDIS_KEY_PREFIX",
        value_name = "REDIS_KEY_PREFIX",
        default_value = "",
        value_parser = parse_key_prefix
    )]
    pub redis_key_prefix: String,

    /// Kafka bootstrap servers, comma separated.
    #[arg(long, env = "KAFKA_BROKERS", value_name = "KAFKA_BROKERS", default_value = DEFAULT_KAFKA_BROKERS)]
    pub kafka_brokers: String,

    /// Topic of issue events; its dead letters go to `<topic>.dlq`.
    #[arg(long, env = "KAFKA_TOPIC", value_name = "KAFKA_TOPIC", default_value = DEFAULT_KAFKA_TOPIC)]
    pub kafka_topic: String,

    /// Consumer group of the workers.
    #[arg(long, env = "KAFKA_GROUP_ID", value_name = "KAFKA_GROUP_ID", default_value = DEFAULT_KAFKA_GROUP_ID)]
    pub kafka_group_id: String,

    /// Partitions of the topics when they are created at start-up.
    #[arg(long, env = "KAFKA_PARTITIONS", value_name = "KAFKA_PARTITIONS", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub kafka_partitions: i32,

    /// Replication factor of the topics when they are created at start-up
    /// (1 for a single broker; 3 for a production cluster).
    #[arg(long, env = "KAFKA_REPLICATION_FACTOR", value_name = "KAFKA_REPLICATION_FACTOR", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=16))]
    pub kafka_replication_factor: i32,

    /// When the active queue refuses a request or cannot be reached, switch
    /// the service to the other queue (as `PUT /api/admin/queue` does)
    /// instead of answering `503`.
    #[arg(long, env = "QUEUE_FALLBACK", value_name = "QUEUE_FALLBACK", default_value_t = false, action = clap::ArgAction::Set)]
    pub queue_fallback: bool,

    /// `text` for people, `json` for log collectors.
    #[arg(long, env = "LOG_FORMAT", value_name = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl CommonConfig {
    /// The Redis queue's settings.
    pub fn redis_settings(&self) -> RedisSettings {
        RedisSettings {
            url: self.redis_url.clone(),
            cluster_nodes: self.redis_cluster_nodes.clone(),
            key_prefix: self.redis_key_prefix.clone(),
        }
    }

    /// The Kafka queue's settings.
    pub fn kafka_settings(&self) -> KafkaSettings {
        KafkaSettings {
            brokers: self.kafka_brokers.clone(),
            topic: self.kafka_topic.clone(),
            group_id: self.kafka_group_id.clone(),
            partitions: self.kafka_partitions,
            replication_factor: self.kafka_replication_factor,
        }
    }

    /// Both queues' settings.
    pub fn queue_settings(&self) -> QueueSettings {
        QueueSettings {
            redis: self.redis_settings(),
            kafka: self.kafka_settings(),
        }
    }
}

fn parse_mysql_url(raw: &str) -> Result<String, String> {
    if !(raw.starts_with("mysql://") || raw.starts_with("mariadb://")) {
        return Err("must start with mysql:// or mariadb://".into());
    }
    sqlx::mysql::MySqlConnectOptions::from_str(raw)
        .map(|_| raw.to_string())
        .map_err(|e| format!("not a mysql:// url: {e}"))
}

fn parse_redis_url(raw: &str) -> Result<String, String> {
    check_url(raw).map(|()| raw.to_string())
}

fn parse_key_prefix(raw: &str) -> Result<String, String> {
    check_key_prefix(raw).map(|()| raw.to_string())
}

fn parse_queue_type(raw: &str) -> Result<QueueType, String> {
    raw.parse()
}

fn parse_cluster_nodes(raw: &str) -> Result<ClusterNodes, String> {
    raw.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonConfig,
    }

    #[test]
    fn defaults_match_the_local_services() {
        // The flags' defaults, whatever the shell exports.
        let command = Cli::command().mut_args(|arg| arg.env(None::<&'static str>));
        let matches = command.try_get_matches_from(["x"]).unwrap();
        let common = Cli::from_arg_matches(&matches).unwrap().common;
        assert_eq!(common.queue_type, QueueType::Redis);
        assert_eq!(common.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(common.kafka_partitions, 3);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = Cli::try_parse_from(["x", "--queue", "rabbit"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("APP_QUEUE_TYPE"), "{err}");
        let err = Cli::try_parse_from(["x", "--database-url", "postgres://x"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
        let err = Cli::try_parse_from(["x", "--kafka-partitions", "0"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("KAFKA_PARTITIONS"), "{err}");
        for bad in ["127.0.0.1:7001", "redis://127.0.0.1:7001,http://x", " , "] {
            let err = Cli::try_parse_from(["x", "--redis-cluster-nodes", bad])
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("REDIS_CLUSTER_NODES"), "{bad}: {err}");
        }
    }

    #[test]
    fn cluster_nodes_are_a_comma_separated_list() {
        let cli = Cli::try_parse_from([
            "x",
            "--redis-cluster-nodes",
            "redis://127.0.0.1:7001, redis://127.0.0.1:7002",
        ])
        .unwrap();
        let nodes = cli.common.redis_cluster_nodes.unwrap();
        assert_eq!(
            nodes.urls(),
            ["redis://127.0.0.1:7001", "redis://127.0.0.1:7002"]
        );
    }
}
