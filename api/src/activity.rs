//! Accepted requests per coupon and second, over the last minutes, for the
//! dashboard. Counts what *this* api instance accepted (each instance keeps
//! its own). Costs the issue path one short lock, no I/O.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use common::domain::CouponId;

/// Seconds of history kept per coupon.
pub const WINDOW_SECS: usize = 180;

/// One coupon's per-second counts, in a ring indexed by unix second.
struct Ring {
    /// The unix second each slot counts, so stale slots read as zero.
    seconds: [i64; WINDOW_SECS],
    counts: [u32; WINDOW_SECS],
    last: i64,
}

impl Ring {
    fn new() -> Self {
        Self {
            seconds: [i64::MIN; WINDOW_SECS],
            counts: [0; WINDOW_SECS],
            last: i64::MIN,
        }
    }

    fn add(&mut self, second: i64) {
        let slot = second.rem_euclid(WINDOW_SECS as i64) as usize;
        if self.seconds[slot] != second {
            self.seconds[slot] = second;
            self.counts[slot] = 0;
        }
        self.counts[slot] = self.counts[slot].saturating_add(1);
        self.last = self.last.max(second);
    }

    fn count(&self, second: i64) -> u32 {
        let slot = second.rem_euclid(WINDOW_SECS as i64) as usize;
        if self.seconds[slot] == second {
            self.counts[slot]
        } else {
            0
        }
    }
}

/// Per-coupon accepted counts; cheap to clone.
#[derive(Clone, Default)]
pub struct Activity {
    rings: Arc<Mutex<HashMap<i64, Ring>>>,
}

impl Activity {
    /// Records one accepted request for `coupon`, now.
    pub fn accepted(&self, coupon: CouponId) {
        self.accepted_at(coupon, Utc::now().timestamp());
    }

    /// Records one accepted request at a given unix second (tests).
    pub fn accepted_at(&self, coupon: CouponId, second: i64) {
        let mut rings = self.rings.lock().expect("activity lock");
        rings
            .entry(coupon.get())
            .or_insert_with(Ring::new)
            .add(second);
    }

    /// Counts per second for the `len` seconds starting at unix second
    /// `from`, for every coupon with an accepted request in that span.
    /// Coupons idle for the whole window are dropped.
    pub fn series(&self, from: i64, len: usize) -> HashMap<i64, Vec<u32>> {
        let mut rings = self.rings.lock().expect("activity lock");
        rings.retain(|_, r| r.last >= from);
        rings
            .iter()
            .map(|(id, r)| {
                let counts = (0..len as i64).map(|i| r.count(from + i)).collect();
                (*id, counts)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_second_and_expire_with_the_window() {
        let a = Activity::default();
        let c = CouponId::try_from(7).unwrap();
        a.accepted_at(c, 1000);
        a.accepted_at(c, 1000);
        a.accepted_at(c, 1002);
        assert_eq!(a.series(999, 4)[&7], vec![0, 2, 0, 1]);
        // A full window later the same slots count new seconds only.
        a.accepted_at(c, 1000 + WINDOW_SECS as i64);
        let later = a.series(1000 + WINDOW_SECS as i64 - 1, 2);
        assert_eq!(later[&7], vec![0, 1]);
        assert!(a.series(5000, 3).is_empty(), "idle coupons are dropped");
    }
}
