//! `loadgen sale`: creates the run's coupons through the admin api, sends the
//! workload, waits until every accepted request has its result in MySQL,
//! and audits the sale; or, with `--backlog`, only queues it. A user's
//! repeat call is answered `200` by the api's repeat gate while their
//! first is pending or won: counted as a repeat, never as a failure, and
//! not audited (only the `202`s are requests), but it must name its user's
//! accepted request.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use serde_json::{json, Value};
use sqlx::MySqlPool;
use uuid::Uuid;

use crate::cpu;
use crate::figures::{SaleFigures, Step, Timeline};
use crate::load::{self, Counters, Outcome, Pace, Plan, Sample};
use crate::results::{audit, result_count, result_times, wait_for_results, Backlog, BacklogCoupon};
use crate::stats::{self, per_second, Latency};
use crate::workload;

/// Width of one timeline bucket.
const BUCKET: Duration = Duration::from_millis(250);

/// The api a load is sent to, its admin token and its database.
#[derive(clap::Args)]
pub struct Target {
    #[arg(long, env = "API_URL", default_value = "http://127.0.0.1:9090")]
    pub api: String,
    #[arg(long, env = "DATABASE_URL", default_value = common::config::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    #[arg(long, env = "ADMIN_TOKEN", default_value = "dev-admin-token")]
    pub admin_token: String,
}

#[derive(clap::Args)]
pub struct SaleArgs {
    #[command(flatten)]
    pub target: Target,
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
    /// Measure this process's CPU time (user + system, from `/proc`) over
    /// the calls: the server's CPU per accepted request.
    #[arg(long)]
    pub cpu_pid: Option<u32>,
    /// `NAME=PID`, repeatable: also measure this process's CPU time over
    /// the calls (with `--cpu-pid`, as `server`, and this load generator's
    /// own, as `loadgen`), to show where the machine's time per call went.
    #[arg(long, value_name = "NAME=PID")]
    pub machine_pid: Vec<cpu::NamedPid>,
    #[command(flatten)]
    pub step: Option<Step>,
}

pub async fn sale(args: &SaleArgs) -> anyhow::Result<SaleFigures> {
    let concurrency = args.concurrency.max(1);
    let client = load::client(concurrency)?;
    let stock_each = args.stock / args.coupons.max(1) as i64;
    let coupons: Vec<i64> = if args.bare {
        (1..=args.coupons as i64).collect()
    } else {
        let mut ids = Vec::with_capacity(args.coupons);
        for i in 0..args.coupons {
            let name = format!("bench {} #{i}", args.label);
            ids.push(
                create_coupon(
                    &client,
                    &args.target.api,
                    &args.target.admin_token,
                    &name,
                    stock_each,
                )
                .await?,
            );
        }
        ids
    };
    let calls = workload::calls(args.requests, args.users, coupons.len(), args.seed);
    let urls = calls
        .iter()
        .map(|c| {
            format!(
                "{}/api/coupons/{}/issue?userId={}",
                args.target.api, coupons[c.coupon], c.user
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
        Some(common::db::pool(&args.target.database_url, 2).context("DATABASE_URL")?)
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
        api: args.target.api.clone(),
        urls,
        pace,
        result_sample: args.result_sample,
        answers: None,
    };
    let mut machine = args.machine_pid.clone();
    if let (Some(pid), false) = (args.cpu_pid, machine.is_empty()) {
        machine.push(cpu::NamedPid {
            name: "server".into(),
            pid,
        });
    }
    let machine_before = cpu::snapshot(&machine)?;
    let cpu_before = args.cpu_pid.map(cpu::seconds).transpose()?;
    let (samples, sent) = load::run(client, plan, counters).await?;
    let cpu_seconds = match (args.cpu_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(cpu::seconds(pid)? - before),
        _ => None,
    };
    let machine_cpu = if machine.is_empty() {
        BTreeMap::new()
    } else {
        cpu::spent(&machine_before, &cpu::snapshot(&machine)?)
    };
    let mut out = SaleFigures {
        coupons: coupons.clone(),
        requests: args.requests,
        users: args.users,
        offered_rate: args.rate,
        concurrency,
        ..load_figures(&samples, sent)
    };
    out.cpu_seconds = cpu_seconds;
    out.machine_cpu = machine_cpu;
    out.cpu_us_per_accepted = cpu_seconds
        .filter(|_| out.accepted > 0)
        .map(|s| s * 1e6 / out.accepted as f64);
    out.ok = out.failed == 0;

    let Some(pool) = pool else {
        progress.abort();
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
    out.drain_seconds = Some(drained.as_secs_f64());
    out.end_to_end_per_second = Some(per_second(accepted, drained));

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
    out.last_result_seconds = Some(last_result.as_secs_f64());
    out.request_to_result_db = Some(Latency::of(&to_result));
    out.timeline.processed = rates(&processed);
    let mut audit = audit(&pool, &per_coupon, stock_each).await?;
    audit
        .violations
        .extend(load::stray_repeats(&samples, |i| calls[i].user, 3));
    out.ok = out.failed == 0 && audit.violations.is_empty();
    out.audit = Some(audit);
    Ok(out)
}

/// Creates a coupon through the admin api; returns its id.
pub async fn create_coupon(
    client: &reqwest::Client,
    api: &str,
    admin_token: &str,
    name: &str,
    quantity: i64,
) -> anyhow::Result<i64> {
    let created: Value = client
        .post(format!("{api}/api/admin/coupons"))
        .bearer_auth(admin_token)
        .json(&json!({ "name": name, "quantity": quantity }))
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

/// Rates, phases and latencies of the HTTP part; the rest is left to the
/// caller.
fn load_figures(samples: &[Sample], sent: Duration) -> SaleFigures {
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
    let (mut accepted, mut repeats, mut sold_out, mut failed) = (0, 0, 0, 0);
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
            // Answered from the gate: neither queued nor refused.
            Outcome::Repeat(_) => repeats += 1,
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
    SaleFigures {
        sent: samples.len(),
        accepted,
        repeats,
        sold_out,
        failed,
        send_seconds: sent.as_secs_f64(),
        open_phase_seconds: open_end.as_secs_f64(),
        accepted_per_second: per_second(accepted_in_open, open_end),
        sold_out_phase_seconds: sold_out_start.map(|t| (sent - t).as_secs_f64()),
        sold_out_per_second: sold_out_start.map(|t| per_second(sold_out_in_phase, sent - t)),
        answers_per_second: per_second(samples.len(), sent),
        latency_accepted: Latency::of(&lat_accepted),
        latency_sold_out: Latency::of(&lat_sold_out),
        request_to_result_http: Latency::of(&to_result),
        timeline: Timeline {
            bucket_seconds: BUCKET.as_secs_f64(),
            accepted: rates(&t_accepted),
            sold_out: rates(&t_sold_out),
            processed: vec![],
        },
        ..SaleFigures::default()
    }
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
            "  [{label}] {:>4.0}s  sent {}/{total}  202 {}  200 {}  409 {}  failed {}  results {results}",
            start.elapsed().as_secs_f64(),
            c.sent.load(Ordering::Relaxed),
            c.accepted.load(Ordering::Relaxed),
            c.repeats.load(Ordering::Relaxed),
            c.sold_out.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
        );
    }
}
