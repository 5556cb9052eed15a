//! Redis mode: wake every poll interval, or at once when an enqueue finds
//! an empty queue (a pub/sub wake-up), then drain every pending coupon in
//! batches before sleeping again. One worker per coupon at a time (a lease);
//! see `common::queue::redis` for why ordering does not depend on the lease.

use std::sync::Arc;
use std::time::Duration;

use common::domain::{queue_position_key, CouponId, QueuedEvent};
use common::error::QueueError;
use common::queue::{Batch, RedisQueue, Reject};
use futures::StreamExt;
use rand::seq::SliceRandom;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use crate::barrier::{self};
use crate::pipeline::{DeadLetters, DrainError, Drained, Pipeline};

/// Shortest time between the starts of two polls that a wake-up triggers.
const MIN_POLL_GAP: Duration = Duration::from_millis(20);

/// The Redis poller of one worker process.
pub struct RedisPoller {
    pub queue: RedisQueue,
    pub pipeline: Pipeline,
    pub batch_size: usize,
    pub poll_interval: Duration,
    pub lease_ttl: Duration,
    pub concurrency: usize,
    /// This worker's name in coupon leases.
    pub holder: String,
    /// Fired by the wake-up listener when work arrives in an empty queue.
    pub wake: Arc<Notify>,
}

/// How long a drain waits in place for a held coupon before it gives the
/// coupon back to the next poll.
const HOLD_IN_PLACE: Duration = Duration::from_secs(1);

impl RedisPoller {
    /// Polls until `cancel` fires; the batch in hand is finished and trimmed
    /// first.
    pub async fn run(&self, cancel: CancellationToken) {
        info!(holder = %self.holder, interval = ?self.poll_interval, batch = self.batch_size, "redis poller started");
        loop {
            let started = tokio::time::Instant::now();
            match self.poll_once(&cancel).await {
                Ok(0) => {}
                Ok(n) => info!(processed = n, "drained pending coupons"),
                Err(e) => warn!(error = ?e, "poll failed; will retry"),
            }
            // A wake-up starts the next poll at once, but never sooner than
            // MIN_POLL_GAP after the last one began: when every enqueue finds
            // an empty queue (light traffic), a full poll per message would
            // otherwise scan the pending record (or, on a cluster, every
            // master's keyspace) in a tight loop.
            let woken = async {
                self.wake.notified().await;
                tokio::time::sleep_until(started + MIN_POLL_GAP).await;
            };
            tokio::select! {
                _ = tokio::time::sleep(self.poll_interval) => {}
                _ = woken => {}
                _ = cancel.cancelled() => break,
            }
        }
        info!("redis poller stopped");
    }

    /// One poll: drains every pending coupon this worker can lease. Returns
    /// how many results it wrote.
    pub async fn poll_once(&self, cancel: &CancellationToken) -> Result<usize, DrainError> {
        let mut coupons = self.queue.pending_coupons().await?;
        // Workers start on different coupons instead of all racing for the first.
        coupons.shuffle(&mut rand::thread_rng());
        let results: Vec<Result<usize, DrainError>> = futures::stream::iter(coupons)
            .map(|c| self.drain_coupon(c, cancel))
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut total = 0;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(n) => total += n,
                Err(e) => {
                    warn!(error = ?e, "drain stopped early");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if total == 0 => Err(e),
            _ => Ok(total),
        }
    }

    async fn drain_coupon(
        &self,
        coupon: CouponId,
        cancel: &CancellationToken,
    ) -> Result<usize, DrainError> {
        if cancel.is_cancelled()
            || !self
                .queue
                .try_lease(coupon, &self.holder, self.lease_ttl)
                .await?
        {
            return Ok(0);
        }
        // Renewed in the background, so a batch stuck in database retries
        // keeps its coupon; `lost` fires if the lease is gone anyway.
        let lost = CancellationToken::new();
        let keeper = tokio::spawn(keep_lease(
            self.queue.clone(),
            coupon,
            self.holder.clone(),
            self.lease_ttl,
            lost.clone(),
        ));
        let result = self.drain_leased(coupon, cancel, &lost).await;
        keeper.abort();
        // Aborted while it sleeps or renews: nothing of it runs after this.
        let _ = keeper.await;
        if let Err(e) = self.queue.release_lease(coupon, &self.holder).await {
            warn!(error = ?e, %coupon, "could not release lease; it expires by itself");
        }
        result
    }

    #[instrument(skip_all, fields(coupon_id = coupon.get()))]
    async fn drain_leased(
        &self,
        coupon: CouponId,
        cancel: &CancellationToken,
        lost: &CancellationToken,
    ) -> Result<usize, DrainError> {
        let mut processed = 0;
        let mut held_since: Option<tokio::time::Instant> = None;
        // The next batch, read while the current one committed.
        let mut ahead: Option<Option<(Batch, String)>> = None;
        // The last committed batch, whose entries leave the stream while the
        // next one commits.
        let mut committed: Option<Committed> = None;
        let result = loop {
            if cancel.is_cancelled() {
                break Ok(());
            }
            if lost.is_cancelled() {
                warn!("lease lost; leaving the coupon to its new holder");
                break Ok(());
            }
            let next = match ahead.take() {
                Some(next) => next,
                None => match self.queue.next_batch(coupon, self.batch_size).await {
                    Ok(next) => next,
                    Err(e) => break Err(e.into()),
                },
            };
            let Some((mut batch, mut last_id)) = next else {
                // The stream may only look empty because the last batch is
                // still in it: remove it before asking.
                if let Some(c) = committed.take() {
                    self.remove(coupon, c).await?;
                    continue;
                }
                if self.queue.forget_if_empty(coupon).await? {
                    break Ok(());
                }
                continue;
            };
            let passable = self.pipeline.barrier.passable(&batch.events).await;
            if passable < batch.events.len() {
                match keep_before(&mut batch, passable) {
                    Some(last) => last_id = last,
                    None => {
                        if let Some(c) = committed.take() {
                            self.remove(coupon, c).await?;
                        }
                        // The head itself is held: wait here a little, then
                        // leave the coupon to a later poll.
                        let since = *held_since.get_or_insert_with(tokio::time::Instant::now);
                        if since.elapsed() >= HOLD_IN_PLACE {
                            break Ok(());
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(barrier::RECHECK) => {}
                            _ = cancel.cancelled() => break Ok(()),
                        }
                        continue;
                    }
                }
            }
            held_since = None;
            let dead_letters = StreamDeadLetters {
                queue: &self.queue,
                coupon,
            };
            // Three things at once: this batch commits, the last one leaves
            // the stream (its results are committed), the next one is read.
            let previous = committed.take();
            let (drained, removed, read) = tokio::join!(
                self.pipeline.drain(&dead_letters, &batch, cancel),
                async {
                    match previous {
                        Some(c) => self.remove(coupon, c).await,
                        None => Ok(()),
                    }
                },
                self.queue
                    .batch_after(coupon, Some(&last_id), self.batch_size)
            );
            removed?;
            let drained = drained?;
            // A failed read ahead is read again from the head.
            ahead = read
                .inspect_err(|e| tracing::debug!(error = %e, "reading the next batch ahead"))
                .ok();
            processed += drained.processed;
            committed = Some(Committed {
                last_id,
                events: batch.events.len(),
                drained,
            });
        };
        // Only now, with every result committed, do the entries leave the
        // stream (also when the lease was lost: these results are committed
        // whoever holds the coupon now).
        if let Some(c) = committed {
            self.remove(coupon, c).await?;
        }
        result.map(|()| processed)
    }

    /// Removes a committed batch's entries from the stream; their users'
    /// gate entries settle with them, and a sold-out coupon is marked so
    /// the api stops queueing.
    async fn remove(&self, coupon: CouponId, c: Committed) -> Result<(), DrainError> {
        self.queue
            .remove_through(coupon, &c.last_id, c.drained.sold_out, &c.drained.settled)
            .await?;
        metrics::counter!("coupon_issue_events_acknowledged_total", "queue" => "redis")
            .increment(c.events as u64);
        Ok(())
    }
}

/// A batch whose results are committed and whose entries are still in the
/// stream.
struct Committed {
    /// Its last entry.
    last_id: String,
    /// Its events (rejects left out).
    events: usize,
    drained: Drained,
}

/// Cuts `batch` to the entries before its event `keep` (events and rejects
/// alike, by stream position); returns the id of the last entry kept, or
/// `None` when nothing comes before it.
fn keep_before(batch: &mut Batch, keep: usize) -> Option<String> {
    let cut = queue_position_key(&batch.events[keep].position);
    batch.events.truncate(keep);
    batch
        .rejects
        .retain(|r| queue_position_key(&r.position) < cut);
    batch
        .events
        .iter()
        .map(|e| &e.position)
        .chain(batch.rejects.iter().map(|r| &r.position))
        .max_by_key(|p| queue_position_key(p))
        .cloned()
}

/// The dead-letter stream, for entries of one coupon's stream.
struct StreamDeadLetters<'a> {
    queue: &'a RedisQueue,
    coupon: CouponId,
}

impl DeadLetters for StreamDeadLetters<'_> {
    const QUEUE: &'static str = "redis";

    async fn reject(&self, reject: &Reject) -> Result<(), QueueError> {
        self.queue
            .dead_letter(
                self.coupon,
                &reject.position,
                &reject.payload,
                &reject.reason,
            )
            .await
    }

    async fn failed(&self, event: &QueuedEvent, reason: &str) -> Result<(), QueueError> {
        self.queue
            .dead_letter(
                self.coupon,
                &event.position,
                event.event.to_json().as_bytes(),
                reason,
            )
            .await
    }
}

/// Renews the lease every third of its lifetime until aborted; fires `lost`
/// when another worker holds it (it expired and was taken).
async fn keep_lease(
    queue: RedisQueue,
    coupon: CouponId,
    holder: String,
    ttl: Duration,
    lost: CancellationToken,
) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        match queue.renew_lease(coupon, &holder, ttl).await {
            Ok(true) => {}
            Ok(false) => {
                lost.cancel();
                return;
            }
            // Redis unreachable: the drain itself will fail; keep trying.
            Err(e) => warn!(error = ?e, %coupon, "lease renewal failed"),
        }
    }
}
