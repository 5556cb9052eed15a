//! Domain types: ids, queues and epochs, the queued issue event and the
//! result statuses. The bottom layer: it depends on no other module of this
//! crate (the SQL and schema conversions of these types live in `db`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version of the [`CouponIssueEvent`] wire format this build writes and reads.
pub const EVENT_VERSION: u32 = 1;

/// The queue epoch a new deployment starts in (see `common::switch`).
pub const FIRST_EPOCH: u64 = 1;

/// Which broker carries issue events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Redis,
    Kafka,
}

impl QueueType {
    /// Both queues, in the order `APP_QUEUE_TYPE` lists them.
    pub const ALL: [QueueType; 2] = [QueueType::Redis, QueueType::Kafka];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Redis => "redis",
            QueueType::Kafka => "kafka",
        }
    }

    /// The queue a switch from this one goes to.
    pub fn other(self) -> Self {
        match self {
            QueueType::Redis => QueueType::Kafka,
            QueueType::Kafka => QueueType::Redis,
        }
    }
}

impl fmt::Display for QueueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for QueueType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|q| q.as_str() == s)
            .ok_or_else(|| format!("unknown queue type {s:?}: redis or kafka"))
    }
}

/// Why an id from the outside world was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must be a positive integer, got {0:?}")]
    NotPositiveInteger(String),
}

fn parse_positive(raw: &str) -> Result<i64, IdError> {
    // Only plain ASCII digits: no sign, no whitespace, no leading '+'.
    if raw.is_empty() || raw.len() > 19 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IdError::NotPositiveInteger(truncate(raw)));
    }
    match raw.parse::<i64>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(IdError::NotPositiveInteger(truncate(raw))),
    }
}

fn truncate(raw: &str) -> String {
    raw.chars().take(40).collect()
}

macro_rules! positive_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "i64", into = "i64")]
        pub struct $name(i64);

        impl $name {
            /// The id as stored in MySQL.
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl TryFrom<i64> for $name {
            type Error = IdError;
            fn try_from(v: i64) -> Result<Self, IdError> {
                if v > 0 {
                    Ok(Self(v))
                } else {
                    Err(IdError::NotPositiveInteger(v.to_string()))
                }
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> i64 {
                id.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                parse_positive(s).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

positive_id!(
    /// A coupon id: a positive 64-bit integer, the `coupon.coupon_id` key.
    CouponId
);
positive_id!(
    /// A user id: a positive 64-bit integer.
    UserId
);

/// One accepted issue request, as it travels through the queue (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CouponIssueEvent {
    /// The request id handed to the client (UUID v7, so it sorts by time).
    pub event_id: Uuid,
    pub coupon_id: CouponId,
    pub user_id: UserId,
    #[serde(serialize_with = "rfc3339")]
    pub requested_at: DateTime<Utc>,
    /// The queue epoch the request was accepted in (see `common::switch`);
    /// events written before epochs existed belong to the first.
    #[serde(default = "first_epoch")]
    pub epoch: u64,
    /// Wire format version; readers refuse versions they do not know.
    pub version: u32,
}

fn first_epoch() -> u64 {
    FIRST_EPOCH
}

/// A time as chrono's own `Serialize` writes it (RFC 3339 with `Z`, the
/// fraction in 0, 3, 6 or 9 digits), handed to the serializer whole: chrono
/// hands it over in a dozen pieces, and serde_json checks each for escapes
/// on its own (about 1,400 instructions more per event on the accept path).
fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

impl CouponIssueEvent {
    /// A new event for a request accepted now, in the first epoch.
    pub fn new(coupon_id: CouponId, user_id: UserId) -> Self {
        Self::in_epoch(coupon_id, user_id, FIRST_EPOCH)
    }

    /// A new event for a request accepted now, in queue epoch `epoch`.
    pub fn in_epoch(coupon_id: CouponId, user_id: UserId, epoch: u64) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            coupon_id,
            user_id,
            requested_at: Utc::now(),
            epoch,
            version: EVENT_VERSION,
        }
    }

    /// Serialises the event for the queue.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("event serialises")
    }

    /// Reads an event from a queue payload, refusing unknown versions.
    pub fn from_json(payload: &[u8]) -> Result<Self, DecodeError> {
        let event: Self =
            serde_json::from_slice(payload).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if event.version != EVENT_VERSION {
            return Err(DecodeError::UnknownVersion(event.version));
        }
        Ok(event)
    }
}

/// Why a queue payload could not be turned into an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error("unknown event version {0}")]
    UnknownVersion(u32),
}

/// An event together with its place in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    pub event: CouponIssueEvent,
    /// The queue it was read from.
    pub queue: QueueType,
    /// `1700000000000-3` (Redis stream entry id) or `2:1534` (Kafka partition:offset).
    pub position: String,
}

impl QueuedEvent {
    /// Where the request stands in its coupon's accept order: its epoch,
    /// then its place in that epoch's queue (see [`accept_order_key`]).
    pub fn accept_order(&self) -> Option<AcceptOrder> {
        accept_order_key(self.event.epoch, &self.position)
    }
}

/// The outcome of an issue request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IssueStatus {
    /// Accepted but not processed yet; never stored.
    Pending,
    Success,
    ValidationFailed,
    DuplicateRequest,
    OutOfStock,
    BusinessError,
    SystemError,
}

impl IssueStatus {
    /// Every final status, in the order reports print them.
    pub const FINAL: [IssueStatus; 6] = [
        IssueStatus::Success,
        IssueStatus::ValidationFailed,
        IssueStatus::DuplicateRequest,
        IssueStatus::OutOfStock,
        IssueStatus::BusinessError,
        IssueStatus::SystemError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IssueStatus::Pending => "PENDING",
            IssueStatus::Success => "SUCCESS",
            IssueStatus::ValidationFailed => "VALIDATION_FAILED",
            IssueStatus::DuplicateRequest => "DUPLICATE_REQUEST",
            IssueStatus::OutOfStock => "OUT_OF_STOCK",
            IssueStatus::BusinessError => "BUSINESS_ERROR",
            IssueStatus::SystemError => "SYSTEM_ERROR",
        }
    }
}

impl fmt::Display for IssueStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IssueStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [IssueStatus::Pending]
            .into_iter()
            .chain(IssueStatus::FINAL)
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown issue status {s:?}"))
    }
}

/// The final result of one processed request, as stored in `coupon_issue_result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct IssueResult {
    // Stored as its text form, `CHAR(36)`.
    #[sqlx(try_from = "String")]
    pub request_id: Uuid,
    pub coupon_id: i64,
    pub user_id: i64,
    pub status: IssueStatus,
    /// Why the request was refused (absent for `SUCCESS`).
    pub reason: Option<String>,
    /// Place in the queue: Redis entry id `1700000000000-3` or Kafka `partition:offset`.
    pub queue_position: String,
    /// The queue the request went through.
    pub queue_type: QueueType,
    /// The queue epoch it was accepted in: with `queuePosition`, its place in
    /// the coupon's accept order across queue switches.
    pub queue_epoch: i64,
    pub requested_at: DateTime<Utc>,
    pub processed_at: DateTime<Utc>,
}

/// Orders queue positions of one coupon: Redis entry ids (`ms-seq`) and Kafka
/// `partition:offset` both compare as a pair of integers.
pub fn queue_position_key(position: &str) -> Option<(u64, u64)> {
    let (a, b) = position.split_once(['-', ':'])?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A request's place in its coupon's accept order: (epoch, queue position).
pub type AcceptOrder = (u64, (u64, u64));

/// The accept order of one coupon's requests across queue switches: by
/// epoch first (every request of an earlier epoch was accepted before the
/// switch that ended it took effect, and is processed first), then by
/// position within that epoch's queue (a coupon's stream, or its partition).
pub fn accept_order_key(epoch: u64, position: &str) -> Option<AcceptOrder> {
    Some((epoch, queue_position_key(position)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_only_positive_plain_integers() {
        assert_eq!("42".parse::<CouponId>().unwrap().get(), 42);
        assert_eq!(
            "9223372036854775807".parse::<UserId>().unwrap().get(),
            i64::MAX
        );
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            " 1",
            "1.0",
            "abc",
            "9223372036854775808",
            "99999999999999999999999",
            "١٢",
        ] {
            assert!(bad.parse::<CouponId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn an_events_time_is_written_as_chronos_own_serialize_writes_it() {
        let base = DateTime::parse_from_rfc3339("2026-12-07T22:00:10Z")
            .unwrap()
            .with_timezone(&Utc);
        for nanos in [0, 120_000_000, 123_456_000, 123_456_789, 1_500_000_000] {
            let at = base + chrono::Duration::nanoseconds(nanos);
            let mut e = CouponIssueEvent::new(CouponId(7), UserId(9));
            e.requested_at = at;
            let json: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
            let chrono_s = serde_json::to_value(at).unwrap();
            assert_eq!(json["requestedAt"], chrono_s, "{nanos}");
        }
        // A leap second, as chrono keeps it.
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        let mut e = CouponIssueEvent::new(CouponId(7), UserId(9));
        e.requested_at = leap;
        let json: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(json["requestedAt"], serde_json::to_value(leap).unwrap());
    }

    #[test]
    fn events_round_trip_and_refuse_unknown_versions() {
        let e = CouponIssueEvent::new(CouponId(7), UserId(9));
        let back = CouponIssueEvent::from_json(e.to_json().as_bytes()).unwrap();
        assert_eq!(back, e);
        let mut v2 = e.clone();
        v2.version = 2;
        assert_eq!(
            CouponIssueEvent::from_json(v2.to_json().as_bytes()),
            Err(DecodeError::UnknownVersion(2))
        );
        assert!(matches!(
            CouponIssueEvent::from_json(b"{\"eventId\":1}"),
            Err(DecodeError::Malformed(_))
        ));
        let zero_user = e.to_json().replace("\"userId\":9", "\"userId\":0");
        assert!(CouponIssueEvent::from_json(zero_user.as_bytes()).is_err());
    }

    #[test]
    fn statuses_use_their_wire_names() {
        for st in IssueStatus::FINAL {
            assert_eq!(st.as_str().parse::<IssueStatus>().unwrap(), st);
            assert_eq!(
                serde_json::to_string(&st).unwrap(),
                format!("\"{}\"", st.as_str())
            );
        }
    }

    #[test]
    fn queue_positions_order_numerically() {
        assert!(queue_position_key("1700000000000-3") < queue_position_key("1700000000000-10"));
        assert!(queue_position_key("2:99") < queue_position_key("2:1534"));
        assert_eq!(queue_position_key("garbage"), None);
    }
}
