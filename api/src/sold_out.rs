//! Clicks on a sold-out coupon answered from memory: the coupon's repeat
//! gate is read whole once the coupon is seen sold out, and kept while it
//! stays so. A click there is a winner's repeat (`200 SUCCESS`) or a `409`,
//! and neither needs a Redis round trip:
//!
//! - a winner's entry is final until the coupon reopens (a restock or an
//!   operator's reset, which the coupon cache sees and which drop the copy);
//! - nobody new is queued for a sold-out coupon once every api knows it, so
//!   a user without an entry is answered `409`.
//!
//! Entries still pending or claimed (the queue was not drained when the
//! coupon sold out) are read from Redis one by one, as without a copy, and
//! the copy is read again every second while it holds any. A copy of
//! decided entries is checked every second with one `HLEN`, and read again
//! when the gate's size changed: a click another api queued before it
//! learnt of the sell-out, a reset, or a restock sold out again between two
//! reloads of the coupon cache are all seen within a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::domain::{CouponId, UserId};
use common::queue::redis::GateRead;
use common::queue::{GateEntry, GateState, Queues};

use crate::state::AppState;

/// How often a copy is checked (decided entries only) or read again.
const REFRESH: Duration = Duration::from_secs(1);
/// A gate with more entries than this is not copied (its clicks are read
/// from Redis one by one): `HGETALL` holds Redis for the whole read.
const MAX_ENTRIES: usize = 50_000;

/// The copies of the sold-out coupons' gates.
#[derive(Clone, Default)]
pub struct SoldOutGates {
    views: Arc<Mutex<HashMap<i64, View>>>,
    /// Numbers the views, so that a read started for a view that was
    /// dropped meanwhile does not land in its successor.
    generations: Arc<AtomicU64>,
}

struct View {
    generation: u64,
    copy: Option<Arc<GateCopy>>,
    /// When the last read (or check) started.
    read_at: Option<Instant>,
    reading: bool,
}

struct GateCopy {
    entries: HashMap<i64, GateEntry>,
    /// The gate's size when read (`HLEN`).
    len: usize,
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
    /// Not known here (no copy, or a pending entry): ask Redis.
    Ask,
}

/// A read of a gate to start: the view's generation, and the size of a
/// decided copy (read again only if the gate's size differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    generation: u64,
    unless_len: Option<usize>,
}

impl SoldOutGates {
    /// What the copy of `coupon`'s gate says of `user`, and the read of the
    /// gate that is due, if one is (the caller starts it with [`read`]).
    fn lookup(&self, coupon: CouponId, user: UserId) -> (Known, Option<Due>) {
        let mut views = self.views.lock().expect("sold-out gates lock");
        let view = views.entry(coupon.get()).or_insert_with(|| View {
            generation: self.generations.fetch_add(1, Ordering::Relaxed),
            copy: None,
            read_at: None,
            reading: false,
        });
        let due =
            (!view.reading && view.read_at.is_none_or(|at| at.elapsed() >= REFRESH)).then(|| Due {
                generation: view.generation,
                unless_len: view.copy.as_ref().filter(|c| !c.undecided).map(|c| c.len),
            });
        if due.is_some() {
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

    fn store(&self, coupon: CouponId, due: Due, started: Instant, read: Result<GateRead, String>) {
        let mut views = self.views.lock().expect("sold-out gates lock");
        // Dropped meanwhile (the coupon reopened), perhaps already followed
        // by a new view: this read is of no use to it.
        let Some(view) = views
            .get_mut(&coupon.get())
            .filter(|v| v.generation == due.generation)
        else {
            return;
        };
        view.reading = false;
        view.read_at = Some(started);
        match read {
            Ok(GateRead::Unchanged) => {}
            Ok(GateRead::Entries(entries, len)) => {
                let undecided = entries
                    .iter()
                    .any(|(_, e)| !matches!(e.state, GateState::Won(_)));
                view.copy = Some(Arc::new(GateCopy {
                    entries: entries.into_iter().collect(),
                    len,
                    undecided,
                }));
            }
            Ok(GateRead::TooBig) => view.copy = None,
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
}

/// Reads `coupon`'s gate into `gates`.
async fn read(gates: SoldOutGates, queues: Queues, coupon: CouponId, due: Due) {
    let started = Instant::now();
    let read = match queues.redis().await {
        Ok(redis) => {
            redis
                .gate_entries(coupon, MAX_ENTRIES, due.unless_len)
                .await
        }
        Err(e) => Err(e),
    };
    gates.store(coupon, due, started, read.map_err(|e| e.to_string()));
}

/// The user's entry in a sold-out coupon's gate: from the copy when it
/// knows, else from Redis (see [`crate::repeat::entry_of`]).
pub async fn entry_of(state: &AppState, coupon: CouponId, user: UserId) -> Option<GateEntry> {
    let gates = state.coupons.sold_out_gates();
    let (known, due) = gates.lookup(coupon, user);
    if let Some(due) = due {
        tokio::spawn(read(
            gates.clone(),
            state.queue.queues().clone(),
            coupon,
            due,
        ));
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

    /// A read that found `entries`, the whole gate.
    fn found(entries: Vec<(i64, GateEntry)>) -> Result<GateRead, String> {
        let len = entries.len();
        Ok(GateRead::Entries(entries, len))
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
        assert_eq!(due.map(|d| d.unless_len), Some(None), "a full read");
        // The read is under way: no second one.
        assert!(gates.lookup(coupon(), user(1)).1.is_none());
    }

    #[test]
    fn the_copy_answers_winners_and_absent_users_and_asks_about_pending_ones() {
        let gates = SoldOutGates::default();
        let due = gates.lookup(coupon(), user(1)).1.unwrap();
        let won = entry(true);
        gates.store(
            coupon(),
            due,
            Instant::now(),
            found(vec![(1, won.clone()), (2, entry(false))]),
        );
        assert!(matches!(gates.lookup(coupon(), user(1)).0, Known::Won(e) if e == won));
        assert!(matches!(gates.lookup(coupon(), user(2)).0, Known::Ask));
        assert!(matches!(gates.lookup(coupon(), user(3)).0, Known::Absent));
        // Read a moment ago: not due yet.
        assert!(gates.lookup(coupon(), user(3)).1.is_none());
    }

    #[test]
    fn an_undecided_copy_is_read_again_a_decided_one_is_checked_by_its_size() {
        let gates = SoldOutGates::default();
        let due = gates.lookup(coupon(), user(1)).1.unwrap();
        let long_ago = Instant::now() - 2 * REFRESH;
        gates.store(coupon(), due, long_ago, found(vec![(1, entry(false))]));
        let due = gates.lookup(coupon(), user(1)).1.unwrap();
        assert_eq!(due.unless_len, None, "pending entries: read again whole");

        gates.store(
            coupon(),
            due,
            long_ago,
            found(vec![(1, entry(true)), (2, entry(true))]),
        );
        let due = gates.lookup(coupon(), user(1)).1.unwrap();
        assert_eq!(
            due.unless_len,
            Some(2),
            "decided: read again if its size changed"
        );
        gates.store(coupon(), due, Instant::now(), Ok(GateRead::Unchanged));
        assert!(matches!(gates.lookup(coupon(), user(2)).0, Known::Won(_)));
    }

    #[test]
    fn a_failed_read_keeps_the_copy_and_a_big_gate_is_not_copied() {
        let gates = SoldOutGates::default();
        let due = gates.lookup(coupon(), user(1)).1.unwrap();
        let long_ago = Instant::now() - 2 * REFRESH;
        gates.store(coupon(), due, long_ago, found(vec![(1, entry(true))]));
        let due = gates.lookup(coupon(), user(1)).1.unwrap();
        gates.store(coupon(), due, long_ago, Err("down".into()));
        let (known, due) = gates.lookup(coupon(), user(1));
        assert!(matches!(known, Known::Won(_)));

        gates.store(coupon(), due.unwrap(), long_ago, Ok(GateRead::TooBig));
        let (known, due) = gates.lookup(coupon(), user(1));
        assert!(matches!(known, Known::Ask));
        assert_eq!(
            due.unwrap().unless_len,
            None,
            "too big: its size checked again"
        );
    }

    #[test]
    fn a_read_of_a_dropped_view_does_not_land_in_its_successor() {
        let gates = SoldOutGates::default();
        let stale = gates.lookup(coupon(), user(1)).1.unwrap();
        // The coupon reopened and sold out again while the read was out.
        gates.retain(|_| false);
        let fresh = gates.lookup(coupon(), user(1)).1.unwrap();
        gates.store(
            coupon(),
            stale,
            Instant::now(),
            found(vec![(1, entry(true))]),
        );
        assert!(matches!(gates.lookup(coupon(), user(1)).0, Known::Ask));
        gates.store(
            coupon(),
            fresh,
            Instant::now(),
            found(vec![(2, entry(true))]),
        );
        assert!(matches!(gates.lookup(coupon(), user(1)).0, Known::Absent));
    }
}
