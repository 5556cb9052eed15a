//! The shared processor: decides a batch of one coupon's events, in queue
//! order, in one transaction. Both queue modes feed it.
//!
//! Exactly-once effect on at-least-once delivery: an event whose request id
//! already has a result is skipped, so a batch delivered again (a worker died
//! after commit but before acknowledging) changes nothing. The coupon row is
//! locked for the whole transaction, so two workers that ever hold the same
//! coupon at once are serialised by MySQL, not by luck.
//!
//! A batch is first decided as if none of its request ids had a result, and
//! its results are inserted before anything else is written: the results
//! table's primary key then says whether one existed (a duplicate key). Only
//! then, which takes a redelivery or a replayed dead letter, or when the
//! batch holds late events (an earlier queue epoch, which may have been
//! decided already), is the transaction rolled back and the batch decided
//! again after reading which results exist. A first delivery, nearly every
//! batch, so saves the read.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Utc};
use sqlx::{MySql, MySqlPool, QueryBuilder};
use tracing::instrument;

mod holders;
mod retry;

use crate::domain::{CouponId, IssueResult, IssueStatus, QueuedEvent};
use crate::error::DbError;
use crate::queue::Settled;
pub use holders::Holders;
pub use retry::{process_batch_with_retry, RetryPolicy};

/// Largest batch the processor takes; keeps bulk statements well under
/// MySQL's 65,535 placeholders.
pub const MAX_BATCH: usize = 5_000;

/// What one call of [`process_batch`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Results written by this call, in queue order.
    pub results: Vec<IssueResult>,
    /// Events skipped because their request id already had a result.
    pub already_processed: usize,
    /// The coupon exists and has no stock left after this batch.
    pub sold_out: bool,
    /// Events not decided because the coupon had already processed a later
    /// epoch (invariant S6): the caller forwards them to the active queue
    /// before acknowledging the batch.
    pub late: Vec<QueuedEvent>,
    /// Every event of the batch that has its result now, written by this
    /// call or before (a redelivery): what the repeat gate settles.
    pub settled: Vec<Settled>,
}

/// The issue rules of a coupon, read under its row lock.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct CouponRules {
    pub stock: i32,
    /// The highest queue epoch of the coupon's processed requests.
    pub queue_epoch: i64,
    pub issue_starts_at: Option<DateTime<Utc>>,
    pub issue_ends_at: Option<DateTime<Utc>>,
}

/// The coupon's row as the processor locks it: its rules and the version
/// of its holders (see [`Holders`]).
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
struct LockedCoupon {
    #[sqlx(flatten)]
    rules: CouponRules,
    total_quantity: i32,
    created_at: chrono::NaiveDateTime,
    holders_version: i64,
}

impl LockedCoupon {
    fn version(&self) -> holders::Version {
        holders::Version {
            created_at: self.created_at,
            holders: self.holders_version,
        }
    }
}

/// Decides each event in order. `coupon` is `None` when the coupon does not
/// exist; `holders` are the users who already hold it. Pure, so the rules can
/// be tested without a database.
pub fn decide(
    coupon: Option<CouponRules>,
    holders: &mut HashSet<i64>,
    events: &[&QueuedEvent],
) -> Vec<(IssueStatus, Option<String>)> {
    let mut stock = coupon.map_or(0, |c| c.stock.max(0));
    events
        .iter()
        .map(|q| {
            let e = &q.event;
            let Some(rules) = coupon else {
                return (
                    IssueStatus::ValidationFailed,
                    Some(format!("coupon {} does not exist", e.coupon_id)),
                );
            };
            if rules.issue_starts_at.is_some_and(|t| e.requested_at < t) {
                return (
                    IssueStatus::ValidationFailed,
                    Some("issue window has not opened".into()),
                );
            }
            if rules.issue_ends_at.is_some_and(|t| e.requested_at >= t) {
                return (
                    IssueStatus::ValidationFailed,
                    Some("issue window has closed".into()),
                );
            }
            if holders.contains(&e.user_id.get()) {
                return (
                    IssueStatus::DuplicateRequest,
                    Some("user already holds this coupon".into()),
                );
            }
            if stock == 0 {
                return (IssueStatus::OutOfStock, Some("no stock left".into()));
            }
            stock -= 1;
            holders.insert(e.user_id.get());
            (IssueStatus::Success, None)
        })
        .collect()
}

/// Splits events (one coupon's, queue order) into those decided now and the
/// late ones (invariant S6): an event of an epoch below the highest epoch
/// processed so far, the coupon's `processed` epoch or an earlier event's of
/// the batch. Returns the epoch the coupon has processed up to afterwards.
/// Pure, so the rule can be tested without a database.
pub fn split_late<'a>(
    processed: u64,
    events: &[&'a QueuedEvent],
) -> (Vec<&'a QueuedEvent>, Vec<&'a QueuedEvent>, u64) {
    let mut highest = processed;
    let (mut now, mut late) = (Vec::with_capacity(events.len()), Vec::new());
    for &q in events {
        if q.event.epoch < highest {
            late.push(q);
        } else {
            highest = q.event.epoch;
            now.push(q);
        }
    }
    (now, late, highest)
}

/// Processes events of one coupon, in queue order, in one transaction: lock
/// the coupon, skip events that already have a result, set the late ones
/// aside, decide the rest, insert all results, insert the winners, take the
/// stock once, commit. Which events have a result is first left to the
/// results' primary key, and read only when it finds one (see the module
/// documentation) or when some events are late. The holders among the
/// batch's users are read from the table.
pub async fn process_batch(
    pool: &MySqlPool,
    events: &[QueuedEvent],
) -> Result<BatchOutcome, DbError> {
    process_batch_with(pool, None, events).await
}

/// [`process_batch`], with the holders among the batch's users taken from
/// `holders` when it remembers the coupon's (a worker's memory, see
/// [`Holders`]).
#[instrument(skip_all, fields(coupon_id, events = events.len()))]
pub async fn process_batch_with(
    pool: &MySqlPool,
    holders: Option<&Holders>,
    events: &[QueuedEvent],
) -> Result<BatchOutcome, DbError> {
    let Some(first) = events.first() else {
        return Ok(BatchOutcome::default());
    };
    let coupon_id = first.event.coupon_id;
    tracing::Span::current().record("coupon_id", coupon_id.get());
    if events.len() > MAX_BATCH {
        return Err(DbError::InvalidBatch(format!(
            "{} events, at most {MAX_BATCH}",
            events.len()
        )));
    }
    if let Some(other) = events.iter().find(|q| q.event.coupon_id != coupon_id) {
        return Err(DbError::InvalidBatch(format!(
            "batch of coupon {coupon_id} holds an event of coupon {}",
            other.event.coupon_id
        )));
    }
    let started = Instant::now();
    let outcome = match decide_and_write(pool, holders, coupon_id, events, Check::ByKey).await? {
        Some(outcome) => outcome,
        None => {
            metrics::counter!("coupon_issue_batch_rechecks_total").increment(1);
            decide_and_write(pool, holders, coupon_id, events, Check::First)
                .await?
                .ok_or_else(|| {
                    DbError::UniqueViolation("results read first, yet a duplicate result".into())
                })?
        }
    };
    if !outcome.results.is_empty() {
        metrics::histogram!("coupon_issue_batch_seconds").record(started.elapsed().as_secs_f64());
    }
    for r in &outcome.results {
        metrics::counter!("coupon_issue_results_total", "status" => r.status.as_str()).increment(1);
    }
    Ok(outcome)
}

/// How [`decide_and_write`] learns which request ids have a result already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Reads them before deciding.
    First,
    /// Decides as if none had, and lets the results' primary key tell.
    ByKey,
}

/// One transaction over the batch; `None` when `Check::ByKey` found a
/// result that existed (nothing was written).
async fn decide_and_write(
    pool: &MySqlPool,
    memory: Option<&Holders>,
    coupon_id: CouponId,
    events: &[QueuedEvent],
    check: Check,
) -> Result<Option<BatchOutcome>, DbError> {
    let mut tx = pool.begin().await?;

    let locked = lock_coupon(&mut tx, coupon_id).await?;
    let coupon = locked.map(|l| l.rules);
    let existing = match check {
        Check::First => existing_results(&mut tx, events).await?,
        Check::ByKey => HashMap::new(),
    };
    let mut seen = HashSet::with_capacity(events.len());
    // A SYSTEM_ERROR is final for the user but not for the event: an event
    // replayed from the dead-letter queue is decided again and its
    // SYSTEM_ERROR replaced. Any other result means "already done".
    let fresh: Vec<&QueuedEvent> = events
        .iter()
        .filter(|q| {
            existing
                .get(&q.event.event_id.to_string())
                .is_none_or(|status| *status == IssueStatus::SystemError)
                && seen.insert(q.event.event_id)
        })
        .collect();
    let already_processed = events.len() - fresh.len();
    let mut settled: Vec<Settled> = events
        .iter()
        .filter_map(|q| {
            let status = *existing.get(&q.event.event_id.to_string())?;
            (status != IssueStatus::SystemError)
                .then(|| Settled::new(q.event.event_id, q.event.user_id, status))
        })
        .collect();
    // invariant S6: decided in epoch order or not here at all. A coupon that
    // does not exist has no order to keep.
    let processed_epoch = coupon.map_or(0, |c| c.queue_epoch.max(0) as u64);
    let (fresh, late, highest_epoch) = if coupon.is_some() {
        split_late(processed_epoch, &fresh)
    } else {
        (fresh, Vec::new(), 0)
    };
    if check == Check::ByKey && !late.is_empty() {
        // A late event may have been decided already (it is then not
        // forwarded again): read which ones were.
        tx.rollback().await?;
        return Ok(None);
    }
    let late: Vec<QueuedEvent> = late.into_iter().cloned().collect();
    if !late.is_empty() {
        tracing::info!(coupon = %coupon_id, late = late.len(), epoch = highest_epoch,
            "events of an earlier queue epoch arrived after a later one was processed; forwarding them");
    }
    if fresh.is_empty() {
        tx.commit().await?;
        return Ok(Some(BatchOutcome {
            results: Vec::new(),
            already_processed,
            sold_out: coupon.is_some_and(|c| c.stock <= 0),
            late,
            settled,
        }));
    }
    let replayed: Vec<String> = fresh
        .iter()
        .map(|q| q.event.event_id.to_string())
        .filter(|id| existing.contains_key(id))
        .collect();
    if !replayed.is_empty() {
        let mut q = QueryBuilder::<MySql>::new("DELETE FROM coupon_issue_result WHERE status = ");
        q.push_bind(IssueStatus::SystemError)
            .push(" AND request_id IN ");
        q.push_tuples(&replayed, |mut b, id| {
            b.push_bind(id);
        });
        q.build().execute(&mut *tx).await?;
    }

    let users: HashSet<i64> = fresh.iter().map(|q| q.event.user_id.get()).collect();
    let mut holders = match (locked, memory) {
        (None, _) => HashSet::new(),
        (Some(l), Some(memory)) => {
            memory
                .among(
                    &mut tx,
                    coupon_id,
                    l.version(),
                    l.total_quantity.into(),
                    &users,
                )
                .await?
        }
        (Some(_), None) => holders::holders_among(&mut tx, coupon_id, &users).await?,
    };
    let decisions = decide(coupon, &mut holders, &fresh);
    let now = Utc::now();
    let results: Vec<IssueResult> = fresh
        .iter()
        .zip(decisions)
        .map(|(q, (status, reason))| result_of(q, status, reason, now))
        .collect();

    // First, so that a result that existed stops the batch before anything
    // else is written.
    match insert_results(&mut *tx, &results, check == Check::First).await {
        Err(DbError::UniqueViolation(_)) if check == Check::ByKey => {
            tx.rollback().await?;
            return Ok(None);
        }
        other => other?,
    }
    let winners: Vec<&IssueResult> = results
        .iter()
        .filter(|r| r.status == IssueStatus::Success)
        .collect();
    if !winners.is_empty() {
        let mut insert = QueryBuilder::<MySql>::new(
            "INSERT INTO user_coupon (user_id, coupon_id, status, request_id, issued_at) ",
        );
        insert.push_values(&winners, |mut b, r| {
            b.push_bind(r.user_id)
                .push_bind(r.coupon_id)
                .push_bind("ISSUED")
                .push_bind(r.request_id.to_string())
                .push_bind(now.naive_utc());
        });
        if let Err(e) = insert.build().execute(&mut *tx).await {
            // A holder the memory did not know of (added without raising
            // the version, see `Holders`): the retry reads the table.
            if let Some(memory) = memory {
                memory.forget(coupon_id);
            }
            return Err(DbError::from_sqlx(e));
        }
    }
    if !winners.is_empty() || highest_epoch > processed_epoch {
        let taken = sqlx::query(
            "UPDATE coupon SET stock = stock - ?, holders_version = holders_version + ?, \
             queue_epoch = GREATEST(queue_epoch, ?) WHERE coupon_id = ? AND stock >= ?",
        )
        .bind(winners.len() as i64)
        .bind(winners.len() as i64)
        .bind(highest_epoch as i64)
        .bind(coupon_id.get())
        .bind(winners.len() as i64)
        .execute(&mut *tx)
        .await?;
        if taken.rows_affected() != 1 {
            return Err(DbError::StockChanged(coupon_id));
        }
    }
    tx.commit().await?;
    if let (Some(memory), Some(l)) = (memory, locked) {
        let users: Vec<i64> = winners.iter().map(|r| r.user_id).collect();
        memory.committed(coupon_id, l.version(), &users);
    }

    let sold_out = coupon.is_some_and(|c| i64::from(c.stock) <= winners.len() as i64);
    settled.extend(
        fresh
            .iter()
            .zip(&results)
            .map(|(q, r)| Settled::new(q.event.event_id, q.event.user_id, r.status)),
    );
    Ok(Some(BatchOutcome {
        results,
        already_processed,
        sold_out,
        late,
        settled,
    }))
}

/// The coupon's row, locked until the transaction ends. The first read of
/// the transaction: a locking read takes no snapshot, so the plain reads
/// after it (which results exist, the holders) see every transaction that
/// held the lock before.
async fn lock_coupon(
    tx: &mut sqlx::Transaction<'_, MySql>,
    coupon_id: CouponId,
) -> Result<Option<LockedCoupon>, DbError> {
    Ok(sqlx::query_as(
        "SELECT stock, queue_epoch, issue_starts_at, issue_ends_at, total_quantity, created_at, \
         holders_version FROM coupon \
         WHERE coupon_id = ? FOR UPDATE",
    )
    .bind(coupon_id.get())
    .fetch_optional(&mut **tx)
    .await?)
}

/// Request ids of the batch that already have a result, with its status.
async fn existing_results(
    tx: &mut sqlx::Transaction<'_, MySql>,
    events: &[QueuedEvent],
) -> Result<HashMap<String, IssueStatus>, DbError> {
    let mut q = QueryBuilder::<MySql>::new(
        "SELECT request_id, status FROM coupon_issue_result WHERE request_id IN ",
    );
    q.push_tuples(events, |mut b, e| {
        b.push_bind(e.event.event_id.to_string());
    });
    Ok(q.build_query_as::<(String, IssueStatus)>()
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect())
}

/// The result row of a queued event decided `status` at `processed_at`.
fn result_of(
    q: &QueuedEvent,
    status: IssueStatus,
    reason: Option<String>,
    processed_at: DateTime<Utc>,
) -> IssueResult {
    IssueResult {
        request_id: q.event.event_id,
        coupon_id: q.event.coupon_id.get(),
        user_id: q.event.user_id.get(),
        status,
        reason,
        queue_position: q.position.clone(),
        queue_type: q.queue,
        queue_epoch: q.event.epoch as i64,
        requested_at: q.event.requested_at,
        processed_at,
    }
}

/// Inserts results. `keep_existing`: a request id that already has one
/// keeps it; otherwise such a request id fails the insert with
/// [`DbError::UniqueViolation`].
async fn insert_results<'c, E>(
    executor: E,
    results: &[IssueResult],
    keep_existing: bool,
) -> Result<(), DbError>
where
    E: sqlx::Executor<'c, Database = MySql>,
{
    let mut q = QueryBuilder::<MySql>::new(
        "INSERT INTO coupon_issue_result (request_id, coupon_id, user_id, status, reason, \
         queue_position, queue_type, queue_epoch, requested_at, processed_at) ",
    );
    q.push_values(results, |mut b, r| {
        b.push_bind(r.request_id.to_string())
            .push_bind(r.coupon_id)
            .push_bind(r.user_id)
            .push_bind(r.status)
            .push_bind(r.reason.clone())
            .push_bind(r.queue_position.clone())
            .push_bind(r.queue_type)
            .push_bind(r.queue_epoch)
            .push_bind(r.requested_at.naive_utc())
            .push_bind(r.processed_at.naive_utc());
    });
    if keep_existing {
        q.push(" ON DUPLICATE KEY UPDATE request_id = request_id");
    }
    q.build()
        .execute(executor)
        .await
        .map_err(DbError::from_sqlx)?;
    Ok(())
}

/// Records `SYSTEM_ERROR` for events that could not be processed (they go to
/// the dead-letter queue). Events that already have a result keep it.
pub async fn record_system_errors(
    pool: &MySqlPool,
    events: &[QueuedEvent],
    reason: &str,
) -> Result<(), DbError> {
    if events.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let reason: String = reason.chars().take(500).collect();
    let results: Vec<IssueResult> = events
        .iter()
        .map(|q| result_of(q, IssueStatus::SystemError, Some(reason.clone()), now))
        .collect();
    insert_results(pool, &results, true).await?;
    metrics::counter!("coupon_issue_results_total", "status" => IssueStatus::SystemError.as_str())
        .increment(events.len() as u64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CouponIssueEvent, UserId};

    fn ev(user: i64, at: DateTime<Utc>) -> QueuedEvent {
        let mut e = CouponIssueEvent::new(
            CouponId::try_from(1).unwrap(),
            UserId::try_from(user).unwrap(),
        );
        e.requested_at = at;
        QueuedEvent {
            event: e,
            queue: crate::domain::QueueType::Redis,
            position: format!("1-{user}"),
        }
    }

    #[test]
    fn decides_in_order_until_stock_runs_out() {
        let now = Utc::now();
        let events: Vec<QueuedEvent> = [1, 2, 1, 3, 4].iter().map(|u| ev(*u, now)).collect();
        let refs: Vec<&QueuedEvent> = events.iter().collect();
        let rules = CouponRules {
            stock: 2,
            queue_epoch: 1,
            issue_starts_at: None,
            issue_ends_at: None,
        };
        let mut holders = HashSet::from([4]);
        let got: Vec<IssueStatus> = decide(Some(rules), &mut holders, &refs)
            .into_iter()
            .map(|d| d.0)
            .collect();
        assert_eq!(
            got,
            [
                IssueStatus::Success,
                IssueStatus::Success,
                IssueStatus::DuplicateRequest,
                IssueStatus::OutOfStock,
                IssueStatus::DuplicateRequest
            ]
        );
    }

    #[test]
    fn window_and_unknown_coupon_fail_validation() {
        let now = Utc::now();
        let events = [ev(1, now - chrono::Duration::hours(2)), ev(2, now)];
        let refs: Vec<&QueuedEvent> = events.iter().collect();
        let rules = CouponRules {
            stock: 5,
            queue_epoch: 1,
            issue_starts_at: Some(now - chrono::Duration::hours(1)),
            issue_ends_at: Some(now),
        };
        let got = decide(Some(rules), &mut HashSet::new(), &refs);
        assert!(got.iter().all(|d| d.0 == IssueStatus::ValidationFailed));
        let got = decide(None, &mut HashSet::new(), &refs);
        assert!(got.iter().all(|d| d.0 == IssueStatus::ValidationFailed));
    }

    #[test]
    fn events_of_an_epoch_below_one_already_processed_are_late() {
        let now = Utc::now();
        let at = |user, epoch| {
            let mut q = ev(user, now);
            q.event.epoch = epoch;
            q
        };
        let events = [at(1, 2), at(2, 3), at(3, 2), at(4, 3), at(5, 4)];
        let refs: Vec<&QueuedEvent> = events.iter().collect();
        let users =
            |v: &[&QueuedEvent]| v.iter().map(|q| q.event.user_id.get()).collect::<Vec<_>>();

        let (now_, late, highest) = split_late(1, &refs);
        assert_eq!(
            (users(&now_), users(&late), highest),
            (vec![1, 2, 4, 5], vec![3], 4)
        );

        let (now_, late, highest) = split_late(3, &refs);
        assert_eq!(
            (users(&now_), users(&late), highest),
            (vec![2, 4, 5], vec![1, 3], 4)
        );

        let (now_, late, highest) = split_late(9, &refs);
        assert_eq!((now_.len(), late.len(), highest), (0, 5, 9));
    }
}
