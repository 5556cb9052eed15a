//! Retries of transient database failures, with exponential backoff, for as
//! long as the failure lasts: an outage delays results, it never turns a
//! request into a `SYSTEM_ERROR`.

use std::time::{Duration, Instant};

use sqlx::MySqlPool;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{process_batch_with, BatchOutcome, Holders};
use crate::backoff::Backoff;
use crate::domain::QueuedEvent;
use crate::error::DbError;

/// How to wait between attempts after a transient database failure.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(3),
        }
    }
}

/// How often a failure that lasts is logged again.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// [`process_batch_with`] retried with exponential backoff while its errors are
/// transient (the database is down, restarting or overloaded), however long
/// that lasts. Returns a non-transient error at once, and the last error when
/// `cancel` fires, so that nothing uncommitted is acknowledged at shutdown.
pub async fn process_batch_with_retry(
    pool: &MySqlPool,
    holders: Option<&Holders>,
    events: &[QueuedEvent],
    policy: RetryPolicy,
    cancel: &CancellationToken,
) -> Result<BatchOutcome, DbError> {
    let mut backoff = Backoff::new(policy.initial_backoff, policy.max_backoff).with_jitter();
    let started = Instant::now();
    let mut warned: Option<Instant> = None;
    let mut attempt: u64 = 1;
    loop {
        match process_batch_with(pool, holders, events).await {
            Ok(outcome) => {
                if attempt > 1 {
                    tracing::info!(attempts = attempt, waited = ?started.elapsed(), "batch committed after the database came back");
                }
                return Ok(outcome);
            }
            Err(e) if e.is_transient() => {
                if warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    warned = Some(Instant::now());
                    warn!(error = ?e, attempt, waited = ?started.elapsed(), backoff = ?backoff.current(),
                        "batch failed on a transient database error; retrying until it passes");
                }
                metrics::counter!("coupon_issue_batch_retries_total").increment(1);
                if !backoff.wait(cancel).await {
                    return Err(e);
                }
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
