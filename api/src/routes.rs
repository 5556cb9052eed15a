//! Handlers of the issue, lookup and operations endpoints, and the router.
//! Every route is registered through `routes!`, so the OpenAPI document is
//! derived from the handlers' `#[utoipa::path]` annotations.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{middleware, Json, Router};
use common::db;
use common::domain::{IssueResult, IssueStatus};
use common::error::QueueError;
use common::queue::Admitted;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::answers::{CouponAnswer, IssueAccepted, IssueRepeat, PendingResult, QueueSizeAnswer};
use crate::auth::{Caller, Viewer};
use crate::cache::Availability;
use crate::door::Outcome;
use crate::error::{json_errors, ApiError, CouponRefusals, ErrorBody};
use crate::extract::{ApiPath, ApiQuery, CouponPath};
use crate::limits::ClientIp;
use crate::lookup::{self, LookupParams};
use crate::repeat::{self, Repeat};
use crate::sold_out;
use crate::state::AppState;
use crate::{admin, dashboard, openapi};

/// Largest request body accepted (admin JSON is tiny).
pub const BODY_LIMIT: usize = 16 * 1024;

/// Longest time to answer a call, except the held ones ([`held_routes`]).
pub const TIME_LIMIT: Duration = Duration::from_secs(10);

/// Every documented route, with the OpenAPI document they make up.
pub fn api_routes() -> OpenApiRouter<AppState> {
    timed_routes().merge(held_routes())
}

/// The routes whose answers may wait for a result (`waitMs`): they get
/// [`lookup::MAX_WAIT`] more than [`TIME_LIMIT`].
fn held_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(issue_result))
}

/// Every other route, answered within [`TIME_LIMIT`].
fn timed_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(issue))
        .routes(routes!(coupon))
        .routes(routes!(queue_size))
        .routes(routes!(admin::create_coupon))
        .routes(routes!(admin::active_queue, admin::switch_queue))
        .merge(ops::routes())
        .merge(dashboard::routes())
}

/// The full OpenAPI document, as served at [`openapi::OPENAPI_PATH`].
pub fn document() -> utoipa::openapi::OpenApi {
    api_routes().into_openapi()
}

/// The api's routes, the docs page, and their middleware.
pub fn router(state: AppState) -> Router {
    let (timed, mut doc) = timed_routes().split_for_parts();
    let (held, held_doc) = held_routes().split_for_parts();
    doc.merge(held_doc);
    timed
        .merge(openapi::docs(doc))
        .fallback(not_found)
        .layer(time_limit(TIME_LIMIT))
        .merge(held.layer(time_limit(lookup::MAX_WAIT + TIME_LIMIT)))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::map_response(json_errors))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

fn time_limit(limit: Duration) -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limit)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such resource")
}

/// Enqueue an issue request. The door answers in this order: `400`
/// malformed ids → `401`/`403` who the user is (when tokens are required,
/// see `crate::auth`) → `429` rate limits (`crate::limits`) → `404` unknown
/// coupon → `200` a repeat, with the user's request (the repeat gate) →
/// `409` sold out (cache) → enqueue; `202` only once the queue acknowledged
/// it.
#[utoipa::path(
    post,
    path = "/api/coupons/{couponId}/issue",
    tag = "issue",
    security((), ("userToken" = [])),
    params(
        ("couponId" = i64, Path, minimum = 1, description = "Coupon id"),
        ("userId" = i64, Query, minimum = 1, description = "User id. With user tokens required (`AUTH_JWT_*`) the token's `sub` is the user: `userId` may then be left out, and one that differs gets `403 USER_MISMATCH`"),
    ),
    responses(
        (status = 200, description = "A repeat: the user already has a pending or winning request for this coupon; it is answered (`\"repeat\": true`) and nothing is queued or written", body = IssueRepeat),
        (status = 202, description = "Queued; look the result up by `requestId`", body = IssueAccepted),
        (status = 400, description = "Malformed coupon or user id, or no user id", body = ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: the api requires a user token and none valid was sent (`WWW-Authenticate: Bearer`)", body = ErrorBody),
        (status = 403, description = "`USER_MISMATCH`: `userId` is not the token's user", body = ErrorBody),
        (status = 404, description = "No such coupon; nothing enqueued", body = ErrorBody),
        (status = 409, description = "`SOLD_OUT`: the coupon's stock is 0; nothing enqueued", body = ErrorBody),
        (status = 429, description = "`RATE_LIMITED`: over `RATE_LIMIT_PER_USER` or `RATE_LIMIT_PER_IP`; retry after `Retry-After` seconds; nothing enqueued", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Whole seconds to wait, at least 1"))),
        (status = 503, description = "`QUEUE_UNAVAILABLE`: nothing enqueued; `QUEUE_OUTCOME_UNKNOWN` (with `requestId`): it may still be processed", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(coupon_id = %coupon, request_id))]
async fn issue(
    State(state): State<AppState>,
    CouponPath(coupon): CouponPath,
    Caller(user): Caller,
    ClientIp(ip): ClientIp,
) -> Result<Response, ApiError> {
    state.limits.admit(ip, user)?;
    match state.coupons.get(coupon).await? {
        Some(Availability::Open) => {}
        Some(Availability::SoldOut) => {
            // A repeat comes before the sold-out answer: a winner who clicks
            // again is told of the coupon they hold.
            if let Some(entry) = sold_out::entry_of(&state, coupon, user).await {
                if let Repeat::Answer(a) = repeat::answer(&state, coupon, user, entry, None).await {
                    return Ok(a);
                }
            }
            Outcome::SoldOut.count();
            return Err(ApiError::sold_out(coupon));
        }
        None => {
            Outcome::UnknownCoupon.count();
            return Err(ApiError::not_found(format!(
                "coupon {coupon} does not exist"
            )));
        }
    }
    // A stale gate entry is cleared by the first answer; the second admits
    // the click as new.
    let mut tries = 0;
    let (event, enqueued, route) = loop {
        tries += 1;
        match state.queue.enqueue(coupon, user).await {
            Ok((event, Admitted::New(enqueued), route)) => break (event, enqueued, route),
            Ok((event, Admitted::Repeat { entry, progress }, _)) => {
                match repeat::answer(&state, coupon, user, entry, progress).await {
                    Repeat::Answer(a) => return Ok(a),
                    Repeat::Cleared if tries < 2 => continue,
                    Repeat::Cleared => {
                        return Err(ApiError::enqueue_failed(
                            QueueError::BadReply("the repeat gate keeps a stale entry".into()),
                            event.event_id,
                        ))
                    }
                }
            }
            Err((_, QueueError::SoldOut(_))) => {
                // A worker just took the last unit; the cache learns it now
                // rather than at its next reload.
                state.coupons.sold_out_by_queue(coupon);
                Outcome::SoldOut.count();
                return Err(ApiError::sold_out(coupon));
            }
            Err((event, e)) => {
                Outcome::QueueUnavailable.count();
                if e.is_uncertain() {
                    // Its id is handed out to be looked up.
                    state.auth.accepted(event.event_id, user);
                }
                return Err(ApiError::enqueue_failed(e, event.event_id));
            }
        }
    };
    state.auth.accepted(event.event_id, user);
    tracing::Span::current().record("request_id", tracing::field::display(event.event_id));
    Outcome::Accepted.count();
    state.activity.accepted(coupon);
    let standing = state
        .waiting
        .of(&route.producer)
        .accepted(event.event_id, &enqueued)
        .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(IssueAccepted {
            request_id: event.event_id,
            coupon_id: coupon.get(),
            user_id: user.get(),
            status: IssueStatus::Pending,
            queue_position: enqueued.position,
            queue: route.queue,
            ahead: standing.map(|s| s.ahead),
            eta_ms: standing.and_then(|s| s.eta_ms),
        }),
    )
        .into_response())
}

/// The final result of a request, or `PENDING` while it waits in the queue.
/// With `waitMs` the call waits for the result; with `Accept:
/// text/event-stream` it streams where the request stands, then the result.
///
/// With user tokens required (see `crate::auth`) the call needs one, and a
/// request is shown to its owner only; anyone else gets the `404` of an
/// unknown id. A result names its owner. A request without a result yet is
/// shown as pending only by the api instance that accepted it from that
/// user (it remembers the owner): another instance, or one restarted since,
/// cannot tell whose it is and answers `404` until the result is written.
/// Without tokens every id reads as pending until it has a result.
#[utoipa::path(
    get,
    path = "/api/coupons/issue-requests/{requestId}",
    tag = "issue",
    security((), ("userToken" = [])),
    params(
        ("requestId" = Uuid, Path, description = "The `requestId` of an accepted request"),
        ("waitMs" = Option<u32>, Query, minimum = 0, maximum = 30000,
            description = "Hold the call until the result is written or this many milliseconds pass (then `202`). `0` or absent: answer at once"),
    ),
    responses(
        (status = 200, description = "Processed. With `Accept: text/event-stream`: a stream of `pending` events (`ahead`, `etaMs`: at once and when they change), then one `result` event (this JSON) and the end; a stream lasts at most 5 minutes, ending with a `pending` event",
            content((IssueResult = "application/json"), (String = "text/event-stream"))),
        (status = 202, description = "Accepted, not processed yet (without user tokens: or never accepted); with `waitMs`, not within that time", body = PendingResult),
        (status = 400, description = "`INVALID_REQUEST_ID`: not a UUID; `INVALID_WAIT_MS`: waitMs not a whole number from 0 to 30000", body = ErrorBody),
        (status = 401, description = "`UNAUTHENTICATED`: the api requires a user token and none valid was sent", body = ErrorBody),
        (status = 404, description = "With user tokens required: no request of this user with this id is known here", body = ErrorBody),
        (status = 503, description = "Database unavailable (only without `waitMs`: a held call answers `202` when its time runs out)", body = ErrorBody),
    )
)]
async fn issue_result(
    State(state): State<AppState>,
    ApiPath(raw): ApiPath<String>,
    ApiQuery(params): ApiQuery<LookupParams>,
    viewer: Viewer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let request_id = Uuid::parse_str(&raw)
        .map_err(|_| ApiError::bad_request("INVALID_REQUEST_ID", "requestId must be a UUID"))?;
    let wait = params.wait()?;
    let unknown = || ApiError::not_found(format!("no issue request {request_id} of this user"));
    if lookup::wants_events(&headers) {
        // The stream shows the request to its owner only, as the JSON does.
        if !viewer.may_see_pending(request_id) {
            match db::find_result(&state.pool, request_id).await? {
                Some(result) if viewer.may_see(result.user_id) => {}
                _ => return Err(unknown()),
            }
        }
        return Ok(lookup::events(&state, request_id).into_response());
    }
    let found = match wait {
        Some(wait) if viewer.may_see_pending(request_id) => {
            lookup::result_within(&state, request_id, wait).await
        }
        _ => db::find_result(&state.pool, request_id).await?,
    };
    Ok(match found {
        Some(result) if viewer.may_see(result.user_id) => {
            (StatusCode::OK, Json(result)).into_response()
        }
        Some(_) => return Err(unknown()),
        None if viewer.may_see_pending(request_id) => {
            let pending = lookup::pending(&state, request_id).await;
            (StatusCode::ACCEPTED, Json(pending)).into_response()
        }
        None => return Err(unknown()),
    })
}

/// Coupon state: total, remaining stock, issued count, window, and its
/// queue's length and processing rate.
#[utoipa::path(get, path = "/api/coupons/{couponId}", tag = "coupons", params(("couponId" = i64, Path, minimum = 1, description = "Coupon id")), responses((status = 200, description = "The coupon", body = CouponAnswer), CouponRefusals))]
async fn coupon(
    State(state): State<AppState>,
    CouponPath(id): CouponPath,
) -> Result<Json<CouponAnswer>, ApiError> {
    let coupon = db::find_coupon(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("coupon {id} does not exist")))?;
    let producer = state.queue.producer();
    let waiting = state.waiting.of(&producer);
    let rate = async {
        let lane = waiting.lane_of(id).await?;
        waiting.rate(lane).await
    };
    let (size, processing_rate) = tokio::join!(producer.queue_size(id), rate);
    let size = size.ok();
    Ok(Json(CouponAnswer {
        coupon,
        queue_length: size.as_ref().map(|s| s.size),
        queue_scope: size.map(|s| s.scope.to_string()),
        processing_rate,
    }))
}

/// Accepted requests for this coupon that are not processed yet.
#[utoipa::path(get, path = "/api/coupons/{couponId}/queue-size", tag = "coupons", params(("couponId" = i64, Path, minimum = 1, description = "Coupon id")), responses((status = 200, description = "Queue size", body = QueueSizeAnswer), CouponRefusals))]
async fn queue_size(
    State(state): State<AppState>,
    CouponPath(id): CouponPath,
) -> Result<Json<QueueSizeAnswer>, ApiError> {
    if !state.coupons.contains(id).await? {
        return Err(ApiError::not_found(format!("coupon {id} does not exist")));
    }
    let size = state.queue.producer().queue_size(id).await?;
    Ok(Json(QueueSizeAnswer {
        coupon_id: id.get(),
        queue_size: size.size,
        scope: size.scope.to_string(),
    }))
}
