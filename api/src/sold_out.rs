//! Clicks on a sold-out coupon answered from memory: the coupon's repeat
//! gate is read whole once the coupon is seen sold out, and kept while it
//! stays so. A click there is a winner's repeat (`200 SUCCESS`) or a `409`,
//! and neither needs a Redis round trip:
//!
//! - a winner's entry is final until the coupon reopens (a restock or an
//!   operator's reset, which the coupon cache sees and which drop the copy);
//! - nobody new is queued for a sold-out coupon, so a user without an entry
//!   is answered `409`.
//!
//! Entries still pending or claimed (the queue was not drained when the
//! coupon sold out) are read from Redis as before, and the copy is read
//! again every second while it holds any, and during the first seconds
//! after the sell-out was seen: another api instance may still queue a
//! click until its own cache learns of it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::domain::{CouponId, UserId};
use common::queue::{GateEntry, GateState, Queues};

use crate::state::AppState;

/// How often a copy with undecided entries is read again.
const REFRESH: Duration = Duration::from_secs(1);
/// How long after the sell-out was first seen the copy is read again even
/// when every entry is decided.
const SETTLING: Duration = Duration::from_secs(3);
/// A gate with more entries than this is not copied (its clicks are read
/// from Redis one by one).
const MAX_ENTRIES: usize = 200_000;

/// The copies of the sold-out coupons' gates.
#[derive(Clone, Default)]
pub struct SoldOutGates {
    views: Arc<Mutex<HashMap<i64, View>>>,
}

struct View {
    /// When a click first found the coupon sold out.
    since: Instant,
    copy: Option<Arc<Copy>>,
    /// When the read that made `copy` (or failed) started.
    read_at: Option<Instant>,
    reading: bool,
    too_big: bool,
}

struct Copy {
    entries: HashMap<i64, GateEntry>,
    /// Whether any entry is pending or claimed.
    undecided: bool,
}

/// What the copy says of a user.
#[derive(Debug)]
pub enum Known {
    /// Their request won.
    Won(GateEntry),
    /// They have no entry: the answer is `409`.
    Absent,
    /// Not known here (no copy yet, or a pending entry): ask Redis.
    Ask,
}

impl SoldOutGates {
    /// What the copy of `coupon`'s gate says of `user`, and whether a read
    /// of the gate is due (the caller starts it with [`read`]).
    fn lookup(&self, coupon: CouponId, user: UserId) -> (Known, bool) {
        let mut views = self.views.lock().expect("sold-out gates lock");
        let view = views.entry(coupon.get()).or_insert_with(|| View {
            since: Instant::now(),
            copy: None,
            read_at: None,
            reading: false,
            too_big: false,
        });
        let due = !view.reading
            && !view.too_big
            && view.read_at.is_none_or(|at| {
                at.elapsed() >= REFRESH
                    && (view.copy.as_ref().is_none_or(|c| c.undecided)
                        || at.duration_since(view.since) < SETTLING)
            });
        if due {
            view.reading = true;
        }
        let known = match &view.copy {
            None => Known::Ask,
            Some(copy) => match copy.entries.get(&user.get()) {
                Some(
                    e @ GateEntry {
                        state: GateState::Won(_),
                        ..
                    },
                ) => Known::Won(e.clone()),
                Some(_) => Known::Ask,
                None => Known::Absent,
            },
        };
        (known, due)
    }

    fn store(
        &self,
        coupon: CouponId,
        started: Instant,
        read: Result<Option<Vec<(i64, GateEntry)>>, String>,
    ) {
        let mut views = self.views.lock().expect("sold-out gates lock");
        // Forgotten meanwhile: the coupon reopened.
        let Some(view) = views.get_mut(&coupon.get()) else {
            return;
        };
        view.reading = false;
        view.read_at = Some(started);
        match read {
            Ok(Some(entries)) => {
                let undecided = entries
                    .iter()
                    .any(|(_, e)| !matches!(e.state, GateState::Won(_)));
                view.copy = Some(Arc::new(Copy {
                    entries: entries.into_iter().collect(),
                    undecided,
                }));
            }
            Ok(None) => {
                view.copy = None;
                view.too_big = true;
            }
            // Kept as it was; read again after REFRESH.
            Err(e) => tracing::debug!(error = %e, %coupon, "reading a sold-out coupon's gate"),
        }
    }

    /// Drops the copies of the coupons `sold_out` no longer holds true of.
    pub fn retain(&self, sold_out: impl Fn(i64) -> bool) {
        self.views
            .lock()
            .expect("sold-out gates lock")
            .retain(|id, _| sold_out(*id));
    }

    /// How many coupons have a copy (or are getting one).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.views.lock().expect("sold-out gates lock").len()
    }
}

/// Reads `coupon`'s gate into `gates`.
async fn read(gates: SoldOutGates, queues: Queues, coupon: CouponId) {
    let started = Instant::now();
    let read = match queues.redis().await {
        Ok(redis) => redis.gate_entries(coupon, MAX_ENTRIES).await,
        Err(e) => Err(e),
    };
    gates.store(coupon, started, read.map_err(|e| e.to_string()));
}

/// The user's entry in a sold-out coupon's gate: from the copy when it
/// knows, else from Redis (see [`crate::repeat::entry_of`]).
pub async fn entry_of(state: &AppState, coupon: CouponId, user: UserId) -> Option<GateEntry> {
    let gates = state.coupons.sold_out_gates();
    let (known, due) = gates.lookup(coupon, user);
    if due {
        tokio::spawn(read(gates.clone(), state.queue.queues().clone(), coupon));
    }
    if matches!(known, Known::Ask) {
        metrics::counter!("coupon_issue_sold_out_redis_reads_total").increment(1);
    }
    match known {
        Known::Won(entry) => Some(entry),
        Known::Absent => None,
        Known::Ask => crate::repeat::entry_of(state, coupon, user).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::queue::{Lane, Place};
    use uuid::Uuid;

    fn coupon() -> CouponId {
        CouponId::try_from(7).unwrap()
    }

    fn user(id: i64) -> UserId {
        UserId::try_from(id).unwrap()
    }

    fn entry(won: bool) -> GateEntry {
        let place = Place {
            position: "1-0".into(),
            lane: Lane::Coupon(coupon()),
            target: 1,
        };
        GateEntry {
            request_id: Uuid::new_v4(),
            state: if won {
                GateState::Won(Some(place))
            } else {
                GateState::Pending(place)
            },
        }
    }

    #[test]
    fn without_a_copy_redis_is_asked_and_one_read_is_started() {
        let gates = SoldOutGates::default();
        let (known, due) = gates.lookup(coupon(), user(1));
        assert!(matches!(known, Known::Ask));
        assert!(due);
        // The read is under way: no second one.
        let (_, due) = gates.lookup(coupon(), user(1));
        assert!(!due);
    }

    #[test]
    fn the_copy_answers_winners_and_absent_users_and_asks_about_pending_ones() {
        let gates = SoldOutGates::default();
        gates.lookup(coupon(), user(1));
        let won = entry(true);
        gates.store(
            coupon(),
            Instant::now(),
            Ok(Some(vec![(1, won.clone()), (2, entry(false))])),
        );
        assert!(matches!(gates.lookup(coupon(), user(1)).0, Known::Won(e) if e == won));
        assert!(matches!(gates.lookup(coupon(), user(2)).0, Known::Ask));
        assert!(matches!(gates.lookup(coupon(), user(3)).0, Known::Absent));
        // Read a moment ago: not due yet.
        assert!(!gates.lookup(coupon(), user(3)).1);
    }

    #[test]
    fn an_undecided_copy_is_read_again_a_decided_one_once_settled_is_kept() {
        let gates = SoldOutGates::default();
        gates.lookup(coupon(), user(1));
        let long_ago = Instant::now() - Duration::from_secs(10);
        gates.store(coupon(), long_ago, Ok(Some(vec![(1, entry(false))])));
        assert!(
            gates.lookup(coupon(), user(1)).1,
            "pending entries: read again"
        );

        let gates = SoldOutGates::default();
        gates.views.lock().unwrap().insert(
            coupon().get(),
            View {
                since: long_ago - SETTLING,
                copy: None,
                read_at: None,
                reading: true,
                too_big: false,
            },
        );
        gates.store(coupon(), long_ago, Ok(Some(vec![(1, entry(true))])));
        assert!(!gates.lookup(coupon(), user(1)).1, "all won, settled: kept");
    }

    #[test]
    fn a_failed_read_keeps_the_copy_a_big_gate_is_not_copied_and_reopened_coupons_are_dropped() {
        let gates = SoldOutGates::default();
        gates.lookup(coupon(), user(1));
        gates.store(coupon(), Instant::now(), Ok(Some(vec![(1, entry(true))])));
        gates.store(coupon(), Instant::now(), Err("down".into()));
        assert!(matches!(gates.lookup(coupon(), user(1)).0, Known::Won(_)));

        gates.store(coupon(), Instant::now(), Ok(None));
        let (known, due) = gates.lookup(coupon(), user(1));
        assert!(matches!(known, Known::Ask));
        assert!(!due, "too big: never read again");

        gates.retain(|_| false);
        assert_eq!(gates.len(), 0);
    }
}
