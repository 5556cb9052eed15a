//! A worker's memory of who holds its coupons, so that a batch need not ask
//! MySQL which of its users already hold the coupon.
//!
//! Whatever changes a coupon's holders raises `coupon.holders_version` in
//! the same transaction, after taking the coupon's row: the processor by the
//! winners it inserts, an operator's reset (`scripts/reset-db.sh`) as it
//! clears them, and so must any change by hand (docs/operations.md). The
//! value only ever grows while the coupon's row lives (`created_at` tells a
//! row made again), so a memory of the holders as they were at a version is
//! still whole while the version read under the lock is the same; when it
//! is not (another worker issued some, a reset, a commit whose outcome was
//! never learnt), the memory is filled again from the table, under the lock.
//!
//! A holder added without raising the version (by hand against that rule,
//! or by a worker of a build from before the version) is missed until the
//! version moves: had they won again, the winners' insert fails on its
//! unique key, the memory is dropped and the batch is retried (never twice
//! to one user); once the coupon is sold out they are told `OUT_OF_STOCK`
//! instead of `DUPLICATE_REQUEST`.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::NaiveDateTime;
use sqlx::MySql;

use crate::domain::CouponId;
use crate::error::DbError;

/// Holders remembered at most, of all coupons together (some 10 to 20 MB):
/// a coupon with more is not remembered (its batches read the holders among
/// their users, as without a memory), and a coupon that takes the memory
/// past it empties the memory of the others.
const MAX_HOLDERS: usize = 500_000;

/// What one worker remembers of its coupons' holders.
#[derive(Debug, Default)]
pub struct Holders {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    coupons: HashMap<CouponId, Known>,
    /// Holders remembered, of all coupons.
    total: usize,
}

/// Which row of a coupon, and which of its holders versions: what a memory
/// is whole for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Version {
    pub created_at: NaiveDateTime,
    pub holders: i64,
}

#[derive(Debug)]
struct Known {
    version: Version,
    users: HashSet<i64>,
}

impl Inner {
    fn remove(&mut self, coupon: CouponId) {
        if let Some(known) = self.coupons.remove(&coupon) {
            self.total -= known.users.len();
        }
    }

    /// Remembers `users` for `coupon`; the others are forgotten first when
    /// all would not fit.
    fn insert(&mut self, coupon: CouponId, known: Known) {
        self.remove(coupon);
        if self.total + known.users.len() > MAX_HOLDERS {
            self.coupons.clear();
            self.total = 0;
        }
        self.total += known.users.len();
        self.coupons.insert(coupon, known);
    }
}

impl Holders {
    /// The users among `users` who hold `coupon`, whose `version` and
    /// `total_quantity` the caller read under the coupon's row lock (and
    /// still holds): from memory when it is whole at that version, otherwise
    /// read from the table (all holders, and remembered, unless there are
    /// too many).
    pub(super) async fn among(
        &self,
        tx: &mut sqlx::Transaction<'_, MySql>,
        coupon: CouponId,
        version: Version,
        total_quantity: i64,
        users: &HashSet<i64>,
    ) -> Result<HashSet<i64>, DbError> {
        if let Some(known) = self.lock().coupons.get(&coupon) {
            if known.version == version {
                metrics::counter!("coupon_issue_holder_reads_total", "from" => "memory")
                    .increment(1);
                return Ok(users.intersection(&known.users).copied().collect());
            }
        }
        self.forget(coupon);
        // A coupon of a larger total is not read whole (an operator's
        // restock by plain SQL can still give it more holders: the read
        // stops past the limit).
        if total_quantity > MAX_HOLDERS as i64 {
            return holders_among(tx, coupon, users).await;
        }
        metrics::counter!("coupon_issue_holder_reads_total", "from" => "table").increment(1);
        let all: HashSet<i64> =
            sqlx::query_scalar("SELECT user_id FROM user_coupon WHERE coupon_id = ? LIMIT ?")
                .bind(coupon.get())
                .bind(MAX_HOLDERS as i64 + 1)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .collect();
        if all.len() > MAX_HOLDERS {
            return holders_among(tx, coupon, users).await;
        }
        let found = users.intersection(&all).copied().collect();
        self.lock().insert(
            coupon,
            Known {
                version,
                users: all,
            },
        );
        Ok(found)
    }

    /// After a commit that raised the holders version from `version` by the
    /// number of `winners`: they hold the coupon now. A memory at another
    /// version is dropped.
    pub(super) fn committed(&self, coupon: CouponId, version: Version, winners: &[i64]) {
        let mut inner = self.lock();
        let Some(known) = inner.coupons.get_mut(&coupon) else {
            return;
        };
        if known.version != version {
            inner.remove(coupon);
            return;
        }
        let before = known.users.len();
        known.version.holders += winners.len() as i64;
        known.users.extend(winners);
        let added = known.users.len() - before;
        inner.total += added;
        if inner.total > MAX_HOLDERS {
            inner.remove(coupon);
        }
    }

    /// Drops what is remembered of `coupon`.
    pub(super) fn forget(&self, coupon: CouponId) {
        self.lock().remove(coupon);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing is left half-written under the lock.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The users among `users` who hold `coupon`, read from the table.
pub(super) async fn holders_among(
    tx: &mut sqlx::Transaction<'_, MySql>,
    coupon: CouponId,
    users: &HashSet<i64>,
) -> Result<HashSet<i64>, DbError> {
    metrics::counter!("coupon_issue_holder_reads_total", "from" => "batch").increment(1);
    let mut q =
        sqlx::QueryBuilder::<MySql>::new("SELECT user_id FROM user_coupon WHERE coupon_id = ");
    q.push_bind(coupon.get()).push(" AND user_id IN ");
    q.push_tuples(users, |mut b, u| {
        b.push_bind(*u);
    });
    Ok(q.build_query_scalar::<i64>()
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect())
}
