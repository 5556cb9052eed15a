//! Which coupons exist and which are sold out, so the issue path can answer
//! 404 and 409 without a query per request (made-up ids must not create
//! queue keys; requests for a sold-out coupon must not wait in a queue).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::db;
use common::domain::CouponId;
use common::domain::QueueType;
use common::error::DbError;
use common::queue::Queues;
use sqlx::MySqlPool;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::sold_out::SoldOutGates;

/// A miss reloads the cache at most this often, so a coupon created a moment
/// ago (by another api instance or plain SQL) is found, while a flood of
/// made-up ids costs at most a few queries per second.
const MISS_RELOAD_INTERVAL: Duration = Duration::from_millis(250);

/// What the cache knows of a coupon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Stock was left at the last reload.
    Open,
    /// Stock was 0 in MySQL at the last reload: requests are refused at once
    /// until an operator restocks it (seen at the next reload).
    SoldOut,
}

impl Availability {
    fn of_stock(stock: i64) -> Self {
        if stock > 0 {
            Availability::Open
        } else {
            Availability::SoldOut
        }
    }
}

#[derive(Default)]
struct Marks {
    refused: HashSet<i64>,
    reopened: HashSet<i64>,
}

/// Coupon ids with their availability, reloaded from MySQL in the
/// background and on misses.
#[derive(Clone)]
pub struct CouponCache {
    coupons: Arc<RwLock<HashMap<i64, Availability>>>,
    /// Sold-out marks in the queue: coupons the queue refused as sold out
    /// since the last reload, and restocked coupons whose mark is to be
    /// lifted; see [`CouponCache::reload`].
    marks: Arc<std::sync::Mutex<Marks>>,
    last_reload: Arc<Mutex<Option<Instant>>>,
    /// Copies of the sold-out coupons' repeat gates, dropped when a coupon
    /// reopens.
    sold_out_gates: SoldOutGates,
    pool: MySqlPool,
}

impl CouponCache {
    pub fn new(pool: MySqlPool) -> Self {
        Self {
            coupons: Arc::default(),
            marks: Arc::default(),
            last_reload: Arc::default(),
            sold_out_gates: SoldOutGates::default(),
            pool,
        }
    }

    /// Replaces the cached state with what MySQL holds now. Coupons that
    /// have stock again although they were seen sold out (here, or through a
    /// worker's mark in the queue) are kept for [`CouponCache::take_reopened`].
    pub async fn reload(&self) -> Result<(), DbError> {
        let coupons: HashMap<i64, Availability> = db::coupon_stocks(&self.pool)
            .await?
            .into_iter()
            .map(|(id, stock)| (id, Availability::of_stock(stock)))
            .collect();
        let mut marks = self.marks.lock().expect("marks lock");
        let mut cached = self.coupons.write().expect("cache lock");
        for (id, now) in &coupons {
            if *now == Availability::Open
                && (marks.refused.contains(id) || cached.get(id) == Some(&Availability::SoldOut))
            {
                marks.reopened.insert(*id);
            }
        }
        // MySQL now says sold out (the cache refuses by itself) or open
        // (the mark is to be lifted): either way the refusal is accounted for.
        marks.refused.clear();
        *cached = coupons;
        self.sold_out_gates
            .retain(|id| cached.get(&id) == Some(&Availability::SoldOut));
        Ok(())
    }

    /// The copies of the sold-out coupons' repeat gates.
    pub fn sold_out_gates(&self) -> &SoldOutGates {
        &self.sold_out_gates
    }

    /// Restocked coupons whose sold-out mark in the queue is to be lifted.
    pub fn take_reopened(&self) -> Vec<CouponId> {
        let mut marks = self.marks.lock().expect("marks lock");
        marks
            .reopened
            .drain()
            .filter_map(|id| CouponId::try_from(id).ok())
            .collect()
    }

    /// The queue refused a request because a worker marked the coupon sold
    /// out: refuse at once from now on, until a reload shows stock.
    pub fn sold_out_by_queue(&self, id: CouponId) {
        self.marks
            .lock()
            .expect("marks lock")
            .refused
            .insert(id.get());
        self.coupons
            .write()
            .expect("cache lock")
            .insert(id.get(), Availability::SoldOut);
    }

    /// Adds a coupon this instance just created with `stock` units.
    pub fn insert(&self, id: i64, stock: i64) {
        self.coupons
            .write()
            .expect("cache lock")
            .insert(id, Availability::of_stock(stock));
    }

    fn cached(&self, id: CouponId) -> Option<Availability> {
        self.coupons
            .read()
            .expect("cache lock")
            .get(&id.get())
            .copied()
    }

    /// The coupon's availability, `None` if it does not exist. Errors only
    /// when the id is not cached and MySQL cannot be asked.
    pub async fn get(&self, id: CouponId) -> Result<Option<Availability>, DbError> {
        if let Some(state) = self.cached(id) {
            return Ok(Some(state));
        }
        let mut last = self.last_reload.lock().await;
        // Another miss may have reloaded while this one waited for the lock.
        if let Some(state) = self.cached(id) {
            return Ok(Some(state));
        }
        if last.is_none_or(|t| t.elapsed() >= MISS_RELOAD_INTERVAL) {
            self.reload().await?;
            *last = Some(Instant::now());
        }
        Ok(self.cached(id))
    }

    /// Whether the coupon exists.
    pub async fn contains(&self, id: CouponId) -> Result<bool, DbError> {
        Ok(self.get(id).await?.is_some())
    }

    /// Reloads every `every` until `cancel` fires: picks up coupons made
    /// elsewhere, deletions, sell-outs and restocks; lifts the queue's
    /// sold-out mark of restocked coupons.
    pub fn spawn_refresher(
        &self,
        every: Duration,
        queues: Queues,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = cancel.cancelled() => return,
                }
                if let Err(e) = cache.reload().await {
                    tracing::warn!(error = ?e, "coupon cache reload failed");
                }
                let reopened = cache.take_reopened();
                // Only Redis has sold-out marks, and only once it was used.
                let Some(redis) = queues.built(QueueType::Redis) else {
                    continue;
                };
                for coupon in reopened {
                    if let Err(e) = redis.reopen(coupon).await {
                        // The mark lapses by itself within a second.
                        tracing::warn!(error = ?e, %coupon, "could not lift a sold-out mark");
                    }
                }
            }
        })
    }
}
