//! Waiting for a sale to drain, reading what it left behind (results, queue
//! keys), and auditing it with `common::audit`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::audit::{audit_sale, Answers, AuditReport, Told};
use common::domain::CouponId;
use uuid::Uuid;

use crate::app::TestApp;
use crate::fire::Accepted;
use crate::services::redis_url;

/// Polls `f` until it holds; fails the test after `within`.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the api answered the accepted requests, for `common::audit`: each
/// request id with the queue and position its `202` named.
pub fn answers(accepted: &[Accepted]) -> Answers {
    let told: std::collections::HashMap<Uuid, Option<Told>> = accepted
        .iter()
        .map(|a| {
            let told = Told {
                queue: a.queue,
                position: a.queue_position.clone(),
            };
            (a.request_id, Some(told))
        })
        .collect();
    assert_eq!(told.len(), accepted.len(), "request ids are unique");
    Answers {
        accepted: told,
        ..Answers::default()
    }
}

impl TestApp {
    /// Waits until every accepted request has a result.
    pub async fn wait_for_results(&self, coupon: CouponId, expected: usize, timeout: Duration) {
        let start = Instant::now();
        loop {
            let n = self.result_count(coupon).await;
            if n >= expected {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "only {n} of {expected} results after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every request in `accepted` has a result (other results,
    /// of unconfirmed requests, may exist too).
    pub async fn wait_for_requests(
        &self,
        coupon: CouponId,
        accepted: &[Accepted],
        timeout: Duration,
    ) {
        let ids: HashSet<Uuid> = accepted.iter().map(|a| a.request_id).collect();
        let start = Instant::now();
        loop {
            let done = common::db::results_for_coupon(&self.db.pool, coupon)
                .await
                .unwrap()
                .iter()
                .filter(|r| ids.contains(&r.request_id))
                .count();
            if done == ids.len() {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "only {done} of {} accepted requests have a result after {timeout:?}",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Audits the sale against what the api answered (`accepted`, with the
    /// place each client was told) and fails the test on any broken
    /// invariant.
    pub async fn audit(
        &self,
        coupon: CouponId,
        initial_stock: i64,
        accepted: &[Accepted],
    ) -> AuditReport {
        self.audit_answers(coupon, initial_stock, &answers(accepted))
            .await
    }

    /// [`TestApp::audit`] for a sale where some requests got
    /// `503 QUEUE_OUTCOME_UNKNOWN`: those may, but need not, have a result.
    pub async fn audit_with_unconfirmed(
        &self,
        coupon: CouponId,
        initial_stock: i64,
        accepted: &[Accepted],
        unconfirmed: &HashSet<Uuid>,
    ) -> AuditReport {
        let answers = Answers {
            unconfirmed: unconfirmed.clone(),
            ..answers(accepted)
        };
        self.audit_answers(coupon, initial_stock, &answers).await
    }

    /// [`TestApp::audit`] of answers the test put together itself (with
    /// replayed requests, say).
    pub async fn audit_answers(
        &self,
        coupon: CouponId,
        initial_stock: i64,
        answers: &Answers,
    ) -> AuditReport {
        let report = audit_sale(&self.db.pool, coupon, initial_stock, answers)
            .await
            .unwrap();
        assert!(report.violations.is_empty(), "{:#?}", report.violations);
        report
    }

    /// Number of results stored for the coupon.
    pub async fn result_count(&self, coupon: CouponId) -> usize {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM coupon_issue_result WHERE coupon_id = ?")
                .bind(coupon.get())
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
        n as usize
    }

    /// Number of result rows in this app's database, of every coupon.
    pub async fn result_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM coupon_issue_result")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// Seconds since the coupon's newest result was written (by MySQL's clock).
    pub async fn seconds_since_last_result(&self, coupon: CouponId) -> f64 {
        sqlx::query_scalar(
            "SELECT CAST(TIMESTAMPDIFF(MICROSECOND, MAX(processed_at), UTC_TIMESTAMP(6)) AS DOUBLE) / 1e6 \
             FROM coupon_issue_result WHERE coupon_id = ?",
        )
        .bind(coupon.get())
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }

    /// Every Redis key under this app's prefix.
    pub async fn redis_keys(&self) -> Vec<String> {
        // The test Redis, even when this app was given an unreachable one.
        let client = redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("KEYS")
            .arg(format!("{}*", self.common.redis_key_prefix))
            .query_async(&mut conn)
            .await
            .unwrap()
    }
}
