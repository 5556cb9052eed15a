//! Helpers for tests against real services: a fresh database per test and a
//! unique Redis key prefix. Read `DATABASE_URL` and `REDIS_URL`, defaulting
//! to the local services `scripts/` sets up.

use std::str::FromStr;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{ConnectOptions, Connection};

use crate::config::{DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL};
use crate::domain::CouponId;

/// The MySQL server tests use.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into())
}

/// The Redis server tests use.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.into())
}

/// The Kafka broker tests use.
pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| crate::config::DEFAULT_KAFKA_BROKERS.into())
}

/// A topic and consumer group no other test uses.
pub fn kafka_names() -> (String, String) {
    let id = uuid::Uuid::new_v4().simple();
    (format!("test-{id}"), format!("test-group-{id}"))
}

/// A database created for one test (`coupon_test_<random>`), migrated.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: MySqlPool,
}

impl TestDb {
    /// Creates and migrates a fresh database on the test server.
    pub async fn new() -> Self {
        let base = database_url();
        let options = MySqlConnectOptions::from_str(&base).expect("DATABASE_URL parses");
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
        let url = replace_database(&base, &name);
        let pool = MySqlPoolOptions::new()
            .max_connections(8)
            .connect_with(options.database(&name))
            .await
            .expect("connect to the test database");
        crate::db::migrate(&pool).await.expect("migrations apply");
        Self { name, url, pool }
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

/// `DATABASE_URL` with its database path replaced.
pub fn replace_database(url: &str, database: &str) -> String {
    let (head, tail) = match url.split_once('?') {
        Some((h, t)) => (h, Some(t)),
        None => (url, None),
    };
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let base = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    match tail {
        Some(t) => format!("{base}/{database}?{t}"),
        None => format!("{base}/{database}"),
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
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            replace_database("mysql://a:b@h:1/e_commerce_db", "x"),
            "mysql://a:b@h:1/x"
        );
        assert_eq!(replace_database("mysql://h", "x"), "mysql://h/x");
        assert_eq!(
            replace_database("mysql://h/db?ssl-mode=disabled", "x"),
            "mysql://h/x?ssl-mode=disabled"
        );
    }
}
