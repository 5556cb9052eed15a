//! Which queue this api enqueues into: it follows the shared record of
//! `common::switch` (invariants S1, S2), switches it for
//! `PUT /api/admin/queue`, and, with `QUEUE_FALLBACK=true`, when the active
//! queue fails. While MySQL cannot be read it keeps its last view: the door
//! stays open, and a Redis fence it meets tells it the newer epoch (S3).
//!
//! Every enqueue holds the read side of a gate; changing the route takes the
//! write side, so by the time this instance reports the new epoch in its
//! `api_instance` row, every enqueue into the old queue has returned (S2).

use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use common::domain::QueueType;
use common::domain::{CouponId, CouponIssueEvent, UserId};
use common::error::{DbError, QueueError};
use common::queue::{Admitted, Producer, Queues};
use common::switch::{self, Epoch, SwitchError, FOLLOW_EVERY};
use sqlx::MySqlPool;
use tokio_util::sync::CancellationToken;

/// The epoch this instance enqueues into, and its queue.
#[derive(Clone)]
pub struct Route {
    pub epoch: u64,
    pub queue: QueueType,
    pub since: DateTime<Utc>,
    pub producer: Producer,
}

/// Follows and switches the active queue; cheap to clone.
#[derive(Clone)]
pub struct ActiveQueue {
    inner: Arc<Inner>,
}

struct Inner {
    pool: MySqlPool,
    queues: Queues,
    instance: String,
    fallback: bool,
    route: RwLock<Route>,
    /// Held (read) across every enqueue; taken (write) to change the route.
    gate: tokio::sync::RwLock<()>,
    /// One switch attempt of this instance at a time.
    switching: tokio::sync::Mutex<()>,
}

/// A switch that happened or was not needed.
pub enum Switched {
    To(Epoch),
    Already(Epoch),
}

impl ActiveQueue {
    /// Registers this instance, reads the record (creating it on
    /// `configured`, `APP_QUEUE_TYPE`, when it is empty: invariant S1) and
    /// builds the active queue's producer. The record wins over
    /// `APP_QUEUE_TYPE`: a restarted api never switches the service.
    pub async fn start(
        pool: MySqlPool,
        queues: Queues,
        configured: QueueType,
        fallback: bool,
    ) -> anyhow::Result<Self> {
        let instance = format!(
            "api-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        // The row exists before the first read: a switch made meanwhile
        // waits for this instance too.
        switch::follow(&pool, &instance, 0).await?;
        let epoch = switch::active_or_first(&pool, configured).await?;
        if epoch.queue_type != configured {
            tracing::info!(configured = %configured, active = %epoch.queue_type, epoch = epoch.epoch,
                "APP_QUEUE_TYPE only seeds an empty record; following the active queue (scripts/switch-queue.sh switches it)");
        }
        let producer = queues
            .producer(epoch.queue_type)
            .await
            .map_err(|e| anyhow::anyhow!("the active queue ({}): {e}", epoch.queue_type))?
            .clone();
        switch::follow(&pool, &instance, epoch.number()).await?;
        let this = Self {
            inner: Arc::new(Inner {
                pool,
                queues,
                instance,
                fallback,
                route: RwLock::new(Route {
                    epoch: epoch.number(),
                    queue: epoch.queue_type,
                    since: epoch.started_at,
                    producer,
                }),
                gate: tokio::sync::RwLock::new(()),
                switching: tokio::sync::Mutex::new(()),
            }),
        };
        metrics_for(&this.route());
        Ok(this)
    }

    /// The route new requests take now.
    pub fn route(&self) -> Route {
        self.inner.route.read().expect("route lock").clone()
    }

    /// The producer of the active queue.
    pub fn producer(&self) -> Producer {
        self.route().producer
    }

    pub fn queues(&self) -> &Queues {
        &self.inner.queues
    }

    /// Admits a click through the repeat gate into the active queue (a
    /// repeat is answered with the user's request, nothing queued). A Redis fence moves
    /// this api to the epoch it names and the request goes there; with
    /// fallback on, a failing queue switches the service to the other one
    /// and the request goes there (unless the failed queue may have taken it).
    pub async fn enqueue(
        &self,
        coupon: CouponId,
        user: UserId,
    ) -> Result<(CouponIssueEvent, Admitted, Route), (CouponIssueEvent, QueueError)> {
        let (mut event, mut result, mut route) = self.enqueue_once(coupon, user).await;
        // A fence is only ever raised to a newer epoch, so this ends.
        while let Err(QueueError::Fenced(epoch)) = result {
            if let Err(e) = self.adopt_fence(&route, epoch).await {
                return Err((event, e));
            }
            (event, result, route) = self.enqueue_once(coupon, user).await;
        }
        let error = match result {
            Ok(enqueued) => return Ok((event, enqueued, route)),
            Err(e) => e,
        };
        if !self.inner.fallback || matches!(error, QueueError::SoldOut(_)) {
            return Err((event, error));
        }
        if !self.fall_back(&route, &error).await || error.is_uncertain() {
            // The failed queue may hold this request: it keeps its answer;
            // the requests after it go to the new queue.
            return Err((event, error));
        }
        let (event, result, route) = self.enqueue_once(coupon, user).await;
        match result {
            Ok(enqueued) => Ok((event, enqueued, route)),
            Err(e) => Err((event, e)),
        }
    }

    async fn enqueue_once(
        &self,
        coupon: CouponId,
        user: UserId,
    ) -> (CouponIssueEvent, Result<Admitted, QueueError>, Route) {
        let _in_flight = self.inner.gate.read().await;
        let route = self.route();
        let event = CouponIssueEvent::in_epoch(coupon, user, route.epoch);
        // Kafka mode's repeat gate lives in Redis (a single node connects
        // on first use; a cluster that cannot be reached leaves it off).
        let repeat_gate = match route.producer {
            Producer::Kafka(_) => self.inner.queues.redis().await.ok(),
            Producer::Redis(_) => None,
        };
        let result = route.producer.admit(&event, repeat_gate).await;
        (event, result, route)
    }

    /// Takes the route of epoch `fence`, which moved the service off
    /// `route`'s queue (invariant S3: the fence epoch's queue is the other
    /// one), unless this api already follows that epoch or a later one.
    async fn adopt_fence(&self, route: &Route, fence: u64) -> Result<(), QueueError> {
        if fence <= route.epoch {
            return Err(QueueError::BadReply(format!(
                "fenced at epoch {fence}, not after this api's epoch {}",
                route.epoch
            )));
        }
        self.take_route(
            fence,
            route.queue.other(),
            Utc::now(),
            "the queue is fenced at a newer epoch; following it",
        )
        .await
    }

    /// Moves to `epoch`'s route once every enqueue in flight has returned,
    /// unless this api already follows that epoch or a later one (the
    /// record only grows, S1).
    async fn take_route(
        &self,
        epoch: u64,
        queue: QueueType,
        since: DateTime<Utc>,
        why: &'static str,
    ) -> Result<(), QueueError> {
        if epoch <= self.route().epoch {
            return Ok(());
        }
        let producer = self.inner.queues.producer(queue).await?.clone();
        let _no_enqueues = self.inner.gate.write().await;
        let mut route = self.inner.route.write().expect("route lock");
        // Checked again under the lock: the other caller may have moved it on.
        if route.epoch < epoch {
            tracing::info!(epoch, from = %route.queue, to = %queue, "{why}");
            *route = Route {
                epoch,
                queue,
                since,
                producer,
            };
            metrics_for(&route);
        }
        Ok(())
    }

    /// Switches to the other queue after `route`'s failed; true if the
    /// active queue is another one now.
    async fn fall_back(&self, route: &Route, error: &QueueError) -> bool {
        let _one = self.inner.switching.lock().await;
        if self.route().epoch != route.epoch {
            return true;
        }
        let target = route.queue.other();
        match self.switch_to(target, "fallback").await {
            Ok(_) => {
                tracing::warn!(from = %route.queue, to = %target, error = %error, "active queue failed; fell back to the other queue");
                metrics::counter!("coupon_queue_fallbacks_total", "from" => route.queue.as_str(), "to" => target.as_str()).increment(1);
                true
            }
            Err(e) => {
                tracing::warn!(from = %route.queue, to = %target, error = %e, "active queue failed and the fallback could not be made");
                self.route().epoch != route.epoch
            }
        }
    }

    /// Makes `target` the active queue: the previous switch must have taken
    /// effect everywhere and `target` must answer; then a new epoch starts
    /// and this instance follows it at once (the others within
    /// [`FOLLOW_EVERY`]).
    pub async fn switch_to(
        &self,
        target: QueueType,
        reason: &str,
    ) -> Result<Switched, SwitchError> {
        let pool = &self.inner.pool;
        let current = switch::active(pool)
            .await?
            .ok_or_else(|| DbError::BadRow("queue_epoch is empty".into()))?;
        if current.queue_type == target {
            return Ok(Switched::Already(current));
        }
        let settled = switch::settle(pool, &self.inner.queues, &current).await?;
        if !settled.is_settled() {
            return Err(SwitchError::NotSettled(current.number()));
        }
        let unreachable = |error| SwitchError::Unreachable {
            queue: target,
            error,
        };
        let producer = self
            .inner
            .queues
            .producer(target)
            .await
            .map_err(unreachable)?;
        producer.ping().await.map_err(unreachable)?;
        producer.ensure_topics().await.map_err(unreachable)?;
        let next = switch::begin(pool, current.number(), target, reason).await?;
        tracing::info!(epoch = next.epoch, from = %current.queue_type, to = %target, reason, "active queue switched");
        metrics::counter!("coupon_queue_switches_total", "to" => target.as_str(), "reason" => reason.to_string()).increment(1);
        if let Err(e) = self.follow_once().await {
            tracing::warn!(error = %e, "following the switch just made failed; the follower retries");
        }
        // Raising the fences now (S3, S4) lets the new queue's workers start
        // at once; the workers' barrier settles it otherwise.
        let next = match switch::settle(pool, &self.inner.queues, &next).await {
            Ok(settled) => settled,
            Err(e) => {
                tracing::warn!(error = %e, epoch = next.epoch, "the switch is not settled yet; the workers retry");
                next
            }
        };
        Ok(Switched::To(next))
    }

    /// Reads the record; on a new epoch, waits for enqueues in flight and
    /// takes the new route; then writes this instance's row.
    async fn follow_once(&self) -> Result<(), anyhow::Error> {
        let pool = &self.inner.pool;
        let epoch = switch::active(pool)
            .await?
            .ok_or_else(|| anyhow::anyhow!("queue_epoch is empty"))?;
        self.take_route(
            epoch.number(),
            epoch.queue_type,
            epoch.started_at,
            "following the active queue",
        )
        .await
        .map_err(|e| anyhow::anyhow!("building the {} producer: {e}", epoch.queue_type))?;
        let followed = self.route().epoch;
        switch::follow(pool, &self.inner.instance, followed).await?;
        Ok(())
    }

    /// Follows the record every [`FOLLOW_EVERY`] until `cancel` fires, then
    /// removes this instance's row.
    pub fn spawn_follower(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FOLLOW_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = cancel.cancelled() => break,
                }
                match this.follow_once().await {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot read the active queue; enqueueing on the last known one");
                    }
                    Err(_) => {}
                }
            }
        })
    }

    /// Removes this instance's row: it enqueues nothing more.
    pub async fn leave(&self) {
        if let Err(e) = switch::leave(&self.inner.pool, &self.inner.instance).await {
            tracing::warn!(error = %e, "could not remove this api's row; it goes stale by itself");
        }
    }
}

fn metrics_for(route: &Route) {
    for q in [QueueType::Redis, QueueType::Kafka] {
        let active = if q == route.queue { 1.0 } else { 0.0 };
        metrics::gauge!("coupon_queue_active", "queue" => q.as_str()).set(active);
    }
    metrics::gauge!("coupon_queue_epoch").set(route.epoch as f64);
}
