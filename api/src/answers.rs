//! The bodies of the api's successful answers (errors: [`crate::error`]).
//! Each is a plain struct with its OpenAPI schema, so a new field is one
//! line here and shows up in `/api-docs/openapi.json` by itself.

use common::domain::IssueStatus;
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
}

/// Answer for a request that is accepted but not processed yet.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingResult {
    pub request_id: Uuid,
    /// Always `PENDING`.
    pub status: IssueStatus,
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
