//! The invariants of a finished sale, checked against MySQL and against what
//! the api told its clients. Tests, the benchmark and operators' scripts all
//! use the same checks.
//!
//! What the schema already guarantees is not checked again: one result per
//! request id (its primary key), one `user_coupon` row per user and coupon
//! (a unique key), a stock that never goes below 0 (a check constraint).
//! The checks, numbered as in the violations they report:
//!
//! 1. Stock: the coupons issued in the sale are exactly what the stock lost.
//! 2. Answers: every request answered `202` has a result, and no result
//!    exists but of a request answered `202` or `503 QUEUE_OUTCOME_UNKNOWN`.
//! 3. Places: every result stands where the `202` told its client it waits
//!    (queue and position). Two kinds of request move, and there the stored
//!    place rules: those replayed from the dead-letter queue, and those a
//!    worker forwarded to the active queue after a switch (invariant S6 of
//!    [`crate::switch`]; their stored queue differs from the one told).
//! 4. Epochs: every result went through its epoch's queue.
//! 5. Holders: the `SUCCESS` results and the `user_coupon` rows are the same
//!    requests of the same users.
//! 6. First-come, in accept order (epoch, then the position the client was
//!    told): every `SUCCESS` comes before every `OUT_OF_STOCK`, and every
//!    `DUPLICATE_REQUEST` after a `SUCCESS` of its user (in this sale, or
//!    an earlier one).

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::MySqlPool;
use uuid::Uuid;

use crate::db;
use crate::domain::{accept_order_key, AcceptOrder, CouponId, IssueResult, IssueStatus, QueueType};
use crate::error::DbError;
use crate::switch;

/// Where the api told a client its request waits: the `queue` and
/// `queuePosition` of its `202`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Told {
    pub queue: QueueType,
    pub position: String,
}

/// What the api answered the clients of one sale.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    /// Every request answered `202`, with where its client was told it
    /// waits when that was kept (an operator's list of request ids keeps
    /// only the ids; check 3 then has nothing to compare).
    pub accepted: HashMap<Uuid, Option<Told>>,
    /// Requests answered `503 QUEUE_OUTCOME_UNKNOWN`: the broker died before
    /// confirming, so they may or may not have a result.
    pub unconfirmed: HashSet<Uuid>,
    /// Requests put back on their queue from the dead-letter queue: a new
    /// position, which rules.
    pub replayed: HashSet<Uuid>,
    /// For a sale that followed earlier ones without a reset: the requests
    /// that had a result before it began. Their results and `user_coupon`
    /// rows are left out, and the initial stock is the stock when it began.
    pub earlier: HashSet<Uuid>,
}

impl Answers {
    /// Answers of which only the accepted request ids are known.
    pub fn of_ids(ids: impl IntoIterator<Item = Uuid>) -> Self {
        Self {
            accepted: ids.into_iter().map(|id| (id, None)).collect(),
            ..Self::default()
        }
    }
}

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
    /// Results whose queue is not the one their client was told: forwarded
    /// by a worker after a switch.
    pub forwarded: usize,
    /// Every broken invariant, in words; empty when the sale is correct.
    pub violations: Vec<String>,
}

impl AuditReport {
    pub fn count(&self, status: IssueStatus) -> usize {
        self.by_status.get(status.as_str()).copied().unwrap_or(0)
    }
}

/// Checks one sale of `coupon` that started with `initial_stock` units
/// against what the api answered (see the module's list of checks).
pub async fn audit_sale(
    pool: &MySqlPool,
    coupon: CouponId,
    initial_stock: i64,
    answers: &Answers,
) -> Result<AuditReport, DbError> {
    let mut report = AuditReport::default();
    let v = &mut report.violations;

    let remaining: i64 =
        sqlx::query_scalar("SELECT CAST(stock AS SIGNED) FROM coupon WHERE coupon_id = ?")
            .bind(coupon.get())
            .fetch_one(pool)
            .await?;
    // Every holder, of this sale or an earlier one: a DUPLICATE_REQUEST may
    // follow a SUCCESS of either.
    let all_holders: Vec<(i64, String)> =
        sqlx::query_as("SELECT user_id, request_id FROM user_coupon WHERE coupon_id = ?")
            .bind(coupon.get())
            .fetch_all(pool)
            .await?;
    let holding_users: HashSet<i64> = all_holders.iter().map(|h| h.0).collect();
    let holders: HashMap<Uuid, i64> = all_holders
        .into_iter()
        .filter_map(|(user, id)| Some((Uuid::parse_str(&id).ok()?, user)))
        .filter(|(id, _)| !answers.earlier.contains(id))
        .collect();

    // 1. Stock.
    report.remaining_stock = remaining;
    report.issued = holders.len() as i64;
    if report.issued != initial_stock - remaining {
        v.push(format!(
            "1 stock: issued {} but stock went from {initial_stock} to {remaining}",
            report.issued
        ));
    }

    // 2. Answers.
    let mut results = db::results_for_coupon(pool, coupon).await?;
    results.retain(|r| !answers.earlier.contains(&r.request_id));
    report.results = results.len();
    let stored: HashSet<Uuid> = results.iter().map(|r| r.request_id).collect();
    for r in &results {
        *report.by_status.entry(r.status.as_str()).or_default() += 1;
    }
    let strays: Vec<Uuid> = results
        .iter()
        .map(|r| r.request_id)
        .filter(|id| !answers.accepted.contains_key(id) && !answers.unconfirmed.contains(id))
        .collect();
    if let Some(first) = strays.first() {
        v.push(format!(
            "2 answers: {} results of requests never accepted, e.g. {first}",
            strays.len()
        ));
    }
    report.unconfirmed_processed = answers
        .unconfirmed
        .iter()
        .filter(|id| stored.contains(id))
        .count();
    let missing = answers
        .accepted
        .keys()
        .filter(|id| !stored.contains(id))
        .count();
    if missing > 0 {
        v.push(format!(
            "2 answers: {missing} accepted requests have no result"
        ));
    }

    // 3. Places.
    let told = |r: &IssueResult| answers.accepted.get(&r.request_id)?.as_ref();
    let mut moved = Vec::new();
    for r in &results {
        let Some(t) = told(r) else { continue };
        if answers.replayed.contains(&r.request_id) {
            continue;
        }
        if t.queue != r.queue_type {
            report.forwarded += 1;
        } else if t.position != r.queue_position {
            moved.push(format!(
                "request {} was told {} {} but its result stands at {}",
                r.request_id, t.queue, t.position, r.queue_position
            ));
        }
    }
    if let Some(first) = moved.first() {
        v.push(format!(
            "3 places: {} results stand elsewhere than their clients were told, e.g. {first}",
            moved.len()
        ));
    }

    // 4. Epochs.
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
            "4 epochs: request {} went through {} in epoch {}, whose queue is {}",
            r.request_id, r.queue_type, r.queue_epoch, epochs[&r.queue_epoch]
        ));
    }

    // 5. Holders.
    let winners: HashMap<Uuid, i64> = results
        .iter()
        .filter(|r| r.status == IssueStatus::Success)
        .map(|r| (r.request_id, r.user_id))
        .collect();
    if winners != holders {
        let unmatched = winners
            .iter()
            .filter(|(id, user)| holders.get(id) != Some(user))
            .count()
            + holders
                .iter()
                .filter(|(id, user)| winners.get(id) != Some(user))
                .count();
        v.push(format!(
            "5 holders: {} SUCCESS results and {} user_coupon rows; {unmatched} of them \
             without the same request of the same user on the other side",
            winners.len(),
            holders.len()
        ));
    }

    // 6. First-come, on the positions the clients were told (the stored one
    // where the request moved, see 3).
    let place = |r: &IssueResult| -> Option<AcceptOrder> {
        let position = match told(r) {
            Some(t) if t.queue == r.queue_type && !answers.replayed.contains(&r.request_id) => {
                &t.position
            }
            _ => &r.queue_position,
        };
        accept_order_key(r.queue_epoch.max(0) as u64, position)
    };
    let mut ordered: Vec<(AcceptOrder, &IssueResult)> = Vec::with_capacity(results.len());
    for r in &results {
        match place(r) {
            Some(k) => ordered.push((k, r)),
            None if matches!(
                r.status,
                IssueStatus::Success | IssueStatus::OutOfStock | IssueStatus::DuplicateRequest
            ) =>
            {
                v.push(format!(
                    "6 first-come: unreadable queue position {:?} of request {}",
                    r.queue_position, r.request_id
                ));
            }
            None => {}
        }
    }
    ordered.sort_by_key(|(k, _)| *k);
    let last_success = ordered
        .iter()
        .rfind(|(_, r)| r.status == IssueStatus::Success);
    let first_out = ordered
        .iter()
        .find(|(_, r)| r.status == IssueStatus::OutOfStock);
    if let (Some((s, _)), Some((o, _))) = (last_success, first_out) {
        if s > o {
            v.push(format!(
                "6 first-come: a SUCCESS at (epoch, position) {s:?} comes after an \
                 OUT_OF_STOCK at {o:?}"
            ));
        }
    }
    let mut won: HashSet<i64> = HashSet::new();
    let mut early_duplicates = Vec::new();
    for (k, r) in &ordered {
        match r.status {
            IssueStatus::Success => {
                won.insert(r.user_id);
            }
            IssueStatus::DuplicateRequest => {
                let held_before = won.contains(&r.user_id)
                    || (holding_users.contains(&r.user_id)
                        && !holders.values().any(|u| *u == r.user_id));
                if !held_before {
                    early_duplicates.push(format!("request {} at {k:?}", r.request_id));
                }
            }
            _ => {}
        }
    }
    if let Some(first) = early_duplicates.first() {
        v.push(format!(
            "6 first-come: {} DUPLICATE_REQUEST results come before any SUCCESS of their \
             user, e.g. {first}",
            early_duplicates.len()
        ));
    }
    Ok(report)
}
