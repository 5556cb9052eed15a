//! Ceilings measured in the same run as the service: what the same load gets
//! from a bare HTTP server, from the enqueue step alone, and from MySQL for
//! a bulk insert of result rows. Each service figure is printed beside its
//! ceiling.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use common::domain::{CouponId, CouponIssueEvent, UserId};
use common::queue::{KafkaSettings, RedisQueue, ENQUEUE_TIMEOUT};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use sqlx::{MySql, QueryBuilder};
use uuid::Uuid;

use crate::cpu;
use crate::figures::{EnqueueFigures, InsertFigures, Step};
use crate::stats::{self, per_second, Latency};
use crate::workload;

#[derive(Deserialize)]
struct IssueParams {
    #[serde(rename = "userId")]
    user_id: i64,
}

/// The api's `202` body, field for field, with a queue position as long as
/// a Redis stream entry id.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    request_id: Uuid,
    coupon_id: i64,
    user_id: i64,
    status: &'static str,
    queue_position: String,
}

async fn issue(
    Path(coupon_id): Path<i64>,
    Query(p): Query<IssueParams>,
) -> (StatusCode, Json<Accepted>) {
    let now = Utc::now().timestamp_millis();
    (
        StatusCode::ACCEPTED,
        Json(Accepted {
            request_id: Uuid::now_v7(),
            coupon_id,
            user_id: p.user_id,
            status: "PENDING",
            queue_position: format!("{now}-0"),
        }),
    )
}

/// Serves `POST /api/coupons/{id}/issue` with a `202` of the api's size and
/// nothing else, on the same runtime (tokio, multi-threaded) as the api.
pub async fn bare_http(port: u16) -> anyhow::Result<()> {
    let app = Router::new().route("/api/coupons/{coupon_id}/issue", post(issue));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Queue {
    Redis,
    Kafka,
}

#[derive(clap::Args)]
pub struct EnqueueArgs {
    #[arg(long, value_enum)]
    pub queue: Queue,
    #[arg(long, env = "REDIS_URL", default_value = common::config::DEFAULT_REDIS_URL)]
    pub redis_url: String,
    #[arg(long, env = "KAFKA_BROKERS", default_value = common::config::DEFAULT_KAFKA_BROKERS)]
    pub kafka_brokers: String,
    /// Redis key prefix or Kafka topic of the scratch queue.
    #[arg(long)]
    pub scratch: String,
    #[arg(long, default_value_t = 3)]
    pub kafka_partitions: i32,
    #[arg(long, default_value_t = 100_000)]
    pub requests: usize,
    #[arg(long, default_value_t = 50_000)]
    pub users: usize,
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    #[command(flatten)]
    pub step: Option<Step>,
}

/// The enqueue step alone at the api's concurrency: Redis through the
/// project's `RedisQueue::enqueue` (the same script and connection), Kafka
/// through a bare rdkafka producer with the project's producer settings.
pub async fn enqueue(args: &EnqueueArgs) -> anyhow::Result<EnqueueFigures> {
    let calls = Arc::new(workload::calls(args.requests, args.users, 1, 1));
    let coupon = CouponId::try_from(1)?;
    let redis = RedisQueue::new(&args.redis_url, &args.scratch, ENQUEUE_TIMEOUT)?;
    let settings = KafkaSettings {
        brokers: args.kafka_brokers.clone(),
        topic: args.scratch.clone(),
        group_id: format!("{}-group", args.scratch),
        partitions: args.kafka_partitions,
        replication_factor: 1,
    };
    let producer: Option<FutureProducer> = match args.queue {
        Queue::Redis => None,
        Queue::Kafka => {
            settings.ensure_topics().await?;
            Some(settings.producer_config(ENQUEUE_TIMEOUT).create()?)
        }
    };
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu::seconds(std::process::id())?;
    let start = Instant::now();
    let mut tasks = vec![];
    for _ in 0..args.concurrency.max(1) {
        let (calls, next, redis, producer, topic) = (
            calls.clone(),
            next.clone(),
            redis.clone(),
            producer.clone(),
            settings.topic.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (mut h, mut failed) = (stats::histogram(), 0usize);
            while let Some(call) = calls.get(next.fetch_add(1, Ordering::Relaxed)) {
                let t = Instant::now();
                let event = CouponIssueEvent::new(coupon, UserId::try_from(call.user)?);
                let ok = match &producer {
                    None => redis.enqueue(&event).await.is_ok(),
                    Some(p) => {
                        let key = event.coupon_id.to_string();
                        let payload = event.to_json();
                        let record = FutureRecord::to(&topic).key(&key).payload(&payload);
                        p.send(record, Duration::from_millis(100)).await.is_ok()
                    }
                };
                failed += usize::from(!ok);
                stats::record(&mut h, t.elapsed());
            }
            anyhow::Ok((h, failed))
        }));
    }
    let (mut h, mut failed) = (stats::histogram(), 0);
    for t in tasks {
        let (th, tf) = t.await??;
        h.add(&th)?;
        failed += tf;
    }
    let elapsed = start.elapsed();
    let cpu_seconds = cpu::seconds(std::process::id())? - cpu_before;
    let sent = args.requests.saturating_sub(failed);
    if let Queue::Redis = args.queue {
        let mut conn = redis::Client::open(args.redis_url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let keys = redis.keys();
        let _: () = redis::cmd("DEL")
            .arg(keys.stream(coupon))
            .arg(keys.pending())
            .query_async(&mut conn)
            .await?;
    }
    Ok(EnqueueFigures {
        requests: args.requests,
        concurrency: args.concurrency,
        failed,
        seconds: elapsed.as_secs_f64(),
        per_second: per_second(sent, elapsed),
        latency: Latency::of(&h),
        cpu_us_per_event: (sent > 0).then(|| cpu_seconds * 1e6 / sent as f64),
        ok: failed == 0,
    })
}

#[derive(clap::Args)]
pub struct InsertArgs {
    /// A scratch database with the service's schema; its result table is
    /// emptied first.
    #[arg(long)]
    pub database_url: String,
    #[arg(long, default_value_t = 100_000)]
    pub rows: usize,
    /// Rows per INSERT statement (the worker's BATCH_SIZE).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Connections inserting side by side into the same table.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    #[command(flatten)]
    pub step: Option<Step>,
}

/// Multi-row INSERTs of result rows, one statement per batch (each its own
/// transaction) over one connection, like one worker: rows per second. With
/// `--connections N`, N tasks insert the batches side by side into the same
/// table (batch k by task k mod N), over a pool of N connections.
pub async fn insert(args: &InsertArgs) -> anyhow::Result<InsertFigures> {
    let connections = args.connections.max(1);
    let pool =
        common::db::pool(&args.database_url, connections as u32).context("--database-url")?;
    empty_results(&pool).await?;
    let batch = args.batch.max(1);
    let batches: Vec<std::ops::Range<usize>> = (0..args.rows)
        .step_by(batch)
        .map(|from| from..(from + batch).min(args.rows))
        .collect();
    // Every connection is opened before the clock starts.
    drop(futures::future::try_join_all((0..connections).map(|_| pool.acquire())).await?);
    let now = Utc::now().naive_utc();
    let start = Instant::now();
    futures::future::try_join_all((0..connections).map(|c| {
        let pool = &pool;
        let mine: Vec<_> = batches
            .iter()
            .skip(c)
            .step_by(connections)
            .cloned()
            .collect();
        async move {
            for rows in mine {
                insert_rows(pool, rows, now).await?;
            }
            anyhow::Ok(())
        }
    }))
    .await?;
    let elapsed = start.elapsed();
    empty_results(&pool).await?;
    Ok(InsertFigures {
        rows: args.rows,
        batch: args.batch,
        connections,
        seconds: elapsed.as_secs_f64(),
        per_second: per_second(args.rows, elapsed),
        ok: true,
    })
}

/// Empties the scratch database's results. `TRUNCATE`, not `DELETE`: the
/// deleted rows of a `DELETE` are purged by InnoDB's background threads
/// for seconds afterwards, on the cores the next steps are measured on.
async fn empty_results(pool: &sqlx::MySqlPool) -> anyhow::Result<()> {
    sqlx::query("TRUNCATE TABLE coupon_issue_result")
        .execute(pool)
        .await?;
    Ok(())
}

/// One multi-row INSERT of the result rows numbered `rows`.
async fn insert_rows(
    pool: &sqlx::MySqlPool,
    rows: std::ops::Range<usize>,
    now: chrono::NaiveDateTime,
) -> anyhow::Result<()> {
    let mut q = QueryBuilder::<MySql>::new(
        "INSERT INTO coupon_issue_result (request_id, coupon_id, user_id, status, reason, \
         queue_position, requested_at, processed_at) ",
    );
    q.push_values(rows, |mut b, i| {
        b.push_bind(Uuid::now_v7().to_string())
            .push_bind(1_i64)
            .push_bind(i as i64 + 1)
            .push_bind("OUT_OF_STOCK")
            .push_bind(None::<String>)
            .push_bind(format!("1764213285123-{i}"))
            .push_bind(now)
            .push_bind(now);
    });
    q.push(" ON DUPLICATE KEY UPDATE request_id = request_id");
    q.build().execute(pool).await?;
    Ok(())
}
