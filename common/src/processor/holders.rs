//! A worker's memory of who holds its coupons, so that a batch need not ask
//! MySQL which of its users already hold the coupon.
//!
//! Whatever changes a coupon's holders raises `coupon.holders_version` in
//! the same transaction: the processor, under the coupon's row lock, by the
//! winners it inserts, and an operator's reset that clears them. The value
//! only ever grows, so a memory of the holders as they were at version `v`
//! is still whole while the version read under the lock is `v`; when it is
//! not (another worker issued some, a reset, or a commit whose outcome was
//! never learnt), the memory is filled again from the table, under the
//! lock. MySQL stays the authority: the memory only ever answers for a
//! version it was read or kept at.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use sqlx::MySql;

use crate::domain::CouponId;
use crate::error::DbError;

/// Holders remembered at most, of all coupons together (some 10 MB): a
/// coupon of a larger total is not remembered (its batches read the holders
/// among their users, as without a memory), and one that would take the
/// memory past it starts the memory again empty.
const MAX_HOLDERS: usize = 1_000_000;

/// What one worker remembers of its coupons' holders.
#[derive(Debug, Default)]
pub struct Holders {
    coupons: Mutex<HashMap<CouponId, Known>>,
}

#[derive(Debug)]
struct Known {
    /// `coupon.holders_version` when `users` were whole.
    version: i64,
    users: HashSet<i64>,
}

impl Holders {
    /// The users among `users` who hold `coupon`, whose `holders_version`
    /// and `total_quantity` the caller read under the coupon's row lock (and
    /// still holds): from memory when it is whole at that version, otherwise
    /// read from the table (all holders when the coupon's total is small
    /// enough to remember them, and remembered).
    pub(super) async fn among(
        &self,
        tx: &mut sqlx::Transaction<'_, MySql>,
        coupon: CouponId,
        version: i64,
        total_quantity: i64,
        users: &HashSet<i64>,
    ) -> Result<HashSet<i64>, DbError> {
        if let Some(known) = self.lock().get(&coupon) {
            if known.version == version {
                metrics::counter!("coupon_issue_holder_reads_total", "from" => "memory")
                    .increment(1);
                return Ok(users.intersection(&known.users).copied().collect());
            }
        }
        if total_quantity > MAX_HOLDERS as i64 {
            // Too many to remember: ask about these users only.
            return holders_among(tx, coupon, users).await;
        }
        metrics::counter!("coupon_issue_holder_reads_total", "from" => "table").increment(1);
        let all: HashSet<i64> =
            sqlx::query_scalar("SELECT user_id FROM user_coupon WHERE coupon_id = ?")
                .bind(coupon.get())
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .collect();
        let found = users.intersection(&all).copied().collect();
        let mut coupons = self.lock();
        let others: usize = coupons
            .iter()
            .filter(|(c, _)| **c != coupon)
            .map(|(_, k)| k.users.len())
            .sum();
        if others + all.len() > MAX_HOLDERS {
            coupons.clear();
        }
        coupons.insert(
            coupon,
            Known {
                version,
                users: all,
            },
        );
        Ok(found)
    }

    /// After a commit that raised the version from `version` by the
    /// number of `winners`: they hold the coupon now. A memory at another
    /// version is dropped.
    pub(super) fn committed(&self, coupon: CouponId, version: i64, winners: &[i64]) {
        let mut coupons = self.lock();
        match coupons.get_mut(&coupon) {
            Some(known) if known.version == version => {
                known.version += winners.len() as i64;
                known.users.extend(winners);
                if known.users.len() > MAX_HOLDERS {
                    coupons.remove(&coupon);
                }
            }
            Some(_) => {
                coupons.remove(&coupon);
            }
            None => {}
        }
    }

    /// Drops what is remembered of `coupon`.
    pub(super) fn forget(&self, coupon: CouponId) {
        self.lock().remove(&coupon);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CouponId, Known>> {
        // Nothing is left half-written under the lock.
        self.coupons
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
