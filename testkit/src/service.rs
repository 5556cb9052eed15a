//! The services the tests need, named once: what each is called, which
//! variable points at it, its local default and its container image.

use common::config::{DEFAULT_DATABASE_URL, DEFAULT_KAFKA_BROKERS, DEFAULT_REDIS_URL};

/// A service the tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Mysql,
    Redis,
    Kafka,
}

impl Service {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Mysql => "mysql",
            Self::Redis => "redis",
            Self::Kafka => "kafka",
        }
    }

    pub(crate) fn variable(self) -> &'static str {
        match self {
            Self::Mysql => "DATABASE_URL",
            Self::Redis => "REDIS_URL",
            Self::Kafka => "KAFKA_BROKERS",
        }
    }

    /// The local default, as `scripts/up.sh` starts it.
    pub(crate) fn default_address(self) -> &'static str {
        match self {
            Self::Mysql => DEFAULT_DATABASE_URL,
            Self::Redis => DEFAULT_REDIS_URL,
            Self::Kafka => DEFAULT_KAFKA_BROKERS,
        }
    }

    pub(crate) fn image_var(self) -> &'static str {
        match self {
            Self::Mysql => "MYSQL_IMAGE",
            Self::Redis => "REDIS_IMAGE",
            Self::Kafka => "KAFKA_IMAGE",
        }
    }

    /// The container image for this service: `MYSQL_IMAGE`, `REDIS_IMAGE`,
    /// `KAFKA_IMAGE`, defaulting to the official images.
    pub(crate) fn image(self) -> String {
        let official = match self {
            Self::Mysql => "mysql:8.0",
            Self::Redis => "redis:7",
            Self::Kafka => "apache/kafka:3.8.0",
        };
        std::env::var(self.image_var()).unwrap_or_else(|_| official.into())
    }
}
