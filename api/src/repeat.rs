//! The answer to a repeat click: the user's pending or winning request, as
//! the repeat gate holds it (see `common::queue::gate`), with where it
//! stands now. Any api instance answers it: the gate holds the request's
//! lane and place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::db;
use common::domain::{CouponId, IssueStatus, QueueType, UserId};
use common::queue::{GateEntry, GateState, Lane, Settled};

use crate::answers::IssueRepeat;
use crate::door::Outcome;
use crate::state::AppState;

/// What the gate's entry comes to.
pub enum Repeat {
    /// Answer the click with this.
    Answer(Response),
    /// The entry was stale: its request has a result without a coupon (a
    /// worker's settling of the gate was lost). It is gone now; the click
    /// is a new request.
    Cleared,
}

/// The repeat answer for `entry`, the user's entry in the coupon's gate;
/// `progress` is its lane's progress when read with it. The request's owner
/// is remembered, as for a `202`.
pub async fn answer(
    state: &AppState,
    coupon: CouponId,
    user: UserId,
    entry: GateEntry,
    progress: Option<u64>,
) -> Repeat {
    let mut status = entry.status();
    let mut standing = None;
    let place = entry.place();
    // A winner's place in the queue no longer matters: ahead is 0.
    if let Some(place) = place.filter(|_| status != IssueStatus::Success) {
        let queue = queue_of(place.lane);
        if let Ok(producer) = state.queue.queues().producer(queue).await {
            let waiting = state.waiting.of(producer);
            standing = waiting
                .standing_at(place.lane, place.target, progress)
                .await;
        }
    }
    let processed = matches!(entry.state, GateState::Pending(_))
        && standing.is_some_and(|(_, progress)| place.is_some_and(|p| progress > p.target));
    if processed {
        // Its queue is past it but the gate still says pending: the
        // worker's settling was lost (Kafka mode, Redis unreachable then).
        // One read of the result repairs the entry.
        match db::find_result(&state.pool, entry.request_id).await {
            Ok(Some(result)) => {
                let settled = Settled::new(entry.request_id, user, result.status);
                if let Ok(redis) = state.queue.queues().redis().await {
                    if let Err(e) = redis.settle(coupon, &[settled]).await {
                        tracing::warn!(error = %e, "repairing a gate entry failed");
                    }
                }
                if !settled.won {
                    return Repeat::Cleared;
                }
                status = IssueStatus::Success;
            }
            // Not decided yet (forwarded to the other queue by a switch).
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "reading a repeated request's result"),
        }
    }
    Outcome::Repeat.count();
    // The gate's entry is this user's: its owner is known (lookups with
    // user tokens).
    state.auth.accepted(entry.request_id, user);
    let won = status == IssueStatus::Success;
    let (ahead, eta_ms) = match standing {
        _ if won => (Some(0), Some(0)),
        Some((s, _)) => (Some(s.ahead), s.eta_ms),
        None => (None, None),
    };
    Repeat::Answer(
        (
            StatusCode::OK,
            Json(IssueRepeat {
                request_id: entry.request_id,
                coupon_id: coupon.get(),
                user_id: user.get(),
                status,
                queue_position: place.map(|p| p.position.clone()),
                queue: place.map(|p| queue_of(p.lane)),
                ahead,
                eta_ms,
                repeat: true,
            }),
        )
            .into_response(),
    )
}

/// The user's entry in the coupon's gate, read from Redis on its own (the coupon is
/// sold out, so nothing would be queued); `None` also when Redis does not
/// answer: the click is then told the coupon is sold out.
pub async fn entry_of(state: &AppState, coupon: CouponId, user: UserId) -> Option<GateEntry> {
    let redis = state.queue.queues().redis().await.ok()?;
    match redis.gate_entry(coupon, user).await {
        Ok(entry) => entry,
        Err(e) => {
            tracing::debug!(error = %e, "reading the repeat gate");
            None
        }
    }
}

fn queue_of(lane: Lane) -> QueueType {
    match lane {
        Lane::Coupon(_) => QueueType::Redis,
        Lane::Partition(_) => QueueType::Kafka,
    }
}
