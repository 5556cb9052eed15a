//! `loadgen sale`: creates the run's coupons through the admin api, sends the
//! workload, waits until every accepted request has its result in MySQL,
//! and audits the sale. `loadgen drain` times a worker through a backlog
//! that `sale --backlog` left in the queue.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{NaiveDateTime, Utc};
use common::audit::audit_sale;
use common::domain::CouponId;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::MySqlPool;
use uuid::Uuid;

use crate::load::{self, Counters, Outcome, Pace, Plan, Sample};
use crate::stats::{self, per_second, Latency};
use crate::workload;

/// Width of one timeline bucket.
const BUCKET: Duration = Duration::from_millis(250);

#[derive(clap::Args)]
pub struct SaleArgs {
    #[arg(long, env = "API_URL", default_value = "http://127.0.0.1:9090")]
    pub api: String,
    #[arg(long, env = "DATABASE_URL", default_value = common::config::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    #[arg(long, env = "ADMIN_TOKEN", default_value = "dev-admin-token")]
    pub admin_token: String,
    /// Name of the run in progress lines.
    #[arg(long, default_value = "sale")]
    pub label: String,
    /// Issue calls to send.
    #[arg(long, default_value_t = 100_000)]
    pub requests: usize,
    /// Distinct users among them (the rest are repeats).
    #[arg(long, default_value_t = 50_000)]
    pub users: usize,
    /// Coupons the calls are spread over.
    #[arg(long, default_value_t = 1)]
    pub coupons: usize,
    /// Stock of all coupons together (split evenly).
    #[arg(long, default_value_t = 10_000)]
    pub stock: i64,
    /// Calls in flight at once (closed loop), or at most (open loop).
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Offered calls per second (open loop) instead of a fixed concurrency.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: follow every Nth accepted call until its result is
    /// readable over HTTP (0: none).
    #[arg(long, default_value_t = 200)]
    pub result_sample: usize,
    /// Seed of the call sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Against `loadgen bare-http`: coupons 1..=N, no database, no drain.
    #[arg(long)]
    pub bare: bool,
    /// Only enqueue: write the accepted ids here for `loadgen drain`.
    #[arg(long)]
    pub backlog: Option<PathBuf>,
    /// Give up waiting for results after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
}

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

pub async fn sale(args: SaleArgs) -> anyhow::Result<Value> {
    let concurrency = args.concurrency.max(1);
    let client = load::client(concurrency)?;
    let stock_each = args.stock / args.coupons.max(1) as i64;
    let coupons: Vec<i64> = if args.bare {
        (1..=args.coupons as i64).collect()
    } else {
        let mut ids = Vec::with_capacity(args.coupons);
        for i in 0..args.coupons {
            ids.push(create_coupon(&client, &args, i, stock_each).await?);
        }
        ids
    };
    let calls = workload::calls(args.requests, args.users, coupons.len(), args.seed);
    let urls = calls
        .iter()
        .map(|c| {
            format!(
                "{}/api/coupons/{}/issue?userId={}",
                args.api, coupons[c.coupon], c.user
            )
        })
        .collect();
    let pace = match args.rate {
        Some(rate) => Pace::Open {
            rate,
            connections: concurrency,
        },
        None => Pace::Closed { concurrency },
    };
    let pool = if args.bare {
        None
    } else {
        Some(common::db::pool(&args.database_url, 2).context("DATABASE_URL")?)
    };

    let counters = Arc::new(Counters::default());
    let progress = tokio::spawn(progress(
        args.label.clone(),
        args.requests,
        counters.clone(),
        pool.clone(),
        coupons.clone(),
    ));
    let started_at = Utc::now();
    let start = Instant::now();
    let plan = Plan {
        api: args.api.clone(),
        urls,
        pace,
        result_sample: args.result_sample,
    };
    let (samples, sent) = load::run(client, plan, counters).await?;
    let mut out = load_figures(&samples, sent);
    out["coupons"] = json!(coupons);
    out["requests"] = json!(args.requests);
    out["users"] = json!(args.users);
    out["offeredRate"] = json!(args.rate);
    out["concurrency"] = json!(concurrency);

    let Some(pool) = pool else {
        progress.abort();
        out["ok"] = json!(out["failed"] == 0);
        return Ok(out);
    };
    let mut per_coupon: BTreeMap<i64, Vec<Uuid>> = coupons.iter().map(|c| (*c, vec![])).collect();
    for s in &samples {
        if let Outcome::Accepted(id) = s.outcome {
            per_coupon
                .get_mut(&coupons[calls[s.index].coupon])
                .expect("coupon of the call")
                .push(id);
        }
    }
    if let Some(path) = &args.backlog {
        progress.abort();
        let backlog = Backlog {
            coupons: per_coupon
                .into_iter()
                .map(|(coupon_id, accepted)| BacklogCoupon {
                    coupon_id,
                    stock: stock_each,
                    accepted,
                })
                .collect(),
        };
        std::fs::write(path, serde_json::to_vec(&backlog)?)?;
        out["ok"] = json!(out["failed"] == 0);
        return Ok(out);
    }

    let accepted: usize = per_coupon.values().map(Vec::len).sum();
    let deadline = Duration::from_secs(args.timeout_secs);
    wait_for_results(
        &pool,
        &coupons,
        accepted,
        Duration::from_millis(100),
        || (start.elapsed() > deadline).then(|| format!("results not in after {deadline:?}")),
    )
    .await?;
    let drained = start.elapsed();
    progress.abort();
    out["drainSeconds"] = json!(drained.as_secs_f64());
    out["endToEndPerSecond"] = json!(per_second(accepted, drained));

    let rows = result_times(&pool, &coupons).await?;
    let mut to_result = stats::histogram();
    let mut processed = vec![];
    let mut last_result = Duration::ZERO;
    for (requested, processed_at) in &rows {
        stats::record(
            &mut to_result,
            (*processed_at - *requested).to_std().unwrap_or_default(),
        );
        let offset = (processed_at.and_utc() - started_at)
            .to_std()
            .unwrap_or_default();
        bump(&mut processed, offset);
        last_result = last_result.max(offset);
    }
    // When the worker keeps up, the last result is written before the last
    // call is answered; MySQL's timestamp says when.
    out["lastResultSeconds"] = json!(last_result.as_secs_f64());
    out["requestToResultDb"] = json!(Latency::of(&to_result));
    out["timeline"]["processed"] = json!(rates(&processed));
    let audit = audit(&pool, &per_coupon, stock_each).await?;
    out["ok"] =
        json!(out["failed"] == 0 && audit["violations"].as_array().is_some_and(Vec::is_empty));
    out["audit"] = audit;
    Ok(out)
}

async fn create_coupon(
    client: &reqwest::Client,
    args: &SaleArgs,
    i: usize,
    quantity: i64,
) -> anyhow::Result<i64> {
    let created: Value = client
        .post(format!("{}/api/admin/coupons", args.api))
        .bearer_auth(&args.admin_token)
        .json(&json!({ "name": format!("bench {} #{i}", args.label), "quantity": quantity }))
        .send()
        .await?
        .error_for_status()
        .context("creating a bench coupon")?
        .json()
        .await?;
    created["couponId"]
        .as_i64()
        .context("couponId in the answer")
}

/// Rates, phases and latencies of the HTTP part.
fn load_figures(samples: &[Sample], sent: Duration) -> Value {
    let first_sold_out = samples
        .iter()
        .filter(|s| s.outcome == Outcome::SoldOut)
        .map(|s| s.done)
        .min();
    let last_accepted = samples
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Accepted(_)))
        .map(|s| s.done)
        .max()
        .unwrap_or_default();
    // The open phase ends with the first 409: from then on the api knows a
    // coupon's stock is gone. The sold-out phase starts after the last 202:
    // from then on every coupon is sold out and nothing is enqueued.
    let open_end = first_sold_out.unwrap_or(sent);
    let sold_out_start = first_sold_out.map(|t| t.max(last_accepted));
    let (mut accepted, mut sold_out, mut failed) = (0, 0, 0);
    let (mut accepted_in_open, mut sold_out_in_phase) = (0, 0);
    let (mut lat_accepted, mut lat_sold_out) = (stats::histogram(), stats::histogram());
    let mut to_result = stats::histogram();
    let (mut t_accepted, mut t_sold_out) = (vec![], vec![]);
    for s in samples {
        match s.outcome {
            Outcome::Accepted(_) => {
                accepted += 1;
                accepted_in_open += usize::from(s.done <= open_end);
                stats::record(&mut lat_accepted, s.latency);
                bump(&mut t_accepted, s.done);
            }
            Outcome::SoldOut => {
                sold_out += 1;
                sold_out_in_phase += usize::from(sold_out_start.is_some_and(|t| s.done > t));
                stats::record(&mut lat_sold_out, s.latency);
                bump(&mut t_sold_out, s.done);
            }
            Outcome::Failed => failed += 1,
        }
        if let Some(d) = s.to_result {
            stats::record(&mut to_result, d);
        }
    }
    json!({
        "sent": samples.len(),
        "accepted": accepted,
        "soldOut": sold_out,
        "failed": failed,
        "sendSeconds": sent.as_secs_f64(),
        "openPhaseSeconds": open_end.as_secs_f64(),
        "acceptedPerSecond": per_second(accepted_in_open, open_end),
        "soldOutPhaseSeconds": sold_out_start.map(|t| (sent - t).as_secs_f64()),
        "soldOutPerSecond": sold_out_start.map(|t| per_second(sold_out_in_phase, sent - t)),
        "answersPerSecond": per_second(samples.len(), sent),
        "latencyAccepted": Latency::of(&lat_accepted),
        "latencySoldOut": Latency::of(&lat_sold_out),
        "requestToResultHttp": Latency::of(&to_result),
        "timeline": {
            "bucketSeconds": BUCKET.as_secs_f64(),
            "accepted": rates(&t_accepted),
            "soldOut": rates(&t_sold_out),
        },
    })
}

fn bump(buckets: &mut Vec<u64>, at: Duration) {
    let i = (at.as_millis() / BUCKET.as_millis()) as usize;
    if buckets.len() <= i {
        buckets.resize(i + 1, 0);
    }
    buckets[i] += 1;
}

/// Bucket counts as events per second.
fn rates(buckets: &[u64]) -> Vec<f64> {
    buckets
        .iter()
        .map(|n| *n as f64 / BUCKET.as_secs_f64())
        .collect()
}

fn in_list(coupons: &[i64]) -> String {
    coupons
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

async fn result_count(pool: &MySqlPool, coupons: &[i64]) -> anyhow::Result<usize> {
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
async fn wait_for_results(
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

async fn result_times(
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
async fn audit(
    pool: &MySqlPool,
    per_coupon: &BTreeMap<i64, Vec<Uuid>>,
    stock: i64,
) -> anyhow::Result<Value> {
    let mut violations = vec![];
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    let mut issued = 0;
    for (coupon, ids) in per_coupon {
        let accepted: HashSet<Uuid> = ids.iter().copied().collect();
        let r = audit_sale(
            pool,
            CouponId::try_from(*coupon)?,
            stock,
            &accepted,
            &HashSet::new(),
        )
        .await?;
        issued += r.issued;
        for (k, v) in r.by_status {
            *by_status.entry(k).or_default() += v;
        }
        violations.extend(
            r.violations
                .into_iter()
                .map(|v| format!("coupon {coupon}: {v}")),
        );
    }
    Ok(json!({ "issued": issued, "byStatus": by_status, "violations": violations }))
}

async fn progress(
    label: String,
    total: usize,
    c: Arc<Counters>,
    pool: Option<MySqlPool>,
    coupons: Vec<i64>,
) {
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let results = match &pool {
            Some(p) => result_count(p, &coupons)
                .await
                .map_or_else(|_| "?".into(), |n| n.to_string()),
            None => "-".into(),
        };
        eprintln!(
            "  [{label}] {:>4.0}s  sent {}/{total}  202 {}  409 {}  failed {}  results {results}",
            start.elapsed().as_secs_f64(),
            c.sent.load(Ordering::Relaxed),
            c.accepted.load(Ordering::Relaxed),
            c.sold_out.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
        );
    }
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
}

/// Waits for a worker to process the backlog `sale --backlog` left. The
/// rate comes from MySQL's own timestamps: every result of one batch carries
/// the batch's `processed_at`, so (results − last batch) ÷ (last − first
/// `processed_at`) is the worker's steady rate, without its start-up, its
/// first poll, or this process's polling (every 100 ms, only to see the end).
pub async fn drain(args: DrainArgs) -> anyhow::Result<Value> {
    let backlog: Backlog = serde_json::from_slice(&std::fs::read(&args.backlog)?)?;
    let pool = common::db::pool(&args.database_url, 2).context("DATABASE_URL")?;
    let coupons: Vec<i64> = backlog.coupons.iter().map(|c| c.coupon_id).collect();
    let expected: usize = backlog.coupons.iter().map(|c| c.accepted.len()).sum();
    let start = Instant::now();
    let deadline = Duration::from_secs(args.timeout_secs);
    let ((t0, _), t1) = wait_for_results(
        &pool,
        &coupons,
        expected,
        Duration::from_millis(100),
        || (start.elapsed() > deadline).then(|| format!("backlog not drained after {deadline:?}")),
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
    Ok(json!({
        "results": expected,
        "resultsPerSecond": per_second(expected - last_batch, span),
        "processedSpanSeconds": span.as_secs_f64(),
        "lastBatch": last_batch,
        "observedSeconds": t1.duration_since(t0).as_secs_f64(),
        "ok": audit["violations"].as_array().is_some_and(Vec::is_empty),
        "audit": audit,
    }))
}
