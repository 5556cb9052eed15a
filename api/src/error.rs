//! The api's one error type. Every error answer has the same JSON shape,
//! `{"error": {"code": "...", "message": "..."}}`; internals are logged, not
//! shown.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
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
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            internal: None,
            request_id: None,
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
        res
    }
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
}
