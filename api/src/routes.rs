//! Handlers and the router.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use chrono::{DateTime, Utc};
use common::db::{self, NewCoupon};
use common::domain::{CouponId, CouponIssueEvent, IssueStatus, UserId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use uuid::Uuid;

use crate::cache::Availability;
use crate::error::{json_errors, ApiError};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// Largest request body accepted (admin JSON is tiny).
pub const BODY_LIMIT: usize = 16 * 1024;

/// The api's routes with their middleware.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/coupons/{coupon_id}/issue", post(issue))
        .route(
            "/api/coupons/issue-requests/{request_id}",
            get(issue_result),
        )
        .route("/api/coupons/{coupon_id}", get(coupon))
        .route("/api/coupons/{coupon_id}/queue-size", get(queue_size))
        .route("/api/admin/coupons", post(create_coupon))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::map_response(json_errors))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such resource")
}

fn coupon_id(raw: &str) -> Result<CouponId, ApiError> {
    raw.parse()
        .map_err(|e| ApiError::bad_request("INVALID_COUPON_ID", format!("couponId {e}")))
}

#[derive(Debug, Deserialize)]
struct IssueParams {
    #[serde(rename = "userId")]
    user_id: Option<String>,
}

/// Answer to an accepted issue request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssueAccepted {
    pub request_id: Uuid,
    pub coupon_id: i64,
    pub user_id: i64,
    pub status: IssueStatus,
    pub queue_position: String,
}

/// `POST /api/coupons/{couponId}/issue?userId=`: validate, check the coupon
/// exists and is not sold out (cache), enqueue; `202` only once the queue
/// acknowledged.
#[tracing::instrument(skip_all, fields(coupon_id = %raw_coupon, request_id))]
async fn issue(
    State(state): State<AppState>,
    ApiPath(raw_coupon): ApiPath<String>,
    ApiQuery(params): ApiQuery<IssueParams>,
) -> Result<(StatusCode, Json<IssueAccepted>), ApiError> {
    let coupon = coupon_id(&raw_coupon)?;
    let user: UserId = params
        .user_id
        .as_deref()
        .ok_or_else(|| {
            ApiError::bad_request("MISSING_USER_ID", "query parameter userId is required")
        })?
        .parse()
        .map_err(|e| ApiError::bad_request("INVALID_USER_ID", format!("userId {e}")))?;
    match state.coupons.get(coupon).await? {
        Some(Availability::Open) => {}
        Some(Availability::SoldOut) => {
            metrics::counter!("coupon_issue_requests_total", "outcome" => "sold_out").increment(1);
            return Err(ApiError::sold_out(coupon));
        }
        None => {
            metrics::counter!("coupon_issue_requests_total", "outcome" => "unknown_coupon")
                .increment(1);
            return Err(ApiError::not_found(format!(
                "coupon {coupon} does not exist"
            )));
        }
    }
    let event = CouponIssueEvent::new(coupon, user);
    tracing::Span::current().record("request_id", tracing::field::display(event.event_id));
    let position = state.producer.enqueue(&event).await.map_err(|e| {
        metrics::counter!("coupon_issue_requests_total", "outcome" => "queue_unavailable")
            .increment(1);
        ApiError::enqueue_failed(e, event.event_id)
    })?;
    metrics::counter!("coupon_issue_requests_total", "outcome" => "accepted").increment(1);
    Ok((
        StatusCode::ACCEPTED,
        Json(IssueAccepted {
            request_id: event.event_id,
            coupon_id: coupon.get(),
            user_id: user.get(),
            status: IssueStatus::Pending,
            queue_position: position,
        }),
    ))
}

/// `GET /api/coupons/issue-requests/{requestId}`: `200` with the result, or
/// `202` while it is pending.
async fn issue_result(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    let request_id = Uuid::parse_str(&raw)
        .map_err(|_| ApiError::bad_request("INVALID_REQUEST_ID", "requestId must be a UUID"))?;
    Ok(match db::find_result(&state.pool, request_id).await? {
        Some(result) => (StatusCode::OK, Json(result)).into_response(),
        None => (
            StatusCode::ACCEPTED,
            Json(json!({ "requestId": request_id, "status": IssueStatus::Pending })),
        )
            .into_response(),
    })
}

/// `GET /api/coupons/{couponId}`: total, remaining stock, issued count, window.
async fn coupon(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<db::Coupon>, ApiError> {
    let id = coupon_id(&raw)?;
    db::find_coupon(&state.pool, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("coupon {id} does not exist")))
}

/// `GET /api/coupons/{couponId}/queue-size`.
async fn queue_size(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = coupon_id(&raw)?;
    if !state.coupons.contains(id).await? {
        return Err(ApiError::not_found(format!("coupon {id} does not exist")));
    }
    let size = state.producer.queue_size(id).await?;
    Ok(Json(
        json!({ "couponId": id.get(), "queueSize": size.size, "scope": size.scope }),
    ))
}

/// Body of `POST /api/admin/coupons`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCoupon {
    pub name: String,
    pub quantity: i64,
    pub issue_starts_at: Option<DateTime<Utc>>,
    pub issue_ends_at: Option<DateTime<Utc>>,
}

/// Most units one coupon may carry.
pub const MAX_QUANTITY: i64 = 100_000_000;

/// `POST /api/admin/coupons` (admin token): creates a coupon, `201`.
async fn create_coupon(
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
    state.coupons.insert(created.coupon_id);
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
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// Compares without an early exit, so timing does not reveal how much of a
/// guess was right (only the length, which is not secret enough to matter).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "UP" }))
}

/// `200` when MySQL and the queue both answer, else `503` naming what is down.
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let (db, queue) = tokio::join!(db::ping(&state.pool), state.producer.ping());
    let up = |ok: bool| if ok { "UP" } else { "DOWN" };
    let ok = db.is_ok() && queue.is_ok();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ok { "READY" } else { "NOT_READY" },
            "database": up(db.is_ok()),
            "queue": up(queue.is_ok()),
        })),
    )
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison_needs_every_byte() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-tokem", b"secret-token"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
        assert!(!constant_time_eq(b"", b"secret-token"));
    }
}
