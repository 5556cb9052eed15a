//! Everything the api and the worker share: the domain, configuration, the
//! database, the issue processor and the queue backends. Nothing here knows
//! about HTTP.

pub mod audit;
pub mod backoff;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod processor;
pub mod queue;
pub mod shutdown;
pub mod switch;
pub mod telemetry;
