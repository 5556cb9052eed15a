//! The worker's heartbeat: a row in `worker_heartbeat`, refreshed every few
//! seconds, so the api's dashboard can list the workers that are alive. A
//! worker that stops cleanly deletes its row; a dead one simply stops being
//! refreshed. Rows unseen for an hour are removed by whichever worker beats.

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::domain::QueueType;
use sqlx::MySqlPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the row is refreshed. The dashboard counts a worker alive while
/// its row is younger than a few of these.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);

/// Longest wait for the row's removal at shutdown (the row then simply ages out).
const LEAVE_TIMEOUT: Duration = Duration::from_secs(1);

/// Rows older than this are deleted (workers that died long ago).
const FORGET_AFTER: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Who this worker is, as the dashboard shows it.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub worker_id: String,
    pub queue_type: QueueType,
    pub host: String,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
}

impl Heartbeat {
    /// This process, started now.
    pub fn for_this_process(worker_id: String, queue_type: QueueType) -> Self {
        Self {
            worker_id,
            queue_type,
            host: hostname(),
            pid: std::process::id(),
            started_at: Utc::now(),
        }
    }

    /// Writes the row now and then every [`HEARTBEAT_INTERVAL`] until
    /// `cancel` fires; then deletes it. A database outage only logs: the
    /// worker's real work does not depend on its heartbeat.
    pub fn spawn(self, pool: MySqlPool, cancel: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                // A beat against a database that is down waits for the
                // pool; stopping the worker never waits for it.
                let beat = tokio::select! {
                    beat = self.beat(&pool) => beat,
                    _ = cancel.cancelled() => break,
                };
                match beat {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "worker heartbeat failed");
                    }
                    Err(_) => {}
                }
                tokio::select! {
                    _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
                    _ = cancel.cancelled() => break,
                }
            }
            let gone = sqlx::query("DELETE FROM worker_heartbeat WHERE worker_id = ?")
                .bind(&self.worker_id)
                .execute(&pool);
            match tokio::time::timeout(LEAVE_TIMEOUT, gone).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "removing the heartbeat row failed"),
                Err(_) => tracing::debug!("removing the heartbeat row timed out"),
            }
        })
    }

    /// One beat: upsert this worker's row, forget long-dead workers.
    pub async fn beat(&self, pool: &MySqlPool) -> Result<(), sqlx::Error> {
        let now = Utc::now().naive_utc();
        sqlx::query(
            "INSERT INTO worker_heartbeat \
             (worker_id, queue_type, host, pid, started_at, last_seen_at) \
             VALUES (?, ?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE last_seen_at = ?",
        )
        .bind(&self.worker_id)
        .bind(queue_name(self.queue_type))
        .bind(&self.host)
        .bind(self.pid)
        .bind(self.started_at.naive_utc())
        .bind(now)
        .bind(now)
        .execute(pool)
        .await?;
        sqlx::query("DELETE FROM worker_heartbeat WHERE last_seen_at < ?")
            .bind(now - FORGET_AFTER)
            .execute(pool)
            .await?;
        Ok(())
    }
}

fn queue_name(queue: QueueType) -> &'static str {
    match queue {
        QueueType::Redis => "redis",
        QueueType::Kafka => "kafka",
    }
}

/// The kernel's host name (Linux), else `HOSTNAME`, else `unknown`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().chars().take(255).collect::<String>())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
