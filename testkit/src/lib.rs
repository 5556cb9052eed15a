//! The test harness every crate's tests share; everything a test uses is
//! re-exported here, so tests write `testkit::spawn_app`, `testkit::wait_until`.
//!
//! - [`services`]: where MySQL, Redis and Kafka are (variables, else
//!   containers, else the local defaults), a fresh database per test
//!   ([`TestDb`]), unique Redis prefixes and Kafka names.
//! - `app`: the real api on a free port in the test's process
//!   ([`TestApp`]) and its configuration, on the [`Backend`] a test names.
//! - `requests` and `fire`: one call to the api, and volleys of issue
//!   requests with what the api answered ([`Accepted`], [`Refusals`]);
//!   `events`: a lookup's event stream, event by event ([`EventStream`]).
//! - `workers`: real `worker` processes, their metrics, SIGTERM and SIGKILL;
//!   `takeover`: killing the worker with work in hand ([`Killed`]) and
//!   seeing another take it over.
//! - `tokens`: user tokens for an api that requires them ([`TokenIssuer`]).
//! - `queues`: what the queues hold, read directly (queue sizes, entries
//!   ever enqueued, lease holders).
//! - `audit`: waiting for results ([`wait_until`]) and auditing the sale
//!   with `common::audit`.
//! - [`servers`] and [`cluster`]: brokers, Redis servers and Redis Clusters
//!   owned by one test, so it can kill and restart them, on ports from
//!   [`free_port`].

mod app;
mod audit;
pub mod cluster;
mod containers;
mod docker_api;
mod events;
mod fire;
mod ports;
mod queues;
mod requests;
pub mod servers;
mod service;
pub mod services;
mod takeover;
mod tokens;
mod workers;

pub use app::{
    api_config, spawn_api, spawn_app, spawn_app_on, spawn_app_with, spawn_app_with_cache_refresh,
    test_config, test_config_both, test_config_on, Backend, TestApp, ADMIN_TOKEN,
};
pub use audit::{answers, wait_until};
pub use events::{EventStream, SseEvent};
pub use fire::{users_with_repeats, Accepted, Refusals, Repeated};
pub use ports::free_port;
pub use queues::QueueReader;
pub use servers::{CuttableProxy, OwnedMysql, OwnedQueue};
pub use services::{
    common_config, database_url, kafka_brokers, kafka_names, key_prefix, parse_flags, redis_url,
    TestDb,
};
pub use takeover::{Killed, WorkerProcess};
pub use tokens::{unix_now, TokenIssuer};
pub use workers::{kill9, scrape, scrape_at, terminate, worker_bin};
