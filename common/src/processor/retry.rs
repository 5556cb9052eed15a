//! Retries of transient database failures, with exponential backoff.

use std::time::Duration;

use sqlx::MySqlPool;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{process_batch, BatchOutcome};
use crate::backoff::Backoff;
use crate::domain::QueuedEvent;
use crate::error::DbError;

/// How hard to retry transient database failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(3),
        }
    }
}

/// [`process_batch`] with retries and exponential backoff for transient
/// errors. Gives up early (returning the last error) when `cancel` fires, so
/// that nothing uncommitted is acknowledged at shutdown.
pub async fn process_batch_with_retry(
    pool: &MySqlPool,
    events: &[QueuedEvent],
    policy: RetryPolicy,
    cancel: &CancellationToken,
) -> Result<BatchOutcome, DbError> {
    let mut backoff = Backoff::new(policy.initial_backoff, policy.max_backoff).with_jitter();
    let mut attempt = 1;
    loop {
        match process_batch(pool, events).await {
            Ok(outcome) => return Ok(outcome),
            Err(e) if e.is_transient() && attempt < policy.max_attempts => {
                warn!(error = ?e, attempt, backoff = ?backoff.current(), "batch failed, retrying");
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
