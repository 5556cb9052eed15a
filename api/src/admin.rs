//! Operator endpoints, behind the admin bearer token.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Datelike, Utc};
use common::db::{self, NewCoupon};
use common::domain::QueueType;
use common::switch::{self, Epoch, SwitchError};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::active_queue::Switched;
use crate::error::{AdminJsonRefusals, ApiError, ErrorBody};
use crate::extract::{bearer, ApiJson};
use crate::state::AppState;

/// Body of `POST /api/admin/coupons`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCoupon {
    /// Shown to people; surrounding blanks are trimmed.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"\S",
        example = "noon sale"
    )]
    pub name: String,
    /// Units to issue; also the initial stock.
    #[schema(minimum = 0, maximum = 100_000_000, example = 100)]
    #[serde(deserialize_with = "integer")]
    pub quantity: i64,
    /// Requests processed before this time are refused (RFC 3339, years 1000 to 9999).
    #[schema(pattern = "^[1-9]")]
    pub issue_starts_at: Option<DateTime<Utc>>,
    /// Requests processed after this time are refused; after `issueStartsAt`.
    #[schema(pattern = "^[1-9]")]
    pub issue_ends_at: Option<DateTime<Utc>>,
}

/// An integer, also when written `100.0` (JSON Schema counts that as an
/// integer, and so do clients that only have floats).
fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_i64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                .map(|f| f as i64)
        })
        .ok_or_else(|| D::Error::custom(format!("expected an integer, got {n}")))
}

/// Whether a MySQL `DATETIME` holds this time (years 1000 to 9999); outside
/// that range MariaDB would store NULL (no window at all) and MySQL refuse.
fn storable(t: Option<DateTime<Utc>>) -> bool {
    t.is_none_or(|t| (1000..=9999).contains(&t.year()))
}

/// Most units one coupon may carry.
pub const MAX_QUANTITY: i64 = 100_000_000;

/// Create a coupon with its full quantity in stock.
#[utoipa::path(
    post,
    path = "/api/admin/coupons",
    tag = "admin",
    security(("adminToken" = [])),
    request_body = CreateCoupon,
    responses(
        (status = 201, description = "Created", body = db::Coupon),
        (status = 400, description = "Invalid name, quantity, window or JSON syntax", body = ErrorBody),
        AdminJsonRefusals,
        (status = 422, description = "Body does not match the schema", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn create_coupon(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<ApiJson<CreateCoupon>, ApiError>,
) -> Result<(StatusCode, Json<db::Coupon>), ApiError> {
    authorize(&state, &headers)?;
    let ApiJson(body) = body?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 255 {
        return Err(ApiError::bad_request(
            "INVALID_NAME",
            "name must be 1 to 255 characters",
        ));
    }
    if !(0..=MAX_QUANTITY).contains(&body.quantity) {
        return Err(ApiError::bad_request(
            "INVALID_QUANTITY",
            format!("quantity must be between 0 and {MAX_QUANTITY}"),
        ));
    }
    if !storable(body.issue_starts_at) || !storable(body.issue_ends_at) {
        return Err(ApiError::bad_request(
            "INVALID_WINDOW",
            "issueStartsAt and issueEndsAt must fall in the years 1000 to 9999 (UTC)",
        ));
    }
    if let (Some(s), Some(e)) = (body.issue_starts_at, body.issue_ends_at) {
        if e <= s {
            return Err(ApiError::bad_request(
                "INVALID_WINDOW",
                "issueEndsAt must be after issueStartsAt",
            ));
        }
    }
    let created = db::insert_coupon(
        &state.pool,
        &NewCoupon {
            name: name.to_string(),
            quantity: body.quantity as i32,
            issue_starts_at: body.issue_starts_at,
            issue_ends_at: body.issue_ends_at,
        },
    )
    .await?;
    state.coupons.insert(created.coupon_id, body.quantity);
    tracing::info!(
        coupon_id = created.coupon_id,
        quantity = body.quantity,
        "coupon created"
    );
    Ok((StatusCode::CREATED, Json(created)))
}

/// Checks `Authorization: Bearer <ADMIN_TOKEN>` in constant time.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let expected = state.admin_token.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "ADMIN_DISABLED",
            "admin endpoints are disabled: ADMIN_TOKEN is not set",
        )
    })?;
    let given = bearer(headers).unwrap_or("");
    // Constant time: timing does not reveal how much of a guess was right
    // (only its length, which is not secret enough to matter).
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// Body of `PUT /api/admin/queue`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchQueue {
    /// The queue new requests go to from now on.
    #[serde(rename = "type")]
    pub queue_type: QueueType,
}

/// The active queue and how far its switch has taken effect.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueAnswer {
    /// Where new requests go.
    #[serde(rename = "type")]
    pub queue_type: QueueType,
    /// Numbered from 1; each switch starts the next. Results record the
    /// epoch their request was accepted in (`queueEpoch`).
    #[schema(minimum = 1)]
    pub epoch: i64,
    /// When this queue became the active one.
    pub since: DateTime<Utc>,
    /// `start`, `switch` or `fallback`.
    pub reason: String,
    /// The queue before it; `null` in the first epoch.
    pub previous: Option<QueueType>,
    /// When nothing more could enter the previous queue unseen: off Redis,
    /// once every coupon's fence was raised (within the switch call); off
    /// Kafka, once every live api followed and the topic's watermarks were
    /// recorded. `null` until then (a next switch waits for it).
    pub settled_at: Option<DateTime<Utc>>,
    /// Live api instances and the epoch each enqueues into.
    pub apis: Vec<ApiInstance>,
    /// `PUT` only: whether this call changed the active queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
}

/// One api instance following the record.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiInstance {
    pub instance: String,
    pub followed_epoch: i64,
}

async fn queue_answer(state: &AppState, epoch: Epoch) -> Result<QueueAnswer, ApiError> {
    let apis = switch::live_instances(&state.pool)
        .await?
        .into_iter()
        .map(|(instance, followed_epoch)| ApiInstance {
            instance,
            followed_epoch,
        })
        .collect();
    Ok(QueueAnswer {
        queue_type: epoch.queue_type,
        epoch: epoch.epoch,
        since: epoch.started_at,
        previous: epoch.previous_queue(),
        settled_at: epoch.settled_at,
        reason: epoch.reason,
        apis,
        changed: None,
    })
}

/// The active queue (no token needed: it holds nothing secret).
#[utoipa::path(
    get,
    path = "/api/admin/queue",
    tag = "admin",
    responses(
        (status = 200, description = "The active queue", body = QueueAnswer),
        (status = 404, description = "No queue recorded yet (no api has started on this database)", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    )
)]
pub async fn active_queue(State(state): State<AppState>) -> Result<Json<QueueAnswer>, ApiError> {
    let epoch = switch::active(&state.pool)
        .await?
        .ok_or_else(|| ApiError::not_found("no active queue recorded yet"))?;
    // Settling is checked on reads too, so the answer shows it as soon as
    // it is true.
    let epoch = switch::settle(&state.pool, state.queue.queues(), &epoch)
        .await
        .unwrap_or(epoch);
    Ok(Json(queue_answer(&state, epoch).await?))
}

/// Switch the active queue of the whole service. Requests accepted from
/// now on go to the new queue; each coupon's requests still in the old one
/// are processed first.
#[utoipa::path(
    put,
    path = "/api/admin/queue",
    tag = "admin",
    security(("adminToken" = [])),
    request_body = SwitchQueue,
    responses(
        (status = 200, description = "Switched (`changed: true`) or already active", body = QueueAnswer),
        (status = 400, description = "JSON syntax", body = ErrorBody),
        AdminJsonRefusals,
        (status = 409, description = "`SWITCH_IN_PROGRESS`: the previous switch has not settled yet (off Kafka: some live api does not follow it yet); nothing changed", body = ErrorBody),
        (status = 422, description = "`type` is not `redis` or `kafka`", body = ErrorBody),
        (status = 503, description = "`QUEUE_UNAVAILABLE`: the target queue does not answer; nothing changed. Or the database is unavailable", body = ErrorBody),
    )
)]
pub async fn switch_queue(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<ApiJson<SwitchQueue>, ApiError>,
) -> Result<Json<QueueAnswer>, ApiError> {
    authorize(&state, &headers)?;
    let ApiJson(body) = body?;
    let (epoch, changed) = match state.queue.switch_to(body.queue_type, "switch").await {
        Ok(Switched::To(e)) => (e, true),
        Ok(Switched::Already(e)) => (e, false),
        Err(SwitchError::Db(e)) => return Err(e.into()),
        Err(SwitchError::Unreachable { queue, error }) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "QUEUE_UNAVAILABLE",
                format!("{queue} does not answer ({error}); the active queue is unchanged"),
            ))
        }
        Err(e @ (SwitchError::NotSettled(_) | SwitchError::Concurrent(_))) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "SWITCH_IN_PROGRESS",
                format!("{e}; nothing changed, try again in a second"),
            ))
        }
    };
    let mut answer = queue_answer(&state, epoch).await?;
    answer.changed = Some(changed);
    Ok(Json(answer))
}
