//! Key names. Every key of one coupon carries the hash tag `{couponId}`, so
//! on a Redis Cluster they all live in one slot and a script may touch any
//! of them; on a single node the braces are just characters.

use crate::domain::CouponId;

const STREAM: &str = "coupon-issue-events:";

/// Key names, all under one optional prefix (which must not contain `{`,
/// or the cluster would hash the prefix instead of the coupon id).
#[derive(Debug, Clone)]
pub struct RedisKeys {
    prefix: String,
}

impl RedisKeys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// `coupon-issue-events:{couponId}`: the coupon's queue.
    pub fn stream(&self, coupon: CouponId) -> String {
        format!("{}{STREAM}{{{coupon}}}", self.prefix)
    }

    /// Single node only: set of coupon ids whose stream may hold entries.
    pub fn pending(&self) -> String {
        format!("{}{STREAM}pending", self.prefix)
    }

    /// Which worker is draining the coupon; same slot as its stream.
    pub fn lease(&self, coupon: CouponId) -> String {
        format!("{}{STREAM}{{{coupon}}}:lease", self.prefix)
    }

    /// Hash of the coupon's queue counters (`processed`: entries trimmed
    /// after their results committed, ever); same slot as its stream. The
    /// api derives waiting positions from it.
    pub fn progress(&self, coupon: CouponId) -> String {
        format!("{}{STREAM}{{{coupon}}}:progress", self.prefix)
    }

    /// Set by a worker for a moment when a batch leaves the coupon without
    /// stock: the enqueue script then refuses at once. Same slot as its
    /// stream.
    pub fn sold_out(&self, coupon: CouponId) -> String {
        format!("{}{STREAM}{{{coupon}}}:sold-out", self.prefix)
    }

    /// The coupon's switch fence (invariant S3 of `common::switch`): the
    /// newest epoch that moved the service off Redis. The enqueue script
    /// refuses a new event of an earlier epoch. Same slot as its stream.
    pub fn fence(&self, coupon: CouponId) -> String {
        format!("{}{STREAM}{{{coupon}}}:fence", self.prefix)
    }

    /// The coupon's repeat gate (see `common::queue::gate`): a hash of user
    /// id to that user's pending or winning request. Same slot as its
    /// stream.
    pub fn gate(&self, coupon: CouponId) -> String {
        format!("{}{STREAM}{{{coupon}}}:gate", self.prefix)
    }

    /// Pub/sub channel of wake-ups: the id of a coupon whose empty stream
    /// just got an entry.
    pub fn wake_channel(&self) -> String {
        format!("{}{STREAM}wake", self.prefix)
    }

    /// Dead letters of every coupon.
    pub fn dead_letters(&self) -> String {
        format!("{}{STREAM}dlq", self.prefix)
    }

    /// `SCAN MATCH` pattern of every coupon stream (and lease) under this
    /// prefix; glob characters of the prefix are escaped.
    pub fn stream_pattern(&self) -> String {
        let mut p = String::with_capacity(self.prefix.len() + STREAM.len() + 2);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                p.push('\\');
            }
            p.push(c);
        }
        p.push_str(STREAM);
        p.push_str("{*");
        p
    }

    /// The coupon whose stream `key` is, if it is one.
    pub fn coupon_of_stream(&self, key: &str) -> Option<CouponId> {
        let id = key
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(STREAM)?
            .strip_prefix('{')?
            .strip_suffix('}')?;
        CouponId::try_from(id.parse::<i64>().ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_coupon_share_its_hash_tag_and_the_prefix() {
        let k = RedisKeys::new("t1:");
        let c = CouponId::try_from(7).unwrap();
        assert_eq!(k.stream(c), "t1:coupon-issue-events:{7}");
        assert_eq!(k.lease(c), "t1:coupon-issue-events:{7}:lease");
        assert_eq!(k.progress(c), "t1:coupon-issue-events:{7}:progress");
        assert_eq!(k.sold_out(c), "t1:coupon-issue-events:{7}:sold-out");
        assert_eq!(k.fence(c), "t1:coupon-issue-events:{7}:fence");
        assert_eq!(k.gate(c), "t1:coupon-issue-events:{7}:gate");
        assert_eq!(k.pending(), "t1:coupon-issue-events:pending");
        assert_eq!(k.dead_letters(), "t1:coupon-issue-events:dlq");
    }

    #[test]
    fn stream_keys_map_back_to_their_coupon() {
        let k = RedisKeys::new("a*b:");
        let c = CouponId::try_from(42).unwrap();
        assert_eq!(k.coupon_of_stream(&k.stream(c)), Some(c));
        assert_eq!(k.coupon_of_stream(&k.lease(c)), None);
        assert_eq!(k.coupon_of_stream(&k.progress(c)), None);
        assert_eq!(k.coupon_of_stream(&k.dead_letters()), None);
        assert_eq!(k.coupon_of_stream("other:coupon-issue-events:{42}"), None);
        assert_eq!(k.stream_pattern(), r"a\*b:coupon-issue-events:{*");
    }
}
