//! The dead-letter stream of every coupon.

use redis::Value;

use super::reply::parse_entries;
use super::{Invocation, RedisQueue, StreamEntry};
use crate::domain::CouponId;
use crate::error::QueueError;

impl RedisQueue {
    /// Appends a dead letter: where it came from, its payload and why.
    pub async fn dead_letter(
        &self,
        coupon: CouponId,
        entry_id: &str,
        payload: &[u8],
        reason: &str,
    ) -> Result<(), QueueError> {
        let _: String = self
            .run(Invocation::Cmd(
                redis::cmd("XADD")
                    .arg(self.keys.dead_letters())
                    .arg("*")
                    .arg("stream")
                    .arg(self.keys.stream(coupon))
                    .arg("entryId")
                    .arg(entry_id)
                    .arg("payload")
                    .arg(payload)
                    .arg("reason")
                    .arg(reason),
            ))
            .await?;
        Ok(())
    }

    /// Dead letters after `after` (exclusive; `None` = from the start),
    /// oldest first.
    pub async fn dead_letters(
        &self,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<StreamEntry>, QueueError> {
        let start = after.map_or_else(|| "-".to_string(), |id| format!("({id}"));
        let reply: Value = self
            .run(Invocation::Cmd(
                redis::cmd("XRANGE")
                    .arg(self.keys.dead_letters())
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count),
            ))
            .await?;
        parse_entries(reply)
    }

    /// Removes one dead letter (after it was replayed).
    pub async fn delete_dead_letter(&self, id: &str) -> Result<(), QueueError> {
        let _: i64 = self
            .run(Invocation::Cmd(
                redis::cmd("XDEL").arg(self.keys.dead_letters()).arg(id),
            ))
            .await?;
        Ok(())
    }
}
