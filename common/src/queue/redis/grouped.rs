//! Hot script calls, grouped by coupon. Callers hand their items to one
//! task per kind; the items of a coupon that pile up while its call is in
//! flight go together in its next call, in the order they arrived. Under a
//! crowd a coupon's clicks then cost one round trip and one script run
//! between them, not one each; alone, a click waits for nothing but its own
//! call. Coupons do not wait for each other: a slow call (a Redis Cluster
//! node failing over) holds up its own coupon only. Three kinds go this
//! way: appends to a coupon's stream (Redis mode, [`super::ENQUEUE_MANY`]:
//! the api's clicks and a worker's replays), and Kafka mode's claims and
//! places in the repeat gate ([`super::CLAIM_MANY`], [`super::PLACE_MANY`]).
//!
//! Order is kept: the task takes items in arrival order, a coupon's go in
//! one call in that order, and its next call starts after this one
//! answered. A caller that stopped waiting (its client left, or its time ran
//! out) before its call was sent is left out: nothing is done for it.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::RedisQueue;
use crate::domain::{CouponId, UserId};
use crate::error::QueueError;
use crate::queue::gate::{Admitted, Claim};

/// Items taken off the channel at once, and in one call, at most.
const MAX_ITEMS: usize = 512;

/// A script call that takes several of one coupon's items at once.
pub(super) trait Call: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    type Answer: Send + 'static;
    /// Logged when a call fails that nobody waits for.
    const UNANSWERED_FAILURE: &'static str;

    /// One script call for `items`, in order: an error fails them all,
    /// otherwise each has its own answer, in the same order.
    fn call(
        queue: &RedisQueue,
        coupon: CouponId,
        items: &[&Self::Item],
    ) -> impl Future<Output = Result<Vec<Result<Self::Answer, QueueError>>, QueueError>> + Send;
}

type Reply<C> = oneshot::Sender<Result<<C as Call>::Answer, QueueError>>;

struct Waiting<C: Call> {
    coupon: CouponId,
    item: C::Item,
    /// `None` for an item sent off the caller's path.
    reply: Option<Reply<C>>,
}

/// The sending side; the task ends when it is dropped.
pub(super) struct Grouped<C: Call> {
    tx: mpsc::UnboundedSender<Waiting<C>>,
}

impl<C: Call> Grouped<C> {
    /// Starts the task that calls through `queue`.
    pub fn spawn(queue: RedisQueue) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run::<C>(queue, rx));
        Self { tx }
    }

    /// Sends one item and answers what its call answered for it.
    pub async fn call(&self, coupon: CouponId, item: C::Item) -> Result<C::Answer, QueueError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Waiting {
                coupon,
                item,
                reply: Some(reply),
            })
            .map_err(|_| QueueError::Unavailable("the Redis call task stopped".into()))?;
        // Taken and not answered: its call may have run.
        answer
            .await
            .map_err(|_| QueueError::Uncertain("the Redis call ended without an answer".into()))?
    }

    /// Sends one item without waiting for its answer; a failed call is
    /// logged.
    pub fn send(&self, coupon: CouponId, item: C::Item) {
        // The task lives as long as this sender.
        let _ = self.tx.send(Waiting {
            coupon,
            item,
            reply: None,
        });
    }
}

async fn run<C: Call>(queue: RedisQueue, mut rx: mpsc::UnboundedReceiver<Waiting<C>>) {
    let mut waiting: BTreeMap<CouponId, Vec<Waiting<C>>> = BTreeMap::new();
    let mut in_flight: HashSet<CouponId> = HashSet::new();
    let mut calls = FuturesUnordered::new();
    let mut buf = Vec::with_capacity(MAX_ITEMS);
    let mut open = true;
    loop {
        // A coupon whose call answered takes its next: one coupon's slow
        // call holds up no other coupon.
        let ready: Vec<CouponId> = waiting
            .keys()
            .filter(|c| !in_flight.contains(*c))
            .copied()
            .collect();
        for coupon in ready {
            let Some(items) = waiting.get_mut(&coupon) else {
                continue;
            };
            let take = items.len().min(MAX_ITEMS);
            let group: Vec<Waiting<C>> = items
                .drain(..take)
                .filter(|w| !w.reply.as_ref().is_some_and(oneshot::Sender::is_closed))
                .collect();
            if items.is_empty() {
                waiting.remove(&coupon);
            }
            if !group.is_empty() {
                in_flight.insert(coupon);
                calls.push(call_once::<C>(queue.clone(), coupon, group));
            }
        }
        tokio::select! {
            n = rx.recv_many(&mut buf, MAX_ITEMS), if open => {
                open = n > 0;
                for w in buf.drain(..) {
                    waiting.entry(w.coupon).or_default().push(w);
                }
            }
            Some(coupon) = calls.next(), if !calls.is_empty() => {
                in_flight.remove(&coupon);
            }
            else => break,
        }
    }
}

/// One call for `group`, its answers handed out; returns its coupon.
async fn call_once<C: Call>(
    queue: RedisQueue,
    coupon: CouponId,
    group: Vec<Waiting<C>>,
) -> CouponId {
    let items: Vec<&C::Item> = group.iter().map(|w| &w.item).collect();
    // A panic fails this call's items (their callers see the answer
    // dropped), not the task every later call goes through.
    let result = AssertUnwindSafe(C::call(&queue, coupon, &items))
        .catch_unwind()
        .await;
    match result {
        Ok(Ok(answers)) => {
            for (w, answer) in group.into_iter().zip(answers) {
                if let Some(reply) = w.reply {
                    let _ = reply.send(answer);
                }
            }
        }
        Ok(Err(e)) => {
            let unanswered = group.iter().filter(|w| w.reply.is_none()).count();
            if unanswered > 0 {
                tracing::warn!(error = %e, %coupon, items = unanswered, "{}", C::UNANSWERED_FAILURE);
            }
            for reply in group.into_iter().filter_map(|w| w.reply) {
                let _ = reply.send(Err(each(&e)));
            }
        }
        Err(_) => tracing::error!(%coupon, items = group.len(), "a grouped Redis call panicked"),
    }
    coupon
}

/// A failed call's error for each of its items: the same kind, so that an
/// uncertain outcome stays uncertain for every one of them.
fn each(e: &QueueError) -> QueueError {
    match e {
        QueueError::Uncertain(s) => QueueError::Uncertain(s.clone()),
        QueueError::Timeout(d) => QueueError::Timeout(*d),
        QueueError::BadReply(s) => QueueError::BadReply(s.clone()),
        QueueError::SoldOut(c) => QueueError::SoldOut(*c),
        QueueError::Fenced(epoch) => QueueError::Fenced(*epoch),
        other => QueueError::Unavailable(other.to_string()),
    }
}

/// One event to append (see [`super::ENQUEUE_MANY`] for its fields).
pub(super) struct Append {
    pub payload: Vec<u8>,
    pub epoch: Option<u64>,
    pub new_request: bool,
    /// The user and request of a new click, for the repeat gate.
    pub gate: Option<(UserId, Uuid)>,
}

/// One user's claim of its gate entry (see [`super::CLAIM_MANY`]).
pub(super) struct ClaimOf {
    pub user: UserId,
    /// The claim entry written when the user has none.
    pub entry: String,
    /// Now, in ms since the epoch.
    pub now: i64,
    /// A claim older than this is taken over.
    pub stale: Duration,
}

/// One request's place: its gate entry's new value, or `None` to drop the
/// claim (the broker refused the event; see [`super::PLACE_MANY`]).
pub(super) struct Placement {
    pub user: UserId,
    pub request: Uuid,
    pub entry: Option<String>,
}

/// Appends to a coupon's stream.
pub(super) struct Appends;

impl Call for Appends {
    type Item = Append;
    type Answer = Admitted;
    const UNANSWERED_FAILURE: &'static str = "appending events failed";

    async fn call(
        queue: &RedisQueue,
        coupon: CouponId,
        items: &[&Append],
    ) -> Result<Vec<Result<Admitted, QueueError>>, QueueError> {
        queue.append_many(coupon, items).await
    }
}

/// Kafka mode's claims in the gate.
pub(super) struct Claims;

impl Call for Claims {
    type Item = ClaimOf;
    type Answer = Claim;
    const UNANSWERED_FAILURE: &'static str = "claiming gate entries failed";

    async fn call(
        queue: &RedisQueue,
        coupon: CouponId,
        items: &[&ClaimOf],
    ) -> Result<Vec<Result<Claim, QueueError>>, QueueError> {
        queue.claim_many(coupon, items).await
    }
}

/// Kafka mode's places in the gate, sent off the issue call's path.
pub(super) struct Places;

impl Call for Places {
    type Item = Placement;
    type Answer = ();
    const UNANSWERED_FAILURE: &'static str =
        "recording requests' places in the gate failed; their claims go stale";

    async fn call(
        queue: &RedisQueue,
        coupon: CouponId,
        items: &[&Placement],
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        queue.place_many(coupon, items).await?;
        Ok(items.iter().map(|_| Ok(())).collect())
    }
}
