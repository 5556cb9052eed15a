//! The dead-letter stream of every coupon, and the one type its entries are
//! written and read as.

use redis::streams::StreamId;
use redis::Value;

use super::reply::{bytes_field, parse_xrange};
use super::{Invocation, RedisQueue};
use crate::domain::CouponId;
use crate::error::QueueError;

/// A dead letter: where it came from, its payload and why it was given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream.
    pub id: String,
    /// The coupon stream it came from.
    pub stream: String,
    /// Its entry id in that stream.
    pub entry_id: String,
    pub payload: Vec<u8>,
    pub reason: String,
}

// Field names in the dead-letter stream.
const STREAM: &str = "stream";
const ENTRY_ID: &str = "entryId";
const PAYLOAD: &str = "payload";
const REASON: &str = "reason";

impl DeadLetter {
    fn from_entry(entry: &StreamId) -> Self {
        let text = |field| {
            String::from_utf8_lossy(&bytes_field(entry, field).unwrap_or_default()).into_owned()
        };
        Self {
            id: entry.id.clone(),
            stream: text(STREAM),
            entry_id: text(ENTRY_ID),
            payload: bytes_field(entry, PAYLOAD).unwrap_or_default(),
            reason: text(REASON),
        }
    }
}

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
                    .arg(STREAM)
                    .arg(self.keys.stream(coupon))
                    .arg(ENTRY_ID)
                    .arg(entry_id)
                    .arg(PAYLOAD)
                    .arg(payload)
                    .arg(REASON)
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
    ) -> Result<Vec<DeadLetter>, QueueError> {
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
        Ok(parse_xrange(reply)?
            .iter()
            .map(DeadLetter::from_entry)
            .collect())
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
