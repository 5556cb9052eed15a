//! How the door answered the issue calls: one count per answer kind, kept
//! for the dashboard (since this api started) and exported as the
//! Prometheus counter `coupon_issue_requests_total{outcome}`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One kind of answer to `POST /api/coupons/{couponId}/issue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `202`: queued.
    Accepted,
    /// `200`: the user's pending or winning request (the repeat gate).
    Repeat,
    /// `409 SOLD_OUT`.
    SoldOut,
    /// `404`: no such coupon.
    UnknownCoupon,
    /// `503`: the queue refused it or did not confirm it.
    QueueUnavailable,
    /// `401`: no valid user token.
    Unauthenticated,
    /// `403 USER_MISMATCH`.
    UserMismatch,
    /// `429 RATE_LIMITED`.
    RateLimited,
}

const KINDS: usize = 8;
static COUNTS: [AtomicU64; KINDS] = [const { AtomicU64::new(0) }; KINDS];

impl Outcome {
    const ALL: [Outcome; KINDS] = [
        Outcome::Accepted,
        Outcome::Repeat,
        Outcome::SoldOut,
        Outcome::UnknownCoupon,
        Outcome::QueueUnavailable,
        Outcome::Unauthenticated,
        Outcome::UserMismatch,
        Outcome::RateLimited,
    ];

    /// The `outcome` label of the metric.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Repeat => "repeat",
            Outcome::SoldOut => "sold_out",
            Outcome::UnknownCoupon => "unknown_coupon",
            Outcome::QueueUnavailable => "queue_unavailable",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::UserMismatch => "user_mismatch",
            Outcome::RateLimited => "rate_limited",
        }
    }

    /// Counts one answer of this kind.
    pub fn count(self) {
        COUNTS[self as usize].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("coupon_issue_requests_total", "outcome" => self.label()).increment(1);
    }
}

/// The issue calls this api instance answered since it started, by answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DoorCounts {
    /// `202`.
    pub accepted: u64,
    /// `200`, answered by the repeat gate.
    pub repeat: u64,
    /// `409 SOLD_OUT`.
    pub sold_out: u64,
    /// `404`.
    pub unknown_coupon: u64,
    /// `503`.
    pub queue_unavailable: u64,
    /// `401`.
    pub unauthenticated: u64,
    /// `403 USER_MISMATCH`.
    pub user_mismatch: u64,
    /// `429 RATE_LIMITED`.
    pub rate_limited: u64,
}

impl DoorCounts {
    /// The counts now (of every api in this process: tests run several).
    pub fn now() -> Self {
        let n = |o: Outcome| COUNTS[o as usize].load(Ordering::Relaxed);
        debug_assert_eq!(Outcome::ALL.len(), KINDS);
        Self {
            accepted: n(Outcome::Accepted),
            repeat: n(Outcome::Repeat),
            sold_out: n(Outcome::SoldOut),
            unknown_coupon: n(Outcome::UnknownCoupon),
            queue_unavailable: n(Outcome::QueueUnavailable),
            unauthenticated: n(Outcome::Unauthenticated),
            user_mismatch: n(Outcome::UserMismatch),
            rate_limited: n(Outcome::RateLimited),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_own_count_and_label() {
        let before = DoorCounts::now();
        Outcome::Repeat.count();
        Outcome::RateLimited.count();
        let after = DoorCounts::now();
        assert!(after.repeat > before.repeat);
        assert!(after.rate_limited > before.rate_limited);
        let labels: std::collections::HashSet<_> = Outcome::ALL.iter().map(|o| o.label()).collect();
        assert_eq!(labels.len(), KINDS);
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
    }
}
