//! Real `worker` processes against a test's services, and what a test does
//! to processes: read their metrics, stop them, kill them.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::domain::QueueType;
use tokio::process::{Child, Command};

use crate::app::TestApp;

/// The workspace's `worker` binary. nextest names it at run time for the
/// worker package's tests (`NEXTEST_BIN_EXE_worker`); otherwise it is where
/// cargo builds it, in the target folder above the test binary's `deps/`.
pub fn worker_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("NEXTEST_BIN_EXE_worker") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(format!("worker{}", std::env::consts::EXE_SUFFIX)))
        .expect("the test binary is in a target folder");
    assert!(
        bin.exists(),
        "no worker binary at {}: build it first (cargo build -p worker)",
        bin.display()
    );
    bin
}

impl TestApp {
    /// Launches one `worker` process against this app's services.
    pub fn spawn_worker(&self) -> Child {
        self.worker_command()
            .spawn()
            .expect("worker process starts")
    }

    /// Launches a worker whose health and metrics endpoint is on `port`.
    pub fn spawn_worker_on(&self, port: u16) -> Child {
        self.spawn_worker_with(&[("WORKER_PORT", &port.to_string())])
    }

    /// Launches a worker with these variables on top of the test's.
    pub fn spawn_worker_with(&self, vars: &[(&str, &str)]) -> Child {
        let mut cmd = self.worker_command();
        cmd.envs(vars.iter().copied());
        cmd.spawn().expect("worker process starts")
    }

    pub fn worker_command(&self) -> Command {
        self.worker_command_for(self.common.queue_type)
    }

    /// A `worker` of `queue`, against this app's services.
    pub fn worker_command_for(&self, queue: QueueType) -> Command {
        let mut cmd = Command::new(worker_bin());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("APP_QUEUE_TYPE", queue.as_str())
            .env("DATABASE_URL", &self.common.database_url)
            .env("REDIS_URL", &self.common.redis_url)
            .env("REDIS_KEY_PREFIX", &self.common.redis_key_prefix)
            .env("KAFKA_BROKERS", &self.common.kafka_brokers)
            .env("KAFKA_TOPIC", &self.common.kafka_topic)
            .env("KAFKA_GROUP_ID", &self.common.kafka_group_id)
            .env("KAFKA_PARTITIONS", self.common.kafka_partitions.to_string())
            .env("POLL_INTERVAL_MS", "100")
            .env("KAFKA_SESSION_TIMEOUT_MS", "6000")
            .env("LEASE_TTL_MS", "2000")
            .env("WORKER_HOST", "127.0.0.1")
            .env("WORKER_PORT", "0")
            .env(
                "RUST_LOG",
                std::env::var("WORKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(nodes) = &self.common.redis_cluster_nodes {
            cmd.env("REDIS_CLUSTER_NODES", nodes.to_string());
        }
        cmd
    }
}

/// The value of a metric on a worker's `/metrics`, summed over its labels.
pub async fn scrape(port: u16, metric: &str) -> Option<f64> {
    scrape_at(&format!("http://127.0.0.1:{port}"), metric).await
}

/// The value of a metric on `{base}/metrics` (a worker's or an api's),
/// summed over its labels.
pub async fn scrape_at(base: &str, metric: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(metric))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Sends SIGTERM and waits for the process to exit; returns its status.
pub async fn terminate(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let pid = child.id().expect("process is running");
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {pid}");
    tokio::time::timeout(within, child.wait())
        .await
        .unwrap_or_else(|_| panic!("process {pid} did not exit within {within:?} of SIGTERM"))
        .unwrap()
}

/// SIGKILL: the process dies mid-whatever, without cleanup.
pub async fn kill9(child: &mut Child) {
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}
