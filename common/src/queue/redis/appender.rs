//! Appends go to Redis through one task: the events that pile up while one
//! script call is in flight go together in the next, one call per coupon
//! (see [`super::ENQUEUE_MANY`]), in the order they arrived. Under a crowd
//! a coupon's clicks then cost one round trip and one script run between
//! them, not one each; alone, a click waits for nothing but its own call.
//!
//! Order is kept: the task takes events in arrival order, a coupon's go in
//! one call in that order, and the next call starts after this one
//! answered. A caller that stopped waiting (its client left, or its time
//! ran out) before its call was sent is left out: nothing is queued for it.

use std::collections::BTreeMap;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::RedisQueue;
use crate::domain::{CouponId, UserId};
use crate::error::QueueError;
use crate::queue::gate::Admitted;

/// Events taken into one round of calls at most.
const MAX_EVENTS: usize = 512;

/// One event to append (see [`super::ENQUEUE_MANY`] for its fields).
pub(super) struct Append {
    pub payload: Vec<u8>,
    pub epoch: Option<u64>,
    pub new_request: bool,
    /// The user and request of a new click, for the repeat gate.
    pub gate: Option<(UserId, Uuid)>,
}

struct Waiting {
    coupon: CouponId,
    append: Append,
    reply: oneshot::Sender<Result<Admitted, QueueError>>,
}

/// The sending side; the task ends when it is dropped.
pub(super) struct Appender {
    tx: mpsc::UnboundedSender<Waiting>,
}

impl Appender {
    /// Starts the task that appends through `queue`.
    pub fn spawn(queue: RedisQueue) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(queue, rx));
        Self { tx }
    }

    /// Appends one event and answers what the script answered for it.
    pub async fn send(&self, coupon: CouponId, append: Append) -> Result<Admitted, QueueError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Waiting {
                coupon,
                append,
                reply,
            })
            .map_err(|_| QueueError::Unavailable("the Redis appender stopped".into()))?;
        answer
            .await
            .map_err(|_| QueueError::Unavailable("the Redis appender stopped".into()))?
    }
}

async fn run(queue: RedisQueue, mut rx: mpsc::UnboundedReceiver<Waiting>) {
    let mut buf = Vec::with_capacity(MAX_EVENTS);
    while rx.recv_many(&mut buf, MAX_EVENTS).await > 0 {
        let mut by_coupon: BTreeMap<CouponId, Vec<Waiting>> = BTreeMap::new();
        for w in buf.drain(..).filter(|w| !w.reply.is_closed()) {
            by_coupon.entry(w.coupon).or_default().push(w);
        }
        let calls = by_coupon.into_iter().map(|(coupon, group)| {
            let queue = &queue;
            async move {
                let appends: Vec<&Append> = group.iter().map(|w| &w.append).collect();
                match queue.append_many(coupon, &appends).await {
                    Ok(answers) => {
                        for (w, answer) in group.into_iter().zip(answers) {
                            let _ = w.reply.send(answer);
                        }
                    }
                    Err(e) => {
                        for w in group {
                            let _ = w.reply.send(Err(each(&e)));
                        }
                    }
                }
            }
        });
        futures::future::join_all(calls).await;
    }
}

/// A failed call's error for each of its events: the same kind, so that
/// an uncertain outcome stays uncertain for every one of them.
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
