//! `loadgen drain`: times a worker through the backlog `sale --backlog`
//! left in the queue; and the MySQL side both share: counting and reading
//! results, and the invariant audit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::NaiveDateTime;
use common::audit::{audit_sale, Answers};
use common::domain::CouponId;
use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;
use uuid::Uuid;

use crate::figures::{AuditFigures, DrainFigures, Step};
use crate::stats::per_second;

/// The accepted requests of a backlog, per coupon.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backlog {
    pub coupons: Vec<BacklogCoupon>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BacklogCoupon {
    pub coupon_id: i64,
    pub stock: i64,
    pub accepted: Vec<Uuid>,
}

fn in_list(coupons: &[i64]) -> String {
    coupons
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn result_count(pool: &MySqlPool, coupons: &[i64]) -> anyhow::Result<usize> {
    // Ids are integers the api gave us, so they can go into the text.
    let sql = format!(
        "SELECT COUNT(*) FROM coupon_issue_result WHERE coupon_id IN ({})",
        in_list(coupons)
    );
    let n: i64 = sqlx::query_scalar(&sql).fetch_one(pool).await?;
    Ok(n as usize)
}

/// Polls the result count every `every` until it reaches `expected`;
/// `give_up` says why to stop early. Returns when the first result was seen
/// (time, count) and when the last one was.
pub async fn wait_for_results(
    pool: &MySqlPool,
    coupons: &[i64],
    expected: usize,
    every: Duration,
    give_up: impl Fn() -> Option<String>,
) -> anyhow::Result<((Instant, usize), Instant)> {
    let mut first = None;
    loop {
        let n = result_count(pool, coupons).await?;
        let now = Instant::now();
        if n > 0 && first.is_none() {
            first = Some((now, n));
        }
        if n >= expected {
            return Ok((first.unwrap_or((now, n)), now));
        }
        if let Some(why) = give_up() {
            bail!("{why}: {n} of {expected}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Whether any of the coupons has a result (one index seek).
async fn any_result(pool: &MySqlPool, coupons: &[i64]) -> anyhow::Result<bool> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM coupon_issue_result WHERE coupon_id IN ({}))",
        in_list(coupons)
    );
    Ok(sqlx::query_scalar::<_, i64>(&sql).fetch_one(pool).await? == 1)
}

/// How many of these requests have a result (primary-key look-ups).
async fn results_of(pool: &MySqlPool, requests: &[Uuid]) -> anyhow::Result<usize> {
    if requests.is_empty() {
        return Ok(0);
    }
    let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(
        "SELECT COUNT(*) FROM coupon_issue_result WHERE request_id IN ",
    );
    q.push_tuples(requests, |mut b, id| {
        b.push_bind(id.to_string());
    });
    let n: i64 = q.build_query_scalar().fetch_one(pool).await?;
    Ok(n as usize)
}

pub async fn result_times(
    pool: &MySqlPool,
    coupons: &[i64],
) -> anyhow::Result<Vec<(NaiveDateTime, NaiveDateTime)>> {
    let sql = format!(
        "SELECT requested_at, processed_at FROM coupon_issue_result WHERE coupon_id IN ({})",
        in_list(coupons)
    );
    Ok(sqlx::query_as(&sql).fetch_all(pool).await?)
}

/// The invariant audit of every coupon; violations are prefixed with the
/// coupon id.
pub async fn audit(
    pool: &MySqlPool,
    per_coupon: &BTreeMap<i64, Vec<Uuid>>,
    stock: i64,
) -> anyhow::Result<AuditFigures> {
    let mut violations = vec![];
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut issued = 0;
    for (coupon, ids) in per_coupon {
        let answers = Answers::of_ids(ids.iter().copied());
        let r = audit_sale(pool, CouponId::try_from(*coupon)?, stock, &answers).await?;
        issued += r.issued;
        for (k, v) in r.by_status {
            *by_status.entry(k.to_owned()).or_default() += v;
        }
        violations.extend(
            r.violations
                .into_iter()
                .map(|v| format!("coupon {coupon}: {v}")),
        );
    }
    Ok(AuditFigures {
        issued,
        by_status,
        violations,
    })
}

#[derive(clap::Args)]
pub struct DrainArgs {
    #[arg(long, env = "DATABASE_URL", default_value = common::config::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// The file `sale --backlog` wrote.
    #[arg(long)]
    pub backlog: PathBuf,
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub step: Option<Step>,
}

/// Waits for a worker to process the backlog `sale --backlog` left. The
/// rate comes from MySQL's own timestamps: every result of one batch carries
/// the batch's `processed_at`, so (results − last batch) ÷ (last − first
/// `processed_at`) is the worker's steady rate, without its start-up, its
/// first poll, or this process's polling (every 100 ms, only to see the end,
/// with index look-ups until the last requests are done).
pub async fn drain(args: &DrainArgs) -> anyhow::Result<DrainFigures> {
    let backlog: Backlog = serde_json::from_slice(&std::fs::read(&args.backlog)?)?;
    let pool = common::db::pool(&args.database_url, 2).context("DATABASE_URL")?;
    let coupons: Vec<i64> = backlog.coupons.iter().map(|c| c.coupon_id).collect();
    let expected: usize = backlog.coupons.iter().map(|c| c.accepted.len()).sum();
    let start = Instant::now();
    let deadline = Duration::from_secs(args.timeout_secs);
    let give_up =
        || (start.elapsed() > deadline).then(|| format!("backlog not drained after {deadline:?}"));
    // Until the last accepted requests have their results, poll with index
    // look-ups only: a COUNT(*) of a table growing to 100,000 rows every
    // 100 ms took a sixth of MariaDB's time during a drain, time the worker
    // being measured then waited for.
    let tail: Vec<Uuid> = backlog
        .coupons
        .iter()
        .flat_map(|c| c.accepted.iter().rev().take(64))
        .copied()
        .collect();
    let t0 = loop {
        if any_result(&pool, &coupons).await? {
            break Instant::now();
        }
        if let Some(why) = give_up() {
            bail!("{why}: no result");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    while results_of(&pool, &tail).await? < tail.len() {
        if let Some(why) = give_up() {
            bail!("{why}: the last requests have no result");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, t1) = wait_for_results(
        &pool,
        &coupons,
        expected,
        Duration::from_millis(100),
        give_up,
    )
    .await?;
    let processed: Vec<NaiveDateTime> = result_times(&pool, &coupons)
        .await?
        .into_iter()
        .map(|r| r.1)
        .collect();
    let first = processed.iter().min().copied().unwrap_or_default();
    let last = processed.iter().max().copied().unwrap_or_default();
    let last_batch = processed.iter().filter(|t| **t == last).count();
    let span = (last - first).to_std().unwrap_or_default();
    let per_coupon = backlog
        .coupons
        .iter()
        .map(|c| (c.coupon_id, c.accepted.clone()))
        .collect();
    let stock = backlog.coupons.first().map_or(0, |c| c.stock);
    let audit = audit(&pool, &per_coupon, stock).await?;
    Ok(DrainFigures {
        results: expected,
        results_per_second: per_second(expected - last_batch, span),
        processed_span_seconds: span.as_secs_f64(),
        last_batch,
        observed_seconds: t1.duration_since(t0).as_secs_f64(),
        ok: audit.violations.is_empty(),
        audit,
    })
}
