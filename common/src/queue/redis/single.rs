//! The single-node connection.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use tokio::sync::Mutex;

use crate::error::QueueError;

/// One multiplexed connection, made on first use and again after a failure
/// (hand-written rather than `ConnectionManager`, which reconnects in the
/// background but cannot fail fast while Redis is down).
pub(super) struct SingleNode {
    client: Client,
    timeout: Duration,
    state: Mutex<ConnState>,
}

#[derive(Default)]
struct ConnState {
    conn: Option<MultiplexedConnection>,
    /// After a failed connect, callers fail fast for a moment instead of
    /// queueing behind one connect attempt each.
    failed_at: Option<Instant>,
}

const FAIL_FAST: Duration = Duration::from_millis(250);

impl SingleNode {
    pub(super) fn new(url: &str, timeout: Duration) -> Result<Self, QueueError> {
        Ok(Self {
            client: Client::open(url)?,
            timeout,
            state: Mutex::new(ConnState::default()),
        })
    }

    /// Drops a broken connection so that the next call reconnects.
    pub(super) async fn forget(&self) {
        self.state.lock().await.conn = None;
    }

    pub(super) async fn connection(&self) -> Result<MultiplexedConnection, QueueError> {
        let mut state = self.state.lock().await;
        if let Some(c) = &state.conn {
            return Ok(c.clone());
        }
        if state.failed_at.is_some_and(|t| t.elapsed() < FAIL_FAST) {
            return Err(QueueError::Unavailable("redis is unreachable".into()));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(c) => {
                state.conn = Some(c.clone());
                state.failed_at = None;
                Ok(c)
            }
            Err(e) => {
                state.failed_at = Some(Instant::now());
                Err(e.into())
            }
        }
    }
}
