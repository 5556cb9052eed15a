//! The test harness every crate's tests share.
//!
//! - [`services`]: where MySQL, Redis and Kafka are (variables, else
//!   containers, else the local defaults), a fresh database per test
//!   ([`TestDb`]), unique Redis prefixes and Kafka names.
//! - [`app`]: the real api on a free port in the test's process
//!   ([`TestApp`]), real `worker` processes, firing requests, waiting for
//!   results and auditing the sale with `common::audit`.
//! - [`servers`] and [`cluster`]: brokers, Redis servers and Redis Clusters
//!   owned by one test, so it can kill and restart them.

pub mod app;
pub mod cluster;
mod containers;
mod docker_api;
pub mod servers;
mod service;
pub mod services;

pub use app::*;
pub use servers::{CuttableProxy, OwnedMysql, OwnedQueue};
pub use services::{
    common_config, database_url, kafka_brokers, kafka_names, key_prefix, parse_flags, redis_url,
    TestDb,
};
