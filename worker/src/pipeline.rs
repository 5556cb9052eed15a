//! What both queue modes do with a batch: process it with retries and, when
//! it cannot be processed, isolate the events that fail so the rest still get
//! their results.

use common::domain::QueuedEvent;
use common::error::DbError;
use common::processor::{self, RetryPolicy};
use sqlx::MySqlPool;
use tokio_util::sync::CancellationToken;

/// Why a batch was not acknowledged; its events stay queued and are read
/// again (next poll in Redis mode, in place in Kafka mode).
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error(transparent)]
    Queue(#[from] common::error::QueueError),
    #[error(transparent)]
    Db(#[from] common::error::DbError),
}

/// The outcome of a batch whose queue position may now be acknowledged.
#[derive(Debug, Default)]
pub struct Handled {
    /// Results written now.
    pub processed: usize,
    /// Events recorded as `SYSTEM_ERROR`, with the reason; they belong in the
    /// dead-letter queue.
    pub failed: Vec<(QueuedEvent, String)>,
    /// The coupon had no stock left when the batch committed.
    pub sold_out: bool,
}

/// Processes `events` (one coupon, queue order). `Err` means nothing may be
/// acknowledged: the database is unreachable or shutdown cut the retries.
pub async fn handle_batch(
    pool: &MySqlPool,
    events: &[QueuedEvent],
    retry: RetryPolicy,
    cancel: &CancellationToken,
) -> Result<Handled, DbError> {
    if events.is_empty() {
        return Ok(Handled::default());
    }
    match processor::process_batch_with_retry(pool, events, retry, cancel).await {
        Ok(outcome) => Ok(Handled {
            processed: outcome.results.len(),
            failed: Vec::new(),
            sold_out: outcome.sold_out,
        }),
        Err(e) if cancel.is_cancelled() => Err(e),
        Err(e) if events.len() > 1 && !e.is_transient() => {
            // One bad event must not sink its neighbours: go one by one, in order.
            tracing::warn!(error = ?e, events = events.len(), "batch refused; isolating the failing events");
            let mut handled = Handled::default();
            for event in events {
                let one = std::slice::from_ref(event);
                match processor::process_batch_with_retry(pool, one, retry, cancel).await {
                    Ok(o) => {
                        handled.processed += o.results.len();
                        handled.sold_out = o.sold_out;
                    }
                    Err(e) if cancel.is_cancelled() => return Err(e),
                    Err(e) => {
                        fail(pool, one, &e).await?;
                        handled.failed.push((event.clone(), e.to_string()));
                    }
                }
            }
            Ok(handled)
        }
        Err(e) => {
            fail(pool, events, &e).await?;
            Ok(Handled {
                processed: 0,
                sold_out: false,
                failed: events
                    .iter()
                    .map(|ev| (ev.clone(), e.to_string()))
                    .collect(),
            })
        }
    }
}

/// Records `SYSTEM_ERROR`; if even that fails the database is gone and the
/// caller must not acknowledge.
async fn fail(pool: &MySqlPool, events: &[QueuedEvent], e: &DbError) -> Result<(), DbError> {
    tracing::error!(error = ?e, events = events.len(), "giving up on events: SYSTEM_ERROR and dead-letter queue");
    processor::record_system_errors(pool, events, &format!("processing failed: {e}")).await
}
