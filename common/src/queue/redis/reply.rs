//! Decoding of stream replies (`XRANGE`) and stream-id arithmetic.

use redis::Value;

use super::{RawEntry, StreamEntry};
use crate::error::QueueError;

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn malformed(what: &str) -> QueueError {
    QueueError::BadReply(format!("XRANGE: {what}"))
}

pub(super) fn parse_entries(reply: Value) -> Result<Vec<StreamEntry>, QueueError> {
    let Value::Array(items) = reply else {
        return Err(malformed("not an array"));
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(pair) = item else {
                return Err(malformed("entry is not an array"));
            };
            let [id, fields] =
                <[Value; 2]>::try_from(pair).map_err(|_| malformed("entry shape"))?;
            let id = bytes(&id)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| malformed("entry id"))?;
            let flat = match fields {
                Value::Array(f) => f,
                Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                _ => return Err(malformed("fields")),
            };
            let fields = flat
                .chunks(2)
                .filter_map(|kv| match kv {
                    [k, v] => Some((String::from_utf8_lossy(&bytes(k)?).into_owned(), bytes(v)?)),
                    _ => None,
                })
                .collect();
            Ok((id, fields))
        })
        .collect()
}

pub(super) fn parse_xrange(reply: Value) -> Result<Vec<RawEntry>, QueueError> {
    Ok(parse_entries(reply)?
        .into_iter()
        .map(|(id, fields)| RawEntry {
            id,
            payload: fields
                .into_iter()
                .find(|(k, _)| k == "event")
                .map(|(_, v)| v),
        })
        .collect())
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
    fn xrange_replies_decode_in_order() {
        let entry = |id: &str, payload: &str| {
            Value::Array(vec![
                Value::BulkString(id.as_bytes().to_vec()),
                Value::Array(vec![
                    Value::BulkString(b"event".to_vec()),
                    Value::BulkString(payload.as_bytes().to_vec()),
                ]),
            ])
        };
        let reply = Value::Array(vec![entry("1-0", "a"), entry("1-1", "b")]);
        let got = parse_xrange(reply).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].id, "1-1");
        assert_eq!(got[1].payload.as_deref(), Some(&b"b"[..]));
        assert!(parse_xrange(Value::Int(3)).is_err());
    }
}
