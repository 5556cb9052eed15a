//! `loadgen`: creates a coupon through the admin api, fires issue requests
//! at it from distinct users with bounded concurrency, waits until every
//! accepted request has a result in MySQL, audits the sale with the same
//! checks as the tests, and prints one JSON line of figures.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use common::audit::audit_sale;
use common::domain::{CouponId, IssueStatus};
use rand::seq::SliceRandom;
use tokio::sync::Semaphore;
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "Fire issue requests and time the drain")]
struct Args {
    #[arg(long, env = "API_URL", default_value = "http://127.0.0.1:9090")]
    api: String,
    #[arg(long, env = "DATABASE_URL", default_value = common::config::DEFAULT_DATABASE_URL)]
    database_url: String,
    #[arg(long, env = "ADMIN_TOKEN", default_value = "dev-admin-token")]
    admin_token: String,
    /// Requests to send.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Stock of the coupon created for the run.
    #[arg(long, default_value_t = 1_000)]
    stock: i64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Give up waiting for results after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let pool = common::db::pool(&args.database_url, 2).context("DATABASE_URL")?;

    let created: serde_json::Value = client
        .post(format!("{}/api/admin/coupons", args.api))
        .bearer_auth(&args.admin_token)
        .json(&serde_json::json!({ "name": "bench", "quantity": args.stock }))
        .send()
        .await?
        .error_for_status()
        .context("creating the bench coupon")?
        .json()
        .await?;
    let coupon = CouponId::try_from(created["couponId"].as_i64().context("couponId")?)?;

    let mut users: Vec<i64> = (1..=args.requests as i64).collect();
    users.shuffle(&mut rand::thread_rng());
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(users.len());
    for user in users {
        let permit = gate.clone().acquire_owned().await?;
        let client = client.clone();
        let url = format!(
            "{}/api/coupons/{}/issue?userId={user}",
            args.api,
            coupon.get()
        );
        tasks.push(tokio::spawn(async move {
            let res = client.post(url).send().await;
            drop(permit);
            let res = res.ok()?;
            match res.status().as_u16() {
                202 => {
                    let body: serde_json::Value = res.json().await.ok()?;
                    Uuid::parse_str(body["requestId"].as_str()?).ok().map(Some)
                }
                // Sold out: answered at once, nothing queued.
                409 => Some(None),
                _ => None,
            }
        }));
    }
    let mut accepted = HashSet::with_capacity(tasks.len());
    let mut sold_out = 0;
    for t in tasks {
        match t.await? {
            Some(Some(id)) => {
                accepted.insert(id);
            }
            Some(None) => sold_out += 1,
            None => {}
        }
    }
    let sent = start.elapsed();

    let deadline = Duration::from_secs(args.timeout_secs);
    loop {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM coupon_issue_result WHERE coupon_id = ?")
                .bind(coupon.get())
                .fetch_one(&pool)
                .await?;
        if n as usize >= accepted.len() {
            break;
        }
        if start.elapsed() > deadline {
            bail!("only {n} of {} results after {deadline:?}", accepted.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = start.elapsed();

    let report = audit_sale(&pool, coupon, args.stock, &accepted, &HashSet::new()).await?;
    let line = serde_json::json!({
        "couponId": coupon.get(),
        "requests": args.requests,
        "accepted": accepted.len(),
        "soldOut": sold_out,
        "stock": args.stock,
        "sendSeconds": sent.as_secs_f64(),
        "drainSeconds": drained.as_secs_f64(),
        "acceptedPerSecond": accepted.len() as f64 / sent.as_secs_f64(),
        "endToEndPerSecond": accepted.len() as f64 / drained.as_secs_f64(),
        "success": report.count(IssueStatus::Success),
        "outOfStock": report.count(IssueStatus::OutOfStock),
        "violations": report.violations,
    });
    println!("{line}");
    if !report.violations.is_empty() || accepted.len() + sold_out != args.requests {
        bail!("the sale broke an invariant or refused requests");
    }
    Ok(())
}
