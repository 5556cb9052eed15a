//! Races through the real api and real worker processes. Every test checks
//! the invariants of a finished sale with `common::audit`.

use std::collections::HashSet;
use std::time::Duration;

use common::domain::QueueType;
use common::domain::{queue_position_key, CouponId, IssueStatus};
use rstest::rstest;
use testkit::{spawn_app, users_with_repeats, Accepted};

const DRAIN_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest wait for the api to see a sell-out or a restock: many of its
/// coupon cache reloads (every second in tests, `testkit::api_config`).
const RELOAD_WITHIN: Duration = Duration::from_secs(15);

/// Sends one request at a time, from the next of `users`, until the api
/// answers `status`: `409` once it refuses a sold-out coupon by itself,
/// `202` once it has re-opened a restocked one. Returns the requests it
/// accepted on the way, which are part of the sale.
async fn probe_until(
    app: &testkit::TestApp,
    coupon: CouponId,
    users: &mut std::ops::RangeFrom<i64>,
    status: u16,
) -> Vec<Accepted> {
    let start = std::time::Instant::now();
    let mut accepted = Vec::new();
    loop {
        let user = users.next().unwrap();
        let res = app.issue(coupon.get(), &user.to_string()).await;
        let answered = res.status().as_u16();
        match answered {
            202 => accepted.push(res.json().await.unwrap()),
            409 => {}
            other => panic!("unexpected {other}: {:?}", res.text().await),
        }
        if answered == status {
            return accepted;
        }
        assert!(
            start.elapsed() < RELOAD_WITHIN,
            "the api did not answer {status} within {RELOAD_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An operator's restock by plain SQL, then the wait until the api has
/// re-opened the coupon (a probe from `users` is accepted); returns the
/// accepted probe.
async fn restock(
    app: &testkit::TestApp,
    coupon: CouponId,
    stock: i32,
    users: &mut std::ops::RangeFrom<i64>,
) -> Vec<Accepted> {
    sqlx::query("UPDATE coupon SET stock = ? WHERE coupon_id = ?")
        .bind(stock)
        .bind(coupon.get())
        .execute(&app.db.pool)
        .await
        .unwrap();
    probe_until(app, coupon, users, 202).await
}

/// 1,000 concurrent requests from 600 users (400 repeats) for 100 coupons,
/// drained by one worker or two.
#[rstest]
#[case::redis_one_worker(QueueType::Redis, 1)]
#[case::redis_two_workers(QueueType::Redis, 2)]
#[case::kafka_one_worker(QueueType::Kafka, 1)]
#[case::kafka_two_workers(QueueType::Kafka, 2)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_race_issues_exactly_the_stock_to_the_first_distinct_users(
    #[case] mode: QueueType,
    #[case] workers: usize,
) {
    let app = spawn_app(mode).await;
    let coupon = app.create_coupon(100).await;
    let _workers: Vec<_> = (0..workers).map(|_| app.spawn_worker()).collect();

    let users = users_with_repeats(1000, 600);
    // Requests that arrive once the coupon is known to be sold out are
    // answered 409 and not queued.
    let accepted = app.fire(coupon, &users, 200).await;
    assert!(accepted.len() >= 100);
    app.wait_for_results(coupon, accepted.len(), DRAIN_TIMEOUT)
        .await;

    let report = app.audit(coupon, 100, &accepted).await;
    assert_eq!(report.results, accepted.len());
    assert_eq!(report.count(IssueStatus::Success), 100);
    assert_eq!(report.issued, 100);
    assert_eq!(report.remaining_stock, 0);
    assert_eq!(
        report.count(IssueStatus::Success)
            + report.count(IssueStatus::DuplicateRequest)
            + report.count(IssueStatus::OutOfStock),
        accepted.len(),
        "{:?}",
        report.by_status
    );
    // The winners are the first 100 distinct users in queue order.
    let mut by_position = accepted.iter().collect::<Vec<_>>();
    by_position.sort_by_key(|a| queue_position_key(&a.queue_position));
    let mut first_distinct = Vec::new();
    let mut seen = HashSet::new();
    for a in by_position {
        if seen.insert(a.user_id) && first_distinct.len() < 100 {
            first_distinct.push(a.user_id);
        }
    }
    let winners: HashSet<i64> =
        sqlx::query_scalar("SELECT user_id FROM user_coupon WHERE coupon_id = ?")
            .bind(coupon.get())
            .fetch_all(&app.db.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(winners, first_distinct.into_iter().collect::<HashSet<_>>());

    // Acknowledged entries leave the queue (Kafka: the group's offsets are
    // committed every second).
    testkit::wait_until("an empty queue", Duration::from_secs(5), || async {
        app.queue_size(coupon).await == 0
    })
    .await;
}

/// Sale 1, then an operator sets the stock with plain SQL, then sale 2.
#[rstest]
#[case::redis(QueueType::Redis)]
#[case::kafka(QueueType::Kafka)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stock_reset_by_sql_between_sales_is_honoured(#[case] mode: QueueType) {
    let app = spawn_app(mode).await;
    let coupon = app.create_coupon(10).await;
    let _worker = app.spawn_worker();

    let sale1 = app.fire(coupon, &(1..=30).collect::<Vec<_>>(), 30).await;
    app.wait_for_results(coupon, sale1.len(), DRAIN_TIMEOUT)
        .await;
    app.audit(coupon, 10, &sale1).await;

    let mut sale2 = restock(&app, coupon, 5, &mut (1001..)).await;
    sale2.extend(app.fire(coupon, &(101..=120).collect::<Vec<_>>(), 20).await);
    app.wait_for_results(coupon, sale1.len() + sale2.len(), DRAIN_TIMEOUT)
        .await;

    let results = common::db::results_for_coupon(&app.db.pool, coupon)
        .await
        .unwrap();
    let ids: HashSet<_> = sale2.iter().map(|a| a.request_id).collect();
    let sale2_results: Vec<_> = results
        .iter()
        .filter(|r| ids.contains(&r.request_id))
        .collect();
    assert_eq!(sale2_results.len(), sale2.len());
    let wins: Vec<_> = sale2_results
        .iter()
        .filter(|r| r.status == IssueStatus::Success)
        .collect();
    assert_eq!(wins.len(), 5);
    let last_win = wins
        .iter()
        .map(|r| queue_position_key(&r.queue_position))
        .max();
    let first_out = sale2_results
        .iter()
        .filter(|r| r.status == IssueStatus::OutOfStock)
        .map(|r| queue_position_key(&r.queue_position))
        .min();
    assert!(last_win < first_out, "first-come within sale 2");
    let (stock, issued): (i32, i64) = sqlx::query_as(
        "SELECT stock, (SELECT COUNT(*) FROM user_coupon WHERE coupon_id = ?) FROM coupon WHERE coupon_id = ?",
    )
    .bind(coupon.get())
    .bind(coupon.get())
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!((stock, issued), (0, 15));
}

/// Once a coupon's stock is gone the api answers `409 SOLD_OUT` at once and
/// queues nothing; requests queued before that still get `OUT_OF_STOCK`; a
/// restock by plain SQL re-opens the coupon at its next cache reload.
#[rstest]
#[case::redis(QueueType::Redis)]
#[case::kafka(QueueType::Kafka)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sold_out_coupon_is_refused_at_once_until_restocked(#[case] mode: QueueType) {
    let app = spawn_app(mode).await;
    let coupon = app.create_coupon(20).await;
    let _worker = app.spawn_worker();

    let mut sale = app.fire(coupon, &(1..=200).collect::<Vec<_>>(), 100).await;
    app.wait_for_results(coupon, sale.len(), DRAIN_TIMEOUT)
        .await;
    let report = app.audit(coupon, 20, &sale).await;
    assert_eq!(report.count(IssueStatus::Success), 20);
    assert_eq!(report.count(IssueStatus::OutOfStock), sale.len() - 20);

    // Sold out in MySQL: once the api refuses a probe, it queues nothing
    // more. Probes it accepted before are part of the sale.
    let mut probes = 1001..;
    sale.extend(probe_until(&app, coupon, &mut probes, 409).await);
    let late = app
        .fire_tolerant(coupon, &(2001..=2100).collect::<Vec<_>>(), 50)
        .await;
    assert_eq!((late.accepted.len(), late.refused), (0, 0));
    assert_eq!(late.sold_out, 100);
    assert_eq!(
        app.entries_enqueued(coupon).await,
        sale.len() as u64,
        "the queue holds the accepted requests and nothing of the refused ones"
    );
    app.wait_for_results(coupon, sale.len(), DRAIN_TIMEOUT)
        .await;
    let report = app.audit(coupon, 20, &sale).await;
    assert_eq!(report.count(IssueStatus::OutOfStock), sale.len() - 20);

    // An operator restocks; the coupon re-opens within a reload or two.
    let mut restocked = restock(&app, coupon, 5, &mut probes).await;
    restocked.extend(
        app.fire(coupon, &(3001..=3005).collect::<Vec<_>>(), 5)
            .await,
    );
    assert_eq!(restocked.len(), 6, "the restocked coupon is open");
    app.wait_for_results(coupon, sale.len() + restocked.len(), DRAIN_TIMEOUT)
        .await;
    let results = common::db::results_for_coupon(&app.db.pool, coupon)
        .await
        .unwrap();
    let ids: HashSet<_> = restocked.iter().map(|a| a.request_id).collect();
    let wins = results
        .iter()
        .filter(|r| ids.contains(&r.request_id) && r.status == IssueStatus::Success)
        .count();
    assert_eq!(wins, 5);
}

/// Redis: the worker whose batch takes the last unit marks the coupon in
/// the queue, and the api refuses at once instead of queueing until its
/// coupon cache reloads (here only every minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_worker_marks_the_coupon_it_sold_out_and_the_api_stops_queueing_at_once() {
    let app =
        testkit::spawn_app_with_cache_refresh(QueueType::Redis, Duration::from_secs(60)).await;
    let coupon = app.create_coupon(10).await;
    let _worker = app.spawn_worker();
    let mut accepted = app.fire(coupon, &(1..=10).collect::<Vec<_>>(), 10).await;
    app.wait_for_results(coupon, accepted.len(), DRAIN_TIMEOUT)
        .await;

    // The cache still says open: only the worker's mark can refuse. A
    // request that slips past a lapsed mark is queued and processed (and
    // its batch marks the coupon again); within a few, one is refused.
    let started = std::time::Instant::now();
    let mut user = 100;
    loop {
        let res = app.issue(coupon.get(), &user.to_string()).await;
        user += 1;
        if res.status() == 409 {
            let body: serde_json::Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "SOLD_OUT");
            break;
        }
        assert_eq!(res.status(), 202);
        accepted.push(res.json().await.unwrap());
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no SOLD_OUT long before the cache reload"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // From then on the api refuses by itself, and nothing more is queued.
    let late = app
        .fire_tolerant(coupon, &(1001..=1100).collect::<Vec<_>>(), 20)
        .await;
    assert_eq!(
        (late.accepted.len(), late.refused, late.sold_out),
        (0, 0, 100)
    );
    assert_eq!(
        app.entries_enqueued(coupon).await,
        accepted.len() as u64,
        "the queue holds the accepted requests and nothing of the refused ones"
    );
    app.wait_for_results(coupon, accepted.len(), DRAIN_TIMEOUT)
        .await;
    let report = app.audit(coupon, 10, &accepted).await;
    assert_eq!(report.count(IssueStatus::Success), 10);
}
