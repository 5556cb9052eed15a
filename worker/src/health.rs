//! The worker's small HTTP endpoint: the operations routes of [`ops`]
//! (`/health`, `/ready`, `/metrics`), the same as the api's.

use ops::OpsState;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves until `cancel` fires.
pub async fn serve(listener: TcpListener, state: OpsState, cancel: CancellationToken) {
    if let Err(e) = axum::serve(listener, ops::router(state))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        tracing::error!(error = ?e, "health endpoint failed");
    }
}
