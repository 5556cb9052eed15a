//! Kafka mode records where a produced request landed (its gate entry goes
//! from claimed to pending, see [`super::PLACE_MANY`]) off the issue call's
//! path: the `202` does not wait for it, and the places that pile up while
//! one script call is in flight go together in the next, one call per
//! coupon. A place that comes late, or never, is safe: a worker's settling
//! of the entry wins over it, and a claim never placed is taken over by the
//! user's next click (see `common::queue::gate`).

use std::collections::BTreeMap;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::RedisQueue;
use crate::domain::{CouponId, UserId};

/// Places sent in one script call at most.
const MAX_PLACES: usize = 512;

/// One request's place: its gate entry's new value, or `None` to drop the
/// claim (the broker refused the event).
pub(super) struct Placement {
    pub coupon: CouponId,
    pub user: UserId,
    pub request: Uuid,
    pub entry: Option<String>,
}

/// The sending side; the task that writes the places ends when it is
/// dropped.
pub(super) struct Placer {
    tx: mpsc::UnboundedSender<Placement>,
}

impl Placer {
    /// Starts the task that writes places through `gate`.
    pub fn spawn(gate: RedisQueue) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(gate, rx));
        Self { tx }
    }

    pub fn send(&self, placement: Placement) {
        // The task lives as long as this sender.
        let _ = self.tx.send(placement);
    }
}

async fn write(gate: RedisQueue, mut rx: mpsc::UnboundedReceiver<Placement>) {
    let mut buf = Vec::with_capacity(MAX_PLACES);
    while rx.recv_many(&mut buf, MAX_PLACES).await > 0 {
        let mut by_coupon: BTreeMap<CouponId, Vec<Placement>> = BTreeMap::new();
        for p in buf.drain(..) {
            by_coupon.entry(p.coupon).or_default().push(p);
        }
        let calls = by_coupon.into_iter().map(|(coupon, places)| {
            let gate = &gate;
            async move {
                if let Err(e) = gate.place_many(coupon, &places).await {
                    tracing::warn!(error = %e, %coupon, places = places.len(),
                            "recording requests' places in the gate failed; their claims go stale");
                }
            }
        });
        futures::future::join_all(calls).await;
    }
}
