//! The operations endpoints of both binaries: `/health` (liveness), `/ready`
//! (MySQL and the queue both answer) and `/metrics` (Prometheus text). The
//! api adds them to its router and OpenAPI document; the worker serves them
//! alone on its own port.

use axum::extract::{FromRef, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::{Json, Router};
use common::db;
use common::queue::Producer;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What the endpoints check and render.
#[derive(Clone)]
pub struct OpsState {
    pub pool: MySqlPool,
    /// The configured queue, for its ping.
    pub queue: Producer,
    pub metrics: PrometheusHandle,
}

/// Liveness answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `UP`.
    pub status: String,
}

/// Readiness answer: what is up and what is down.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `READY` or `NOT_READY`.
    pub status: String,
    /// `UP` or `DOWN`.
    pub database: String,
    /// `UP` or `DOWN`.
    pub queue: String,
}

/// `/health`, `/ready` and `/metrics` with their OpenAPI paths, for any
/// router state that holds an [`OpsState`].
pub fn routes<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    OpsState: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
}

/// The three endpoints alone, as a process with no other HTTP serves them.
pub fn router(state: OpsState) -> Router {
    let (router, _) = routes().split_for_parts();
    router.with_state(state)
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "Up", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health {
        status: "UP".into(),
    })
}

/// Readiness: `200` when MySQL and the queue both answer, else `503`.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Database and queue answer", body = Readiness),
        (status = 503, description = "Something is down", body = Readiness),
    ))]
async fn ready(State(state): State<OpsState>) -> (StatusCode, Json<Readiness>) {
    let (db, queue) = tokio::join!(db::ping(&state.pool), state.queue.ping());
    let up = |ok: bool| if ok { "UP" } else { "DOWN" }.to_string();
    let ok = db.is_ok() && queue.is_ok();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let answer = Readiness {
        status: if ok { "READY" } else { "NOT_READY" }.into(),
        database: up(db.is_ok()),
        queue: up(queue.is_ok()),
    };
    (status, Json(answer))
}

/// Prometheus metrics of this process.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String,
        content_type = "text/plain")))]
async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
