//! The dashboard's reads from MySQL: coupon figures, processed counts per
//! second (via the `processed_at` index) and worker heartbeats. Never user ids.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use common::db::{Coupon, SELECT_COUPONS};
use common::error::DbError;
use sqlx::{MySqlPool, QueryBuilder};

use super::WorkerStatus;

/// Ids of the `n` newest coupons.
pub async fn newest_coupon_ids(pool: &MySqlPool, n: u32) -> Result<Vec<i64>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT coupon_id FROM coupon ORDER BY coupon_id DESC LIMIT ?")
            .bind(n)
            .fetch_all(pool)
            .await?,
    )
}

/// Figures of the given coupons (missing ids are skipped).
pub async fn coupons(pool: &MySqlPool, ids: &[i64]) -> Result<Vec<Coupon>, DbError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = QueryBuilder::new(format!("{SELECT_COUPONS} WHERE c.coupon_id IN ("));
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    q.push(")");
    Ok(q.build_query_as().fetch_all(pool).await?)
}

/// Results written per coupon and second, for the `len` seconds from `from`.
pub async fn processed_series(
    pool: &MySqlPool,
    from: DateTime<Utc>,
    len: usize,
) -> Result<HashMap<i64, Vec<u32>>, DbError> {
    let start = from.naive_utc();
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT coupon_id, TIMESTAMPDIFF(SECOND, ?, processed_at) AS bucket, COUNT(*) AS n \
         FROM coupon_issue_result WHERE processed_at >= ? \
         GROUP BY coupon_id, bucket",
    )
    .bind(start)
    .bind(start)
    .fetch_all(pool)
    .await?;
    let mut series: HashMap<i64, Vec<u32>> = HashMap::new();
    for (coupon, bucket, n) in rows {
        if (0..len as i64).contains(&bucket) {
            series.entry(coupon).or_insert_with(|| vec![0; len])[bucket as usize] = n as u32;
        }
    }
    Ok(series)
}

/// Workers whose heartbeat is newer than `since`, oldest first.
pub async fn workers(
    pool: &MySqlPool,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<WorkerStatus>, DbError> {
    let mut workers: Vec<WorkerStatus> = sqlx::query_as(
        "SELECT worker_id, queue_type, host, pid, started_at, last_seen_at \
         FROM worker_heartbeat WHERE last_seen_at >= ? ORDER BY started_at, worker_id",
    )
    .bind(since.naive_utc())
    .fetch_all(pool)
    .await?;
    for w in &mut workers {
        w.seconds_since_seen = (now - w.last_seen_at).num_milliseconds().max(0) as f64 / 1000.0;
    }
    Ok(workers)
}
