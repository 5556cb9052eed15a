//! Wake-ups: an enqueue that finds its coupon's stream empty publishes the
//! coupon id on `coupon-issue-events:wake` (in the same script, so it costs
//! no extra round trip and only one message per empty-to-busy change), and
//! workers subscribed to it start a poll at once instead of sleeping out
//! their interval. Best effort by design: a lost message or a broken
//! subscription only means waiting for the next poll, which stays the
//! safety net. On a Redis Cluster a `PUBLISH` reaches every node, so a
//! worker subscribes on any one of them.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Wait before subscribing again after a failure.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);
/// A node that accepts the connection but never answers must not hold the
/// listener (or the worker's shutdown).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Subscribes to `channel` on the first node of `urls` that answers and
/// calls `notify.notify_one()` for every message, until `cancel` fires.
/// Also notifies once after each (re)subscription: anything published while
/// it was not listening is picked up by the poll that follows.
pub async fn listen(
    urls: Arc<[String]>,
    channel: String,
    notify: Arc<Notify>,
    cancel: CancellationToken,
) {
    let mut attempt = 0usize;
    loop {
        let url = &urls[attempt % urls.len()];
        attempt += 1;
        let subscribed = tokio::select! {
            s = tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe(url, &channel)) => s,
            _ = cancel.cancelled() => return,
        };
        match subscribed.unwrap_or_else(|_| Err(timed_out())) {
            Ok(mut pubsub) => {
                debug!(%url, %channel, "listening for wake-ups");
                notify.notify_one();
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        m = messages.next() => match m {
                            Some(_) => notify.notify_one(),
                            None => break,
                        },
                        _ = cancel.cancelled() => return,
                    }
                }
                warn!(%url, "wake-up subscription lost; polling on the interval until it is back");
            }
            Err(e) => debug!(%url, error = %e, "cannot subscribe to wake-ups yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

async fn subscribe(url: &str, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = redis::Client::open(url)?.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

fn timed_out() -> redis::RedisError {
    std::io::Error::from(std::io::ErrorKind::TimedOut).into()
}
