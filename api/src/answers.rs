//! The bodies of the api's successful answers (errors: [`crate::error`]).
//! Each is a plain struct with its OpenAPI schema, so a new field is one
//! line here and shows up in `/api-docs/openapi.json` by itself.

use common::db;
use common::domain::IssueStatus;
use common::domain::QueueType;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Answer to an accepted issue request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssueAccepted {
    pub request_id: Uuid,
    pub coupon_id: i64,
    pub user_id: i64,
    /// Always `PENDING`.
    pub status: IssueStatus,
    /// Place in the queue: Redis entry id or Kafka `partition:offset`.
    pub queue_position: String,
    /// The queue the request went to (the active one; see `GET /api/admin/queue`).
    pub queue: QueueType,
    /// Accepted requests that will be processed before this one: in Redis
    /// mode those of its coupon's queue, in Kafka mode its partition's
    /// unprocessed messages before its offset. `null` only when the queue's
    /// progress cannot be read.
    #[schema(minimum = 0)]
    pub ahead: Option<u64>,
    /// `ahead` over the queue's processing rate of the last 10 s, in
    /// milliseconds; `null` while no rate is known (nothing processed in
    /// that window).
    #[schema(minimum = 0)]
    pub eta_ms: Option<u64>,
}

/// Answer to a repeat click (`200`): the user's pending or winning request
/// for this coupon; nothing was queued or written.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssueRepeat {
    /// The `requestId` of the user's request (the first click's).
    pub request_id: Uuid,
    pub coupon_id: i64,
    pub user_id: i64,
    /// `PENDING` or `SUCCESS`.
    pub status: IssueStatus,
    /// Its place in the queue; `null` while its queue has not acknowledged
    /// it yet.
    pub queue_position: Option<String>,
    /// The queue it went to; `null` with `queuePosition`.
    pub queue: Option<QueueType>,
    /// As in the `202`, now; `0` once it won; `null` when its queue's
    /// progress cannot be read or its place is not known yet.
    #[schema(minimum = 0)]
    pub ahead: Option<u64>,
    #[schema(minimum = 0)]
    pub eta_ms: Option<u64>,
    /// Always `true`.
    pub repeat: bool,
}

/// Answer for a request that is accepted but not processed yet.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingResult {
    pub request_id: Uuid,
    /// Always `PENDING`.
    pub status: IssueStatus,
    /// As in the `202` of the issue request, now; it only falls. `null`
    /// when this api instance did not accept the request (another instance
    /// did, or it restarted since) or never saw it.
    #[schema(minimum = 0)]
    pub ahead: Option<u64>,
    /// As in the `202` of the issue request, now.
    #[schema(minimum = 0)]
    pub eta_ms: Option<u64>,
}

/// A coupon with its queue.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouponAnswer {
    #[serde(flatten)]
    pub coupon: db::Coupon,
    /// Accepted requests not processed yet (as `queue-size`); `null` when
    /// the queue does not answer.
    #[schema(minimum = 0)]
    pub queue_length: Option<u64>,
    /// What `queueLength` counts: `coupon` (Redis) or `partition` (Kafka).
    pub queue_scope: Option<String>,
    /// Requests processed per second from this coupon's queue over the last
    /// 10 s; `null` when none were (or the queue does not answer).
    pub processing_rate: Option<f64>,
}

/// Requests not yet processed for a coupon.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueSizeAnswer {
    pub coupon_id: i64,
    pub queue_size: u64,
    /// `coupon` (Redis: this coupon's requests) or `partition` (Kafka: the
    /// lag of the coupon's partition, which other coupons may share).
    #[schema(example = "coupon")]
    pub scope: String,
}
