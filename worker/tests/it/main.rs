//! End-to-end tests of the worker, one test binary: the real api in this
//! process, real `worker` processes, real MariaDB, Redis (single node and
//! cluster) and Kafka broker; the harness is the `testkit` crate.

mod cluster;
mod failover;
mod faults;
mod gate;
mod heartbeat;
mod outage;
mod queues;
mod race;
mod switch;
mod waiting;
