//! The worker's small HTTP endpoint: `/health`, `/ready`, `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use common::db;
use common::queue::Producer;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use sqlx::MySqlPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the health endpoint checks.
#[derive(Clone)]
pub struct HealthState {
    pub pool: MySqlPool,
    /// The configured queue, for its ping.
    pub queue: Producer,
    pub metrics: PrometheusHandle,
}

/// Serves until `cancel` fires.
pub async fn serve(listener: TcpListener, state: HealthState, cancel: CancellationToken) {
    let app = Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "UP" })) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        tracing::error!(error = ?e, "health endpoint failed");
    }
}

async fn ready(State(state): State<HealthState>) -> (StatusCode, Json<serde_json::Value>) {
    let db_ok = db::ping(&state.pool).await.is_ok();
    let queue_ok = state.queue.ping().await.is_ok();
    let ok = db_ok && queue_ok;
    let up = |b: bool| if b { "UP" } else { "DOWN" };
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(
            json!({ "status": if ok { "READY" } else { "NOT_READY" }, "database": up(db_ok), "queue": up(queue_ok) }),
        ),
    )
}

async fn metrics(State(state): State<HealthState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
