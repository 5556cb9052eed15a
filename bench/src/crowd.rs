//! `loadgen crowd`: a flash-sale crowd at the door. `users` users click
//! `clicks` times each on one coupon of `stock` units, every click shuffled
//! and `concurrency` in flight (as in `sale`), so that one user's clicks are
//! spread over the whole phase. Every user who gets a `202` waits for the
//! result of that first accepted request as a client would, from the moment
//! it came (while the crowd, the user included, goes on clicking) or, with
//! `--wait-after-clicks`, once every click is answered: `GET
//! /api/coupons/issue-requests/{id}?waitMs=W` until it answers `200`. An api
//! that holds the call answers `202` only after `W`, and the client asks
//! again at once; an api that ignores `waitMs` answers at once, and a `202`
//! back before `W / 2` makes the client pause `--pause-ms` (1 s) before
//! asking again: a polling client. So the same command measures an api with
//! held look-ups and one without, side by side.
//!
//! At most `--waiters` look-ups are in flight (1,000): a real crowd holds
//! one connection per browser, but one load generator beside the api would
//! spend its file descriptors and the api's accept queue on tens of
//! thousands of sockets. The waiting users take turns through a fair
//! semaphore, and a pause holds no slot.
//!
//! MySQL's work is read from the server's own counters, `Com_select` and
//! `Com_insert` of `SHOW GLOBAL STATUS`, before the first click and after
//! the last user knows; nothing else of this command queries MySQL in
//! between, and its one count at the end is left out. They count every
//! client of the server: on a shared server they are an upper bound.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::{MySqlPool, Row};
use tokio::sync::mpsc;
use uuid::Uuid;

use self::wait::{dispatch, know_all, Waiters, Waiting};
use crate::figures::{CrowdFigures, Step};
use crate::load::{self, Counters, Outcome, Pace, Plan, Sample};
use crate::results::{audit, result_count};
use crate::sale::{create_coupon, Target};
use crate::stats::{self, Latency};
use crate::workload;

mod wait;

#[derive(clap::Args)]
pub struct CrowdArgs {
    #[command(flatten)]
    pub target: Target,
    /// Name of the run in progress lines.
    #[arg(long, default_value = "crowd")]
    pub label: String,
    /// Distinct users.
    #[arg(long, default_value_t = 50_000)]
    pub users: usize,
    /// Clicks of every user.
    #[arg(long, default_value_t = 5)]
    pub clicks: usize,
    /// Stock of the coupon.
    #[arg(long, default_value_t = 10_000)]
    pub stock: i64,
    /// Clicks in flight at once.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Result look-ups in flight at most while the users wait.
    #[arg(long, default_value_t = 1_000)]
    pub waiters: usize,
    /// `waitMs` of every look-up: how long an api may hold it.
    #[arg(long, default_value_t = 5_000)]
    pub wait_ms: u64,
    /// A client's pause after a `202` that came back before half of
    /// `waitMs` (an api that did not hold the call), or after a failed
    /// look-up.
    #[arg(long, default_value_t = 1_000)]
    pub pause_ms: u64,
    /// Users start waiting once every click is answered, not at their
    /// first `202`.
    #[arg(long)]
    pub wait_after_clicks: bool,
    /// Seed of the click order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Give up when the last user has no result after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub step: Option<Step>,
}

/// The server's statement counters.
#[derive(Debug, Clone, Copy, Default)]
struct Statements {
    select: u64,
    insert: u64,
}

impl Statements {
    async fn read(pool: &MySqlPool) -> anyhow::Result<Self> {
        // The text protocol (`raw_sql`): a SHOW is not preparable everywhere.
        let rows =
            sqlx::raw_sql("SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_select', 'Com_insert')")
                .fetch_all(pool)
                .await
                .context("SHOW GLOBAL STATUS")?;
        let mut s = Self::default();
        for row in rows {
            let (name, value): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let value = value
                .parse()
                .with_context(|| format!("{name} = {value:?}"))?;
            match name.to_ascii_lowercase().as_str() {
                "com_select" => s.select = value,
                "com_insert" => s.insert = value,
                _ => {}
            }
        }
        Ok(s)
    }
}

pub async fn crowd(args: &CrowdArgs) -> anyhow::Result<CrowdFigures> {
    let concurrency = args.concurrency.max(1);
    let users = args.users.max(1);
    let client = load::client(concurrency)?;
    let name = format!("bench {}", args.label);
    let coupon = create_coupon(
        &client,
        &args.target.api,
        &args.target.admin_token,
        &name,
        args.stock,
    )
    .await?;
    let clicks = workload::crowd(users, args.clicks.max(1), args.seed);
    let urls = clicks
        .iter()
        .map(|user| {
            format!(
                "{}/api/coupons/{coupon}/issue?userId={user}",
                args.target.api
            )
        })
        .collect();
    let pool = common::db::pool(&args.target.database_url, 1).context("DATABASE_URL")?;
    let before = Statements::read(&pool).await?;

    let counters = Arc::new(Counters::default());
    let waiting = Arc::new(Waiting::default());
    let progress = tokio::spawn(progress(
        args.label.clone(),
        clicks.len(),
        counters.clone(),
        waiting.clone(),
    ));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.timeout_secs);
    let waiters = Arc::new(Waiters::new(args, waiting.clone(), deadline)?);
    let (tx, answers) = mpsc::unbounded_channel();
    let clicks = Arc::new(clicks);
    let dispatch = tokio::spawn(dispatch(
        answers,
        waiters,
        clicks.clone(),
        args.wait_after_clicks,
    ));
    let plan = Plan {
        api: args.target.api.clone(),
        urls,
        pace: Pace::Closed { concurrency },
        result_sample: 0,
        answers: Some(tx),
    };
    let (samples, click_time) = load::run(client, plan, counters).await?;
    let knows = know_all(dispatch.await?, start).await;
    progress.abort();
    let knows = knows?;

    // A user's later requests (a door without the gate queues them) may
    // still wait in the queue when the first is answered: every accepted
    // request has its result before the counters are read again.
    let accepted: Vec<Uuid> = samples
        .iter()
        .filter_map(|s| match s.outcome {
            Outcome::Accepted(id) => Some(id),
            _ => None,
        })
        .collect();
    let mut own_selects = 0;
    let result_rows = loop {
        own_selects += 1;
        let n = result_count(&pool, &[coupon]).await?;
        if n >= accepted.len() {
            break n;
        }
        if Instant::now() > deadline {
            bail!(
                "results not in after {:?}: {n} of {}",
                deadline - start,
                accepted.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let after = Statements::read(&pool).await?;

    let mut out = figures(&samples, users, &knows);
    out.coupon = coupon;
    out.stock = args.stock;
    out.clicks_per_user = args.clicks.max(1);
    out.concurrency = concurrency;
    out.waiters = args.waiters.max(1);
    out.wait_ms = args.wait_ms;
    out.wait_after_clicks = args.wait_after_clicks;
    out.click_seconds = click_time.as_secs_f64();
    out.users_accepted = knows.len();
    out.queue_entries_per_waiting_user = if knows.is_empty() {
        0.0
    } else {
        out.accepted as f64 / knows.len() as f64
    };
    out.result_rows = result_rows;
    out.result_rows_per_user = result_rows as f64 / users as f64;
    out.com_select = after
        .select
        .saturating_sub(before.select)
        .saturating_sub(own_selects);
    out.com_insert = after.insert.saturating_sub(before.insert);
    out.selects_per_user = out.com_select as f64 / users as f64;
    out.inserts_per_user = out.com_insert as f64 / users as f64;
    out.statements_per_user = out.selects_per_user + out.inserts_per_user;
    out.lookups = waiting.lookups.load(Ordering::Relaxed);
    out.lookups_pending = waiting.pending.load(Ordering::Relaxed);
    out.lookups_early = waiting.early.load(Ordering::Relaxed);
    out.lookup_errors = waiting.errors.load(Ordering::Relaxed);
    out.lookups_per_waiting_user = if knows.is_empty() {
        0.0
    } else {
        out.lookups as f64 / knows.len() as f64
    };

    let per_coupon = BTreeMap::from([(coupon, accepted)]);
    let mut audit = audit(&pool, &per_coupon, args.stock).await?;
    audit
        .violations
        .extend(load::stray_repeats(&samples, |i| clicks[i], 3));
    out.ok = out.other == 0 && audit.violations.is_empty();
    out.audit = Some(audit);
    Ok(out)
}

/// The click figures: answers by kind, per user, and the click latency.
fn figures(samples: &[Sample], users: usize, knows: &[Duration]) -> CrowdFigures {
    let mut out = CrowdFigures {
        users,
        clicks: samples.len(),
        ..CrowdFigures::default()
    };
    let mut latency = stats::histogram();
    for s in samples {
        match s.outcome {
            Outcome::Accepted(_) => out.accepted += 1,
            Outcome::Repeat(_) => out.repeats += 1,
            Outcome::SoldOut => out.sold_out += 1,
            Outcome::Failed => out.other += 1,
        }
        stats::record(&mut latency, s.latency);
    }
    out.latency_click = Latency::of(&latency);
    out.queue_entries_per_user = out.accepted as f64 / users as f64;
    let mut h = stats::histogram();
    for k in knows {
        stats::record(&mut h, *k);
    }
    out.knows = Latency::of(&h);
    out.last_knows_seconds = knows
        .iter()
        .max()
        .copied()
        .unwrap_or_default()
        .as_secs_f64();
    out
}

async fn progress(label: String, total: usize, c: Arc<Counters>, w: Arc<Waiting>) {
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprintln!(
            "  [{label}] {:>4.0}s  clicks {}/{total}  202 {}  200 {}  409 {}  other {}  \
             users knowing {}/{}  look-ups {} (202 {}, early {}, failed {})",
            start.elapsed().as_secs_f64(),
            c.sent.load(Ordering::Relaxed),
            c.accepted.load(Ordering::Relaxed),
            c.repeats.load(Ordering::Relaxed),
            c.sold_out.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            w.known.load(Ordering::Relaxed),
            w.users.load(Ordering::Relaxed),
            w.lookups.load(Ordering::Relaxed),
            w.pending.load(Ordering::Relaxed),
            w.early.load(Ordering::Relaxed),
            w.errors.load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(index: usize, done_ms: u64, outcome: Outcome) -> Sample {
        Sample {
            index,
            done: Duration::from_millis(done_ms),
            latency: Duration::from_millis(2),
            outcome,
            to_result: None,
        }
    }

    #[test]
    fn the_clicks_are_counted_by_answer() {
        let id = Uuid::now_v7();
        let samples = [
            sample(0, 9, Outcome::Accepted(id)),
            sample(1, 5, Outcome::Accepted(Uuid::now_v7())),
            sample(2, 3, Outcome::Accepted(Uuid::now_v7())),
            sample(3, 4, Outcome::Repeat(id)),
            sample(4, 6, Outcome::SoldOut),
            sample(5, 6, Outcome::Failed),
        ];
        let f = figures(
            &samples,
            3,
            &[Duration::from_secs(2), Duration::from_secs(5)],
        );
        assert_eq!(
            (f.clicks, f.accepted, f.repeats, f.sold_out, f.other),
            (6, 3, 1, 1, 1)
        );
        assert_eq!(f.queue_entries_per_user, 1.0);
        assert_eq!(f.last_knows_seconds, 5.0);
        assert_eq!(f.knows.count, 2);
        assert_eq!(f.latency_click.count, 6);
    }
}
