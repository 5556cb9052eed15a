//! What a queue backend hands the worker: events of one coupon in queue
//! order, with the entries read among them that are not events of it.

use crate::domain::{CouponId, CouponIssueEvent, QueuedEvent};

/// An entry that does not decode as an event of its queue's coupon; it goes
/// to the dead-letter queue and never blocks the entries behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Its place in the queue (stream entry id or `partition:offset`).
    pub position: String,
    /// Kafka: the message key, kept on the dead letter.
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub reason: String,
}

/// Events of one coupon in queue order, and the rejects read with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub events: Vec<QueuedEvent>,
    pub rejects: Vec<Reject>,
}

/// Decodes a queue entry as an event, of `coupon` when one is expected
/// (a coupon's Redis stream); the error is the dead letter's reason.
pub fn decode(payload: &[u8], coupon: Option<CouponId>) -> Result<CouponIssueEvent, String> {
    let event = CouponIssueEvent::from_json(payload).map_err(|e| e.to_string())?;
    match coupon {
        Some(c) if c != event.coupon_id => Err(format!(
            "event of coupon {} in the stream of coupon {c}",
            event.coupon_id
        )),
        _ => Ok(event),
    }
}
