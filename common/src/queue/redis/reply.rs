//! Decoding of stream replies (`XRANGE`, with the crate's
//! [`StreamRangeReply`]) and stream-id arithmetic.

use redis::streams::{StreamId, StreamRangeReply};
use redis::Value;

use crate::error::QueueError;

/// The entries of an `XRANGE` reply, in order. An entry's fields are read
/// by the caller: a missing or unreadable field is the caller's to judge
/// (a queue entry without a payload is dead-lettered, not an error here).
pub(super) fn parse_xrange(reply: Value) -> Result<Vec<StreamId>, QueueError> {
    let reply: StreamRangeReply =
        redis::from_redis_value(reply).map_err(|e| QueueError::BadReply(format!("XRANGE: {e}")))?;
    Ok(reply.ids)
}

/// A field of an entry as bytes; `None` when missing or not a string.
pub(super) fn bytes_field(entry: &StreamId, field: &str) -> Option<Vec<u8>> {
    entry.get(field)
}

/// The smallest stream id greater than `id` (`ms-seq` → `ms-(seq+1)`).
pub fn next_entry_id(id: &str) -> Option<String> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    Some(match seq.checked_add(1) {
        Some(s) => format!("{ms}-{s}"),
        None => format!("{}-0", ms.checked_add(1)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn next_entry_id_steps_the_sequence() {
        assert_eq!(next_entry_id("1700-3").as_deref(), Some("1700-4"));
        assert_eq!(
            next_entry_id(&format!("5-{}", u64::MAX)).as_deref(),
            Some("6-0")
        );
        assert_eq!(next_entry_id("nonsense"), None);
    }

    #[test]
    fn xrange_replies_decode_in_order_with_payload_less_entries_kept() {
        let entry =
            |id: &str, fields: Vec<Value>| Value::Array(vec![bulk(id), Value::Array(fields)]);
        let reply = Value::Array(vec![
            entry("1-0", vec![bulk("event"), bulk("a")]),
            entry("1-1", vec![bulk("other"), bulk("x")]),
            entry("1-2", vec![bulk("event"), bulk("b")]),
        ]);
        let got = parse_xrange(reply).unwrap();
        let ids: Vec<&str> = got.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["1-0", "1-1", "1-2"]);
        assert_eq!(bytes_field(&got[0], "event").as_deref(), Some(&b"a"[..]));
        assert_eq!(bytes_field(&got[1], "event"), None);
        assert_eq!(bytes_field(&got[2], "event").as_deref(), Some(&b"b"[..]));
        assert!(matches!(
            parse_xrange(Value::Int(3)),
            Err(QueueError::BadReply(_))
        ));
    }
}
