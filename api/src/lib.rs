//! The HTTP api: accepts issue requests and enqueues them, answers result,
//! coupon and queue lookups, and lets an operator create coupons.

pub mod active_queue;
pub mod activity;
pub mod admin;
pub mod answers;
pub mod auth;
pub mod cache;
pub mod config;
pub mod dashboard;
pub mod door;
pub mod error;
pub mod extract;
pub mod held;
pub mod limits;
pub mod lookup;
pub mod openapi;
pub mod recent;
pub mod repeat;
pub mod routes;
pub mod sold_out;
pub mod startup;
pub mod state;
pub mod waiting;

pub use config::ApiConfig;
pub use startup::Application;
