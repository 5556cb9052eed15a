//! Extractors whose rejections use the api's JSON error shape.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use common::domain::CouponId;

use crate::error::ApiError;

/// `axum::Json` with JSON errors.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Path` with JSON errors.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query` with JSON errors.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The `{couponId}` of a path, parsed: a malformed one is a `400
/// INVALID_COUPON_ID`.
#[derive(Debug, Clone, Copy)]
pub struct CouponPath(pub CouponId);

impl<S: Send + Sync> FromRequestParts<S> for CouponPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ApiPath(raw) = ApiPath::<String>::from_request_parts(parts, state).await?;
        raw.parse()
            .map(CouponPath)
            .map_err(|e| ApiError::bad_request("INVALID_COUPON_ID", format!("couponId {e}")))
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme's case does not
/// matter, RFC 7235); `None` without one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_matches(' '))
}
