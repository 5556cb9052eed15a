//! The api's one error type. Every error answer has the same JSON shape,
//! `{"error": {"code": "...", "message": "..."}}`; internals are logged, not
//! shown.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::domain::UserId;
use common::error::{DbError, QueueError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The refusals every admin call with a JSON body may answer (the token and
/// the body's envelope), documented once for all of them.
#[derive(utoipa::IntoResponses)]
pub enum AdminJsonRefusals {
    #[response(status = 401, description = "Missing or wrong admin token")]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "Admin endpoints are disabled (no ADMIN_TOKEN)"
    )]
    Disabled(ErrorBody),
    #[response(status = 413, description = "Body over 16 kB")]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "Content-Type is not application/json")]
    NotJson(ErrorBody),
}

/// The refusals of every read of one coupon by id.
#[derive(utoipa::IntoResponses)]
pub enum CouponRefusals {
    #[response(status = 400, description = "Malformed coupon id")]
    BadId(ErrorBody),
    #[response(status = 404, description = "No such coupon")]
    Unknown(ErrorBody),
    #[response(
        status = 503,
        description = "What the answer is read from is unavailable: the database (the coupon), or the queue (its size)"
    )]
    Unavailable(ErrorBody),
}

/// What went wrong, for clients (`code`) and people (`message`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// Stable, machine-readable: `INVALID_COUPON_ID`, `NOT_FOUND`, `QUEUE_UNAVAILABLE`, ...
    #[schema(example = "INVALID_COUPON_ID")]
    pub code: String,
    pub message: String,
    /// Only with `QUEUE_OUTCOME_UNKNOWN`: the request may still be processed
    /// under this id; look it up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<uuid::Uuid>,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Logged for 5xx answers, never sent.
    internal: Option<String>,
    /// Set when the request may still be processed under this id.
    request_id: Option<uuid::Uuid>,
    /// `429`: whole seconds until a retry can pass (`Retry-After`).
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            internal: None,
            request_id: None,
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    /// The coupon's stock is 0: nothing was enqueued.
    pub fn sold_out(coupon: common::domain::CouponId) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "SOLD_OUT",
            format!("coupon {coupon} is sold out; the request was not queued"),
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "a valid admin bearer token is required",
        )
    }

    /// `401 UNAUTHENTICATED`: the issue call or a lookup needs a valid user
    /// token (`AUTH_JWT_*` is set) and `why` says what was wrong with it.
    pub fn unauthenticated(why: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", why)
    }

    /// `403 USER_MISMATCH`: the query's `userId` is not the token's user.
    pub fn user_mismatch(query: UserId, token: UserId) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "USER_MISMATCH",
            format!("userId {query} is not the user of the token ({token}); leave userId out or send the same"),
        )
    }

    /// `429 RATE_LIMITED`, with `Retry-After` in whole seconds (at least 1).
    pub fn rate_limited(scope: &str, retry_after: Duration) -> Self {
        let secs = whole_seconds(retry_after);
        let mut err = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            format!("too many requests from this {scope}; retry in {secs} s"),
        );
        err.retry_after = Some(secs);
        err
    }

    /// The answer for a bare status (405, 413, ... produced by the framework).
    pub fn from_status(status: StatusCode) -> Self {
        let (code, message) = match status {
            StatusCode::NOT_FOUND => ("NOT_FOUND", "no such resource"),
            StatusCode::METHOD_NOT_ALLOWED => {
                ("METHOD_NOT_ALLOWED", "method not allowed on this resource")
            }
            StatusCode::PAYLOAD_TOO_LARGE => ("PAYLOAD_TOO_LARGE", "request body too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "UNSUPPORTED_MEDIA_TYPE",
                "expected Content-Type: application/json",
            ),
            StatusCode::REQUEST_TIMEOUT => ("REQUEST_TIMEOUT", "request took too long"),
            StatusCode::URI_TOO_LONG => ("URI_TOO_LONG", "request path too long"),
            s if s.is_server_error() => ("INTERNAL_ERROR", "internal error"),
            _ => ("BAD_REQUEST", "bad request"),
        };
        Self::new(status, code, message)
    }

    /// `500`: a fault on this side; `detail` is logged, not shown.
    fn internal_error(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "internal error",
        )
        .internal(detail)
    }

    fn internal(mut self, detail: impl std::fmt::Display) -> Self {
        self.internal = Some(detail.to_string());
        self
    }
}

impl ApiError {
    /// The answer when the queue did not confirm an event. If the event may
    /// have been queued anyway (the broker died before answering), the
    /// answer carries its request id so the client can look the outcome up.
    pub fn enqueue_failed(e: QueueError, request_id: uuid::Uuid) -> Self {
        if e.is_uncertain() {
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "QUEUE_OUTCOME_UNKNOWN",
                "the queue did not confirm this request; it may still be processed: \
                 look it up with GET /api/coupons/issue-requests/{requestId}",
            )
            .internal(e);
            err.request_id = Some(request_id);
            err
        } else {
            e.into()
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        if e.is_unavailable() {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "QUEUE_UNAVAILABLE",
                "the queue cannot take requests right now; nothing was enqueued, try again",
            )
            .internal(e)
        } else {
            ApiError::internal_error(e)
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        if e.is_transient() {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "DATABASE_UNAVAILABLE",
                "the database is unavailable; try again",
            )
            .internal(e)
        } else {
            ApiError::internal_error(e)
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request("INVALID_PATH", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("INVALID_QUERY", r.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = match status {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
            StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
            _ => "INVALID_BODY",
        };
        let status = if status.is_client_error() {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(detail) = &self.internal {
            if self.status.is_server_error() {
                tracing::error!(code = self.code, error = %detail, "request failed");
            }
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                request_id: self.request_id,
            },
        };
        let mut res = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// `wait` rounded up to whole seconds, at least 1: a client that waits
/// `Retry-After` seconds is let through.
fn whole_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// Middleware: turns any error answer that is not JSON yet (the framework's
/// own 404/405/413, timeouts) into the JSON error shape.
pub async fn json_errors(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return res;
    }
    let mut new = ApiError::from_status(status).into_response();
    if let Some(allow) = res.headers().get(header::ALLOW) {
        new.headers_mut().insert(header::ALLOW, allow.clone());
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_down_queue_is_503_and_a_fault_on_this_side_is_500() {
        let status = |e: QueueError| ApiError::from(e).status;
        assert_eq!(
            status(QueueError::Unavailable("refused".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(QueueError::BadReply("XLEN".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let unknown =
            ApiError::enqueue_failed(QueueError::Uncertain("lost".into()), uuid::Uuid::nil());
        assert_eq!(unknown.code, "QUEUE_OUTCOME_UNKNOWN");
        assert_eq!(
            ApiError::from(DbError::Sqlx(sqlx::Error::PoolTimedOut)).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ApiError::from(DbError::StockChanged(1.try_into().unwrap())).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn retry_after_is_the_wait_rounded_up_to_a_whole_second_and_never_0() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
        let res = ApiError::rate_limited("user", Duration::from_millis(2500)).into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[header::RETRY_AFTER], "3");
    }
}
