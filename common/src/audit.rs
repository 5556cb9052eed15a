//! The invariants of a finished sale, checked against MySQL. Tests, the
//! benchmark and operators' scripts all use the same checks.

use std::collections::{BTreeMap, HashSet};

use sqlx::MySqlPool;
use uuid::Uuid;

use crate::db;
use crate::domain::QueueType;
use crate::domain::{accept_order_key, CouponId, IssueStatus};
use crate::error::DbError;
use crate::switch;

/// Figures of one coupon after a drained sale.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    pub issued: i64,
    pub remaining_stock: i64,
    pub results: usize,
    pub by_status: BTreeMap<&'static str, usize>,
    /// Unconfirmed requests (`503 QUEUE_OUTCOME_UNKNOWN`) that were queued
    /// after all and got a result.
    pub unconfirmed_processed: usize,
    /// Every broken invariant, in words; empty when the sale is correct.
    pub violations: Vec<String>,
}

impl AuditReport {
    pub fn count(&self, status: IssueStatus) -> usize {
        self.by_status.get(status.as_str()).copied().unwrap_or(0)
    }
}

/// Checks one sale of `coupon` that started with `initial_stock` units and
/// accepted exactly the request ids in `accepted` (`202`). `unconfirmed` are
/// ids the api answered `503 QUEUE_OUTCOME_UNKNOWN` for: the broker died
/// before confirming, so they may or may not have a result.
/// issued = initial − remaining ≤ initial; no user holds it twice; every
/// accepted request has exactly one result and no other result exists; every
/// `SUCCESS` comes before every `OUT_OF_STOCK` in accept order (epoch, then
/// queue position: across queue switches too), and every request went
/// through its epoch's queue; every `SUCCESS` matches a `user_coupon` row of
/// the same request.
pub async fn audit_sale(
    pool: &MySqlPool,
    coupon: CouponId,
    initial_stock: i64,
    accepted: &HashSet<Uuid>,
    unconfirmed: &HashSet<Uuid>,
) -> Result<AuditReport, DbError> {
    audit_sale_after(
        pool,
        coupon,
        initial_stock,
        accepted,
        unconfirmed,
        &HashSet::new(),
    )
    .await
}

/// [`audit_sale`] of a sale that followed earlier ones without a reset:
/// `earlier` are the request ids that had a result before it began (their
/// results and `user_coupon` rows are left out), and `initial_stock` is the
/// stock when it began.
pub async fn audit_sale_after(
    pool: &MySqlPool,
    coupon: CouponId,
    initial_stock: i64,
    accepted: &HashSet<Uuid>,
    unconfirmed: &HashSet<Uuid>,
    earlier: &HashSet<Uuid>,
) -> Result<AuditReport, DbError> {
    let is_earlier = |id: &str| Uuid::parse_str(id).is_ok_and(|id| earlier.contains(&id));
    let mut report = AuditReport::default();
    let v = &mut report.violations;

    let remaining: i64 =
        sqlx::query_scalar("SELECT CAST(stock AS SIGNED) FROM coupon WHERE coupon_id = ?")
            .bind(coupon.get())
            .fetch_one(pool)
            .await?;
    let holders: Vec<(i64, String)> =
        sqlx::query_as("SELECT user_id, request_id FROM user_coupon WHERE coupon_id = ?")
            .bind(coupon.get())
            .fetch_all(pool)
            .await?;
    let distinct: HashSet<i64> = holders.iter().map(|h| h.0).collect();
    if distinct.len() != holders.len() {
        v.push(format!(
            "{} users hold the coupon more than once",
            holders.len() - distinct.len()
        ));
    }
    let holders: Vec<(i64, String)> = holders.into_iter().filter(|h| !is_earlier(&h.1)).collect();
    report.remaining_stock = remaining;
    report.issued = holders.len() as i64;
    if report.issued != initial_stock - remaining {
        v.push(format!(
            "issued {} but stock went from {initial_stock} to {remaining}",
            report.issued
        ));
    }
    if report.issued > initial_stock {
        v.push(format!("issued {} > stock {initial_stock}", report.issued));
    }
    let mut results = db::results_for_coupon(pool, coupon).await?;
    results.retain(|r| !earlier.contains(&r.request_id));
    report.results = results.len();
    let mut seen = HashSet::with_capacity(results.len());
    for r in &results {
        *report.by_status.entry(r.status.as_str()).or_default() += 1;
        if !seen.insert(r.request_id) {
            v.push(format!("request {} has two results", r.request_id));
        }
        if !accepted.contains(&r.request_id) && !unconfirmed.contains(&r.request_id) {
            v.push(format!(
                "result for request {} that was never accepted",
                r.request_id
            ));
        }
    }
    report.unconfirmed_processed = unconfirmed.iter().filter(|id| seen.contains(id)).count();
    let missing = accepted.iter().filter(|id| !seen.contains(id)).count();
    if missing > 0 {
        v.push(format!("{missing} accepted requests have no result"));
    }

    let winners: HashSet<String> = results
        .iter()
        .filter(|r| r.status == IssueStatus::Success)
        .map(|r| r.request_id.to_string())
        .collect();
    let held_by: HashSet<String> = holders.iter().map(|h| h.1.clone()).collect();
    if winners != held_by {
        v.push(format!(
            "{} SUCCESS results but {} user_coupon rows, not the same requests",
            winners.len(),
            held_by.len()
        ));
    }

    // Accept order across queue switches: epoch, then place in its queue.
    let epochs: BTreeMap<i64, QueueType> = switch::history(pool)
        .await?
        .into_iter()
        .map(|e| (e.epoch, e.queue_type))
        .collect();
    if let Some(r) = results.iter().find(|r| {
        epochs
            .get(&r.queue_epoch)
            .is_some_and(|q| *q != r.queue_type)
    }) {
        v.push(format!(
            "request {} went through {} in epoch {}, whose queue is {}",
            r.request_id, r.queue_type, r.queue_epoch, epochs[&r.queue_epoch]
        ));
    }
    let order = |status: IssueStatus| {
        results.iter().filter(move |r| r.status == status).map(|r| {
            (
                accept_order_key(r.queue_epoch.max(0) as u64, &r.queue_position),
                r,
            )
        })
    };
    if let Some((_, r)) = order(IssueStatus::Success).find(|(k, _)| k.is_none()) {
        v.push(format!("unreadable queue position {:?}", r.queue_position));
    }
    let last_success = order(IssueStatus::Success).filter_map(|p| p.0).max();
    let first_out = order(IssueStatus::OutOfStock).filter_map(|p| p.0).min();
    if let (Some(s), Some(o)) = (last_success, first_out) {
        if s > o {
            v.push(format!(
                "first-come broken: a SUCCESS at (epoch, position) {s:?} comes after an \
                 OUT_OF_STOCK at {o:?}"
            ));
        }
    }
    Ok(report)
}
