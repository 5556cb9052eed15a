//! Where an accepted request stands: its lane and its place in it.

use serde::Serialize;

use crate::domain::CouponId;

/// Requests not yet processed, and what the number covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueSize {
    pub size: u64,
    /// `coupon` when the number counts only this coupon's requests;
    /// `partition` when it counts the whole partition the coupon maps to.
    pub scope: &'static str,
}

/// The queue whose progress decides when an accepted request's turn comes:
/// a coupon's stream (Redis) or a partition of the topic (Kafka, shared by
/// the coupons that hash to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    Coupon(CouponId),
    Partition(i32),
}

/// What the queue answered for an accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// `queue_position`: the Redis entry id or Kafka `partition:offset`.
    pub position: String,
    pub lane: Lane,
    /// The lane's progress count at which this request is next in line:
    /// `target - progress` requests are ahead of it. Progress counts
    /// processed entries (Redis: the coupon's `processed` counter) or is the
    /// worker group's committed offset (Kafka); `target` is then the
    /// request's offset.
    pub target: u64,
    /// The lane's progress read in the same step as the enqueue, when the
    /// backend gives it (Redis); Kafka's comes from the committed offsets.
    pub progress: Option<u64>,
}

impl Enqueued {
    /// Requests ahead of this one when its lane stands at `progress`.
    pub fn ahead(&self, progress: u64) -> u64 {
        self.target.saturating_sub(progress)
    }
}
