//! Helpers for tests against real services: a fresh database per test and a
//! unique Redis key prefix and Kafka topic.
//!
//! Where the services are, per service, first found wins:
//! 1. `DATABASE_URL`, `REDIS_URL`, `KAFKA_BROKERS` (`scripts/test.sh` sets them);
//! 2. a container, when a Docker engine answers (see [`crate::containers`]);
//! 3. the local service on its default address, if it accepts connections
//!    (what `scripts/up.sh` starts).
//!
//! Otherwise the test fails at once, saying what is missing and how to get it.

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{ConnectOptions, Connection};

use common::config::CommonConfig;
use common::domain::CouponId;

use crate::containers;
use crate::service::Service;

/// The MySQL server tests use.
pub fn database_url() -> String {
    Service::Mysql.address()
}

/// The Redis server tests use.
pub fn redis_url() -> String {
    Service::Redis.address()
}

/// The Kafka broker tests use.
pub fn kafka_brokers() -> String {
    Service::Kafka.address()
}

impl Service {
    /// Resolved once per process.
    fn address(self) -> String {
        static FOUND: [OnceLock<String>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        FOUND[self as usize].get_or_init(|| self.find()).clone()
    }

    fn find(self) -> String {
        if let Ok(v) = std::env::var(self.variable()) {
            return v;
        }
        let docker = match containers::engine() {
            Ok(_) => return containers::url(self),
            Err(why) => format!("no Docker engine answers ({why})"),
        };
        let default = self.default_address();
        if accepts_connections(default) {
            return default.into();
        }
        panic!(
            "no {service} for the tests: {var} is unset, {docker}, and nothing accepts connections \
             at {default}.\n\
             Any one of these fixes it:\n\
             - run the tests with scripts/test.sh, which starts MySQL/MariaDB, Redis and the Kafka \
               broker locally and sets DATABASE_URL, REDIS_URL and KAFKA_BROKERS;\n\
             - set DATABASE_URL, REDIS_URL and KAFKA_BROKERS to services you run;\n\
             - install and start Docker (or set DOCKER_HOST): the tests then start containers \
               with testcontainers (scripts/test.sh --containers).",
            service = self.name(),
            var = self.variable(),
        )
    }
}

/// Whether the host:port inside a service address accepts a TCP connection.
fn accepts_connections(address: &str) -> bool {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host_port = rest.split(['/', '?', ',']).next().unwrap_or_default();
    use std::net::ToSocketAddrs;
    host_port.to_socket_addrs().is_ok_and(|mut addrs| {
        addrs.any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
    })
}

/// Parses `args` as a binary would, without reading the environment: a
/// test's configuration is what the test names, whatever the shell exports.
pub fn parse_flags<T: clap::Parser>(args: &[&str]) -> Result<T, clap::Error> {
    let command = T::command().mut_args(|arg| arg.env(None::<&'static str>));
    T::from_arg_matches(&command.try_get_matches_from(args)?)
}

/// The settings both binaries share, at their flags' defaults.
pub fn common_config() -> CommonConfig {
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        common: CommonConfig,
    }
    parse_flags::<Flags>(&["test"])
        .expect("defaults parse")
        .common
}

/// A topic and consumer group no other test uses.
pub fn kafka_names() -> (String, String) {
    let id = uuid::Uuid::new_v4().simple();
    (format!("test-{id}"), format!("test-group-{id}"))
}

/// A database created for one test (`coupon_test_<random>`), migrated.
/// Clones share it (two apis of one deployment).
#[derive(Clone)]
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: MySqlPool,
}

impl TestDb {
    /// Creates and migrates a fresh database on the test server.
    pub async fn new() -> Self {
        Self::on(&database_url()).await
    }

    /// Creates and migrates a fresh database on the server at `base`.
    pub async fn on(base: &str) -> Self {
        let options = MySqlConnectOptions::from_str(base).expect("the server url parses");
        let name = format!("coupon_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = options
            .connect()
            .await
            .expect("connect to the test MySQL server");
        sqlx::query(&format!("CREATE DATABASE `{name}`"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let options = options.database(&name);
        let url = options.to_url_lossy().to_string();
        let pool = MySqlPoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .expect("connect to the test database");
        common::db::migrate(&pool).await.expect("migrations apply");
        Self { name, url, pool }
    }

    /// The row of an api that followed `epoch` and then died: it stays live
    /// (`common::switch::INSTANCE_STALE`) for a few seconds more.
    pub async fn api_that_just_died(&self, epoch: u64) {
        sqlx::query(
            "INSERT INTO api_instance (instance_id, followed_epoch, last_seen_at) \
             VALUES ('api-killed-9', ?, NOW(6))",
        )
        .bind(epoch as i64)
        .execute(&self.pool)
        .await
        .expect("insert the api's row");
    }

    /// Inserts a coupon with `stock` units and returns its id.
    pub async fn coupon(&self, stock: i32) -> CouponId {
        let done = sqlx::query(
            "INSERT INTO coupon (name, total_quantity, stock) VALUES ('test coupon', ?, ?)",
        )
        .bind(stock)
        .bind(stock)
        .execute(&self.pool)
        .await
        .expect("insert coupon");
        CouponId::try_from(done.last_insert_id() as i64).unwrap()
    }
}

/// A Redis key prefix no other test uses.
pub fn key_prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_host_and_port_of_a_service_address() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        assert!(accepts_connections(&format!(
            "mysql://a:b@127.0.0.1:{port}/db?x=1"
        )));
        assert!(accepts_connections(&format!("127.0.0.1:{port}")));
        drop(free);
        assert!(!accepts_connections(&format!("redis://127.0.0.1:{port}")));
    }

    #[test]
    fn a_test_database_url_names_the_database_and_keeps_the_rest() {
        let base = MySqlConnectOptions::from_str("mysql://a:b%40c@h:1/e_commerce_db").unwrap();
        let url = base.database("x").to_url_lossy().to_string();
        let back = MySqlConnectOptions::from_str(&url).unwrap();
        assert_eq!(back.get_database(), Some("x"));
        assert_eq!(back.get_username(), "a");
        assert_eq!((back.get_host(), back.get_port()), ("h", 1));
        assert!(url.starts_with("mysql://a:b%40c@h:1/x"), "{url}");
    }
}
