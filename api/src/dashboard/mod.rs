//! `GET /dashboard`: a live page of sales in progress, served with its own
//! script and style (no outside assets), polling `GET /api/dashboard` every
//! second. The JSON carries per coupon its figures and per-second series over
//! the last minutes, and the workers alive; no token is needed and no user id
//! is ever part of it.

mod query;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use chrono::{DateTime, TimeDelta, Utc};
use common::domain::CouponId;
use common::queue::Producer;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::activity::WINDOW_SECS;
use crate::door::DoorCounts;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// Rates are averaged over this many complete seconds.
const RATE_SECS: usize = 5;
/// A worker is alive while its heartbeat is younger than this.
const ALIVE_WITHIN: TimeDelta = TimeDelta::seconds(15);
/// At most this many coupons are shown (the active ones, then the newest).
const MAX_COUPONS: usize = 12;
/// The newest coupons are shown even while idle.
const NEWEST: u32 = 3;
/// Answers this young are reused, so many open pages cost one set of queries.
const CACHE_FOR: Duration = Duration::from_millis(500);
/// Longest wait for one coupon's queue size.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(1);

/// The dashboard's routes, with the last answer they share.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(snapshot))
        .routes(routes!(page))
        .routes(routes!(script))
        .routes(routes!(style))
        .layer(Extension(SnapshotCache::default()))
}

/// Everything the page shows.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dashboard {
    pub generated_at: DateTime<Utc>,
    /// `redis` or `kafka`.
    pub queue_type: String,
    /// Start of the first second of every series.
    pub series_start: DateTime<Utc>,
    /// Length of every series, one count per second.
    pub series_seconds: u32,
    /// Coupons with activity in the window, then the newest; newest first.
    pub coupons: Vec<CouponActivity>,
    /// Workers whose heartbeat is recent.
    pub workers: Vec<WorkerStatus>,
    /// How this api answered the issue calls since it started.
    pub door: DoorCounts,
}

/// One coupon's figures.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouponActivity {
    pub coupon_id: i64,
    pub name: String,
    pub total_quantity: i32,
    pub remaining_stock: i32,
    pub issued_count: i64,
    /// Accepted requests not processed yet; absent while the queue does not answer.
    pub queue_size: Option<u64>,
    /// `coupon` (Redis) or `partition` (Kafka: lag of the coupon's partition).
    pub queue_scope: Option<String>,
    /// Requests this api instance accepted per second (last 5 s).
    pub accepted_per_second: f64,
    /// Results written per second, by all workers (last 5 s).
    pub processed_per_second: f64,
    /// Accepted by this api instance, per second, oldest first.
    pub accepted: Vec<u32>,
    /// Results written, per second, oldest first.
    pub processed: Vec<u32>,
}

/// A worker whose heartbeat is recent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    pub worker_id: String,
    pub queue_type: String,
    pub host: String,
    pub pid: i32,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    // Computed from `last_seen_at`, not stored.
    #[sqlx(skip)]
    pub seconds_since_seen: f64,
}

/// An answer and when it was made.
type Stamped = (Instant, Arc<Dashboard>);

/// The last answer, shared by every open page of one api.
#[derive(Clone, Default)]
struct SnapshotCache(Arc<Mutex<Option<Stamped>>>);

/// Figures of the sales in progress, refreshed at most twice a second.
#[utoipa::path(get, path = "/api/dashboard", tag = "dashboard",
    responses(
        (status = 200, description = "Coupons, rates, series and workers", body = Dashboard),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ))]
async fn snapshot(
    State(state): State<AppState>,
    Extension(cache): Extension<SnapshotCache>,
) -> Result<Json<Arc<Dashboard>>, ApiError> {
    let mut cached = cache.0.lock().await;
    if let Some((at, answer)) = cached.as_ref() {
        if at.elapsed() < CACHE_FOR {
            return Ok(Json(answer.clone()));
        }
    }
    let answer = Arc::new(build(&state).await?);
    *cached = Some((Instant::now(), answer.clone()));
    Ok(Json(answer))
}

async fn build(state: &AppState) -> Result<Dashboard, ApiError> {
    let now = Utc::now();
    let len = WINDOW_SECS;
    let from_sec = now.timestamp() - len as i64 + 1;
    let from = DateTime::from_timestamp(from_sec, 0).unwrap_or(now);
    let accepted = state.activity.series(from_sec, len);
    let (processed, newest, workers) = tokio::try_join!(
        query::processed_series(&state.pool, from, len),
        query::newest_coupon_ids(&state.pool, NEWEST),
        query::workers(&state.pool, now - ALIVE_WITHIN, now),
    )?;
    let ids: BTreeSet<i64> = accepted
        .keys()
        .chain(processed.keys())
        .chain(&newest)
        .copied()
        .collect();
    let ids: Vec<i64> = ids.into_iter().rev().take(MAX_COUPONS).collect();
    // Queue sizes are asked for all coupons at once (Kafka lag lookups take
    // round trips), each bounded by QUEUE_TIMEOUT.
    let mut sizes = JoinSet::new();
    for &id in &ids {
        let producer = state.queue.producer();
        sizes.spawn(async move { (id, queue_size(&producer, id).await) });
    }
    let rows = query::coupons(&state.pool, &ids).await?;
    let mut queues = HashMap::new();
    while let Some(joined) = sizes.join_next().await {
        if let Ok((id, size)) = joined {
            queues.insert(id, size);
        }
    }
    let mut coupons = Vec::with_capacity(rows.len());
    for row in rows {
        let (queue_size, queue_scope) = queues.remove(&row.coupon_id).unwrap_or_default();
        let accepted = accepted
            .get(&row.coupon_id)
            .cloned()
            .unwrap_or_else(|| vec![0; len]);
        let processed = processed
            .get(&row.coupon_id)
            .cloned()
            .unwrap_or_else(|| vec![0; len]);
        coupons.push(CouponActivity {
            coupon_id: row.coupon_id,
            name: row.name,
            total_quantity: row.total_quantity,
            remaining_stock: row.remaining_stock,
            issued_count: row.issued_count,
            queue_size,
            queue_scope,
            accepted_per_second: rate(&accepted),
            processed_per_second: rate(&processed),
            accepted,
            processed,
        });
    }
    coupons.sort_by_key(|c| std::cmp::Reverse(c.coupon_id));
    Ok(Dashboard {
        generated_at: now,
        queue_type: state.queue.route().queue.as_str().into(),
        series_start: from,
        series_seconds: len as u32,
        coupons,
        door: DoorCounts::now(),
        workers,
    })
}

/// Mean of the last [`RATE_SECS`] complete seconds (the current one is partial).
fn rate(series: &[u32]) -> f64 {
    let complete = &series[..series.len().saturating_sub(1)];
    let last = &complete[complete.len().saturating_sub(RATE_SECS)..];
    last.iter().map(|&n| f64::from(n)).sum::<f64>() / RATE_SECS as f64
}

async fn queue_size(producer: &Producer, coupon: i64) -> (Option<u64>, Option<String>) {
    let Ok(id) = CouponId::try_from(coupon) else {
        return (None, None);
    };
    match tokio::time::timeout(QUEUE_TIMEOUT, producer.queue_size(id)).await {
        Ok(Ok(size)) => (Some(size.size), Some(size.scope.to_string())),
        _ => (None, None),
    }
}

/// The dashboard page.
#[utoipa::path(get, path = "/dashboard", tag = "dashboard",
    responses((status = 200, description = "HTML page", body = String, content_type = "text/html")))]
async fn page() -> impl IntoResponse {
    asset(
        "text/html; charset=utf-8",
        include_str!("../../assets/dashboard.html"),
    )
}

/// The dashboard page's script.
#[utoipa::path(get, path = "/dashboard/dashboard.js", tag = "dashboard",
    responses((status = 200, description = "JavaScript", body = String, content_type = "text/javascript")))]
async fn script() -> impl IntoResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/dashboard.js"),
    )
}

/// The dashboard page's style sheet.
#[utoipa::path(get, path = "/dashboard/dashboard.css", tag = "dashboard",
    responses((status = 200, description = "CSS", body = String, content_type = "text/css")))]
async fn style() -> impl IntoResponse {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/dashboard.css"),
    )
}

/// A static asset; the policy lets the page load only from this api.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::rate;

    #[test]
    fn rates_average_the_last_complete_seconds() {
        // The last slot is the second in progress: left out.
        assert_eq!(rate(&[9, 9, 10, 10, 10, 10, 10, 1000]), 10.0);
        assert_eq!(rate(&[0, 0, 0, 0, 0, 5, 0]), 1.0);
        assert_eq!(rate(&[7]), 0.0);
        assert_eq!(rate(&[]), 0.0);
    }
}
