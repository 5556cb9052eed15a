//! Which coupons exist, so the issue path can answer 404 without a query per
//! request (made-up ids must not create queue keys).

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use common::db;
use common::domain::CouponId;
use common::error::DbError;
use sqlx::MySqlPool;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// A miss reloads the cache at most this often, so a coupon created a moment
/// ago (by another api instance or plain SQL) is found, while a flood of
/// made-up ids costs at most a few queries per second.
const MISS_RELOAD_INTERVAL: Duration = Duration::from_millis(250);

/// The set of coupon ids, reloaded from MySQL in the background and on misses.
#[derive(Clone)]
pub struct CouponCache {
    ids: Arc<RwLock<HashSet<i64>>>,
    last_reload: Arc<Mutex<Option<Instant>>>,
    pool: MySqlPool,
}

impl CouponCache {
    pub fn new(pool: MySqlPool) -> Self {
        Self {
            ids: Arc::default(),
            last_reload: Arc::default(),
            pool,
        }
    }

    /// Replaces the cached set with what MySQL holds now.
    pub async fn reload(&self) -> Result<(), DbError> {
        let ids: HashSet<i64> = db::coupon_ids(&self.pool).await?.into_iter().collect();
        *self.ids.write().expect("cache lock") = ids;
        Ok(())
    }

    /// Adds a coupon this instance just created.
    pub fn insert(&self, id: i64) {
        self.ids.write().expect("cache lock").insert(id);
    }

    fn contains_cached(&self, id: CouponId) -> bool {
        self.ids.read().expect("cache lock").contains(&id.get())
    }

    /// Whether the coupon exists. Errors only when the id is not cached and
    /// MySQL cannot be asked.
    pub async fn contains(&self, id: CouponId) -> Result<bool, DbError> {
        if self.contains_cached(id) {
            return Ok(true);
        }
        let mut last = self.last_reload.lock().await;
        // Another miss may have reloaded while this one waited for the lock.
        if self.contains_cached(id) {
            return Ok(true);
        }
        if last.is_none_or(|t| t.elapsed() >= MISS_RELOAD_INTERVAL) {
            self.reload().await?;
            *last = Some(Instant::now());
        }
        Ok(self.contains_cached(id))
    }

    /// Reloads every `every` until `cancel` fires (picks up deletions and
    /// coupons made elsewhere).
    pub fn spawn_refresher(&self, every: Duration, cancel: CancellationToken) {
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
            }
        });
    }
}
