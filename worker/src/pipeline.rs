//! What both queue modes do with a batch: dead-letter its rejects, process
//! its events (retrying while the database is down, however long; isolating
//! the events that fail on their own so the rest still get their results),
//! dead-letter the failures and forward the late events to the active queue
//! (invariant S6 of `common::switch`). Acknowledging is the caller's, once
//! this returns `Ok`.

use common::domain::{IssueStatus, QueuedEvent};
use common::error::{DbError, QueueError};
use common::processor::{self, Holders, RetryPolicy};
use common::queue::{Batch, Reject, Settled};
use sqlx::MySqlPool;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::barrier::Barrier;

/// Why a batch was not acknowledged; its events stay queued and are read
/// again (next poll in Redis mode, in place in Kafka mode).
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error(transparent)]
    Queue(#[from] common::error::QueueError),
    #[error(transparent)]
    Db(#[from] common::error::DbError),
    /// Shutdown came while a queue switch held some of the events.
    #[error("stopped while the switch barrier held events")]
    Held,
    /// Late events could not be forwarded to the active queue.
    #[error(transparent)]
    Switch(#[from] common::switch::SwitchError),
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
    /// Events of an earlier epoch than the coupon has processed: they are
    /// forwarded to the active queue, not decided here.
    pub late: Vec<QueuedEvent>,
    /// Every event that has its result now (failed ones included), for the
    /// repeat gate.
    pub settled: Vec<Settled>,
}

/// Where a queue mode's dead letters go.
// Only used through generics within the worker, so no `Send` bound to spell out.
#[allow(async_fn_in_trait)]
pub trait DeadLetters {
    /// The `queue` label of the dead-letter metric.
    const QUEUE: &'static str;

    /// An entry that is not an event of its queue's coupon.
    async fn reject(&self, reject: &Reject) -> Result<(), QueueError>;

    /// An event recorded as `SYSTEM_ERROR`.
    async fn failed(&self, event: &QueuedEvent, reason: &str) -> Result<(), QueueError>;
}

/// What a drained batch did.
#[derive(Debug, Clone, Default)]
pub struct Drained {
    /// Results written now.
    pub processed: usize,
    /// The coupon had no stock left when the batch committed.
    pub sold_out: bool,
    /// The requests the repeat gate settles once the batch is acknowledged
    /// (see `common::queue::gate`).
    pub settled: Vec<Settled>,
}

/// What both queue modes hand their batches to: the database, how to wait
/// out its outages, and the switch barrier (which also forwards late events).
pub struct Pipeline {
    pub pool: MySqlPool,
    pub retry: RetryPolicy,
    /// Holds events of a coupon until a queue switch allows them.
    pub barrier: Arc<Barrier>,
    /// This worker's memory of its coupons' holders.
    pub holders: Arc<Holders>,
}

impl Pipeline {
    /// Dead-letters the batch's rejects, processes its events, dead-letters
    /// those that failed and forwards the late ones. `Err` means the batch
    /// must not be acknowledged (it is read again).
    pub async fn drain<D: DeadLetters>(
        &self,
        dead_letters: &D,
        batch: &Batch,
        cancel: &CancellationToken,
    ) -> Result<Drained, DrainError> {
        drain_batch(dead_letters, self, batch, cancel).await
    }
}

async fn drain_batch<D: DeadLetters>(
    dead_letters: &D,
    pipeline: &Pipeline,
    batch: &Batch,
    cancel: &CancellationToken,
) -> Result<Drained, DrainError> {
    let Pipeline {
        pool,
        retry,
        barrier,
        holders,
    } = pipeline;
    for reject in &batch.rejects {
        tracing::warn!(position = %reject.position, reason = %reject.reason, "dead-lettering undecodable entry");
        metrics::counter!("coupon_issue_dead_letters_total", "queue" => D::QUEUE).increment(1);
        dead_letters.reject(reject).await?;
    }
    let handled = handle_batch(pool, Some(holders.as_ref()), &batch.events, *retry, cancel).await?;
    for (event, reason) in &handled.failed {
        dead_letters.failed(event, reason).await?;
    }
    barrier.forward(&handled.late).await?;
    Ok(Drained {
        processed: handled.processed,
        sold_out: handled.sold_out,
        settled: handled.settled,
    })
}

/// Processes `events` (one coupon, queue order). A transient database error
/// is retried for as long as it lasts; `Err` means shutdown cut the retries
/// and nothing may be acknowledged.
pub async fn handle_batch(
    pool: &MySqlPool,
    holders: Option<&Holders>,
    events: &[QueuedEvent],
    retry: RetryPolicy,
    cancel: &CancellationToken,
) -> Result<Handled, DbError> {
    if events.is_empty() {
        return Ok(Handled::default());
    }
    match processor::process_batch_with_retry(pool, holders, events, retry, cancel).await {
        Ok(outcome) => Ok(Handled {
            processed: outcome.results.len(),
            failed: Vec::new(),
            sold_out: outcome.sold_out,
            late: outcome.late,
            settled: outcome.settled,
        }),
        // Only shutdown ends the retries of a transient error: keep it queued.
        Err(e) if cancel.is_cancelled() || e.is_transient() => Err(e),
        Err(e) if events.len() > 1 => {
            // One bad event must not sink its neighbours: go one by one, in order.
            tracing::warn!(error = ?e, events = events.len(), "batch refused; isolating the failing events");
            let mut handled = Handled::default();
            for event in events {
                let one = std::slice::from_ref(event);
                match processor::process_batch_with_retry(pool, holders, one, retry, cancel).await {
                    Ok(o) => {
                        handled.processed += o.results.len();
                        handled.sold_out = o.sold_out;
                        handled.late.extend(o.late);
                        handled.settled.extend(o.settled);
                    }
                    Err(e) if cancel.is_cancelled() || e.is_transient() => return Err(e),
                    Err(e) => {
                        fail(pool, one, &e).await?;
                        handled.settled.push(failed(event));
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
                late: Vec::new(),
                settled: events.iter().map(failed).collect(),
                failed: events
                    .iter()
                    .map(|ev| (ev.clone(), e.to_string()))
                    .collect(),
            })
        }
    }
}

/// The gate's view of an event recorded as `SYSTEM_ERROR`.
fn failed(event: &QueuedEvent) -> Settled {
    Settled::new(
        event.event.event_id,
        event.event.user_id,
        IssueStatus::SystemError,
    )
}

/// Records `SYSTEM_ERROR` for events that failed on their own (a
/// non-transient error); if even that fails the database is gone and the
/// caller must not acknowledge.
async fn fail(pool: &MySqlPool, events: &[QueuedEvent], e: &DbError) -> Result<(), DbError> {
    tracing::error!(error = ?e, events = events.len(), "giving up on events: SYSTEM_ERROR and dead-letter queue");
    processor::record_system_errors(pool, events, &format!("processing failed: {e}")).await
}
