//! Shared state of the handlers.

use std::sync::Arc;

use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;
use ops::OpsState;
use sqlx::MySqlPool;

use crate::active_queue::ActiveQueue;
use crate::activity::Activity;
use crate::auth::Auth;
use crate::cache::CouponCache;
use crate::held::Held;
use crate::limits::Limits;
use crate::waiting::Waitings;

/// Everything a handler needs, behind one reference count: every call
/// clones it (its `State` extractor), and a clone of the fields one by one
/// was a dozen atomic counts up and down per call.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub pool: MySqlPool,
    /// The active queue, followed from the shared record.
    pub queue: ActiveQueue,
    pub coupons: CouponCache,
    /// `None`: admin endpoints are switched off.
    pub admin_token: Option<Arc<str>>,
    pub metrics: PrometheusHandle,
    /// Accepted requests per coupon and second, for the dashboard.
    pub activity: Activity,
    /// Where accepted requests stand (`ahead`, `etaMs`).
    pub waiting: Waitings,
    /// Lookups waiting for their result, looked up together.
    pub held: Held,
    /// Whether user tokens are required, and whose requests are whose.
    pub auth: Auth,
    /// The issue call's rate limits.
    pub limits: Limits,
}

impl FromRef<AppState> for OpsState {
    fn from_ref(state: &AppState) -> Self {
        OpsState {
            pool: state.pool.clone(),
            queue: state.queue.producer(),
            metrics: state.metrics.clone(),
        }
    }
}
