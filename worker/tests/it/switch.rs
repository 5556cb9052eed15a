//! Switching a live sale between Redis and Kafka (`PUT /api/admin/queue`,
//! `QUEUE_FALLBACK`): every accepted request gets exactly one result, stock
//! is exact, nobody holds a coupon twice, and first-come holds across the
//! switch: each coupon's requests of the old queue are processed before any
//! of the new one.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::domain::QueueType;
use common::domain::{CouponId, IssueStatus};
use futures::future::join_all;
use rstest::rstest;
use testkit::servers::OwnedBroker;
use testkit::{
    kill9, spawn_app_with, test_config, test_config_both, wait_until, Accepted, TestApp,
};

const DRAIN: Duration = Duration::from_secs(240);

/// One coupon of the sale: its stock, the users who ask before the switch
/// and those who ask after it.
struct Plan {
    stock: i64,
    before: std::ops::RangeInclusive<i64>,
    after: std::ops::RangeInclusive<i64>,
}

/// 20,000 requests on three coupons: stock that straddles the switch (with
/// 500 users asking in both queues), a coupon that sells out in the old
/// queue, and a smaller straddling one.
fn plans() -> [Plan; 3] {
    [
        Plan {
            stock: 2000,
            before: 1..=1500,
            after: 1001..=10500,
        },
        Plan {
            stock: 500,
            before: 1..=3000,
            after: 3001..=5000,
        },
        Plan {
            stock: 1000,
            before: 1..=500,
            after: 501..=4000,
        },
    ]
}

/// What the sale of one coupon looked like in the database.
struct Figures {
    old_results: usize,
    new_results: usize,
    last_old: Option<DateTime<Utc>>,
    first_new: Option<DateTime<Utc>>,
}

async fn figures(app: &TestApp, coupon: CouponId) -> Figures {
    let rows: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT queue_epoch, processed_at FROM coupon_issue_result WHERE coupon_id = ?",
    )
    .bind(coupon.get())
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    Figures {
        old_results: rows.iter().filter(|r| r.0 == 1).count(),
        new_results: rows.iter().filter(|r| r.0 == 2).count(),
        last_old: rows.iter().filter(|r| r.0 == 1).map(|r| r.1).max(),
        first_new: rows.iter().filter(|r| r.0 == 2).map(|r| r.1).min(),
    }
}

impl Figures {
    /// The barrier held: both epochs have results, and none of the new
    /// queue came before the old queue's last.
    fn assert_old_done_before_new(&self, coupon: CouponId) {
        let (Some(last_old), Some(first_new)) = (self.last_old, self.first_new) else {
            panic!(
                "coupon {coupon}: {} results via the old queue and {} via the new one; \
                 the barrier is shown only with both",
                self.old_results, self.new_results
            );
        };
        assert!(
            last_old <= first_new,
            "coupon {coupon}: a request of the new queue was processed at {first_new} \
             before the old queue's last at {last_old}"
        );
    }
}

fn users(range: std::ops::RangeInclusive<i64>) -> Vec<i64> {
    range.collect()
}

/// Each coupon with the users of one phase of its plan (`before` or `after`).
fn phase(
    coupons: &[CouponId],
    users_of: fn(Plan) -> std::ops::RangeInclusive<i64>,
) -> Vec<(CouponId, Vec<i64>)> {
    coupons
        .iter()
        .zip(plans())
        .map(|(c, p)| (*c, users(users_of(p))))
        .collect()
}

async fn fire_all(app: &TestApp, sales: &[(CouponId, Vec<i64>)]) -> Vec<Vec<Accepted>> {
    join_all(sales.iter().map(|(c, u)| app.fire(*c, u, 24))).await
}

/// Checks every coupon once all its accepted requests have a result, and
/// prints the switch's figures.
async fn check_sale(
    app: &TestApp,
    coupons: &[CouponId],
    accepted: &[Vec<Accepted>],
    switched_at: DateTime<Utc>,
    from: QueueType,
) {
    for (i, (coupon, plan)) in coupons.iter().zip(plans()).enumerate() {
        app.wait_for_requests(*coupon, &accepted[i], DRAIN).await;
        let report = app.audit(*coupon, plan.stock, &accepted[i]).await;
        assert_eq!(
            report.issued, plan.stock,
            "coupon {coupon} sold out exactly"
        );
        let f = figures(app, *coupon).await;
        f.assert_old_done_before_new(*coupon);
        let ms = |t: Option<DateTime<Utc>>| t.map(|t| (t - switched_at).num_milliseconds());
        println!(
            "switch {from}->{}: coupon {coupon} (stock {}): {} results via {from}, {} via {}; \
             old queue done {:?} ms after the switch, first new result at {:?} ms; {:?}",
            from.other(),
            plan.stock,
            f.old_results,
            f.new_results,
            from.other(),
            ms(f.last_old),
            ms(f.first_new),
            report.by_status
        );
    }
}

/// The old queue holds a backlog at the switch (its worker starts only a
/// second after it), the new queue's worker runs throughout: the barrier
/// must hold every coupon's new requests until its old ones are done.
#[rstest]
#[case::redis_to_kafka(QueueType::Redis)]
#[case::kafka_to_redis(QueueType::Kafka)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mid_sale_switch_keeps_first_come(#[case] from: QueueType) {
    let to = from.other();
    let (db, common) = test_config_both(from).await;
    let app = spawn_app_with(db, common).await;
    let mut coupons = Vec::new();
    for plan in plans() {
        coupons.push(app.create_coupon(plan.stock).await);
    }
    let _new_worker = app.worker_command_for(to).spawn().unwrap();

    let before = phase(&coupons, |p| p.before);
    let mut accepted = fire_all(&app, &before).await;
    let in_flight: usize = accepted.iter().map(Vec::len).sum();
    assert!(accepted.iter().flatten().all(|a| a.queue == from));

    let switched_at = Utc::now();
    let res = app.switch_queue(to).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["type"], to.as_str(), "{body}");
    assert_eq!(body["changed"], true, "{body}");
    assert_eq!(body["epoch"], 2, "{body}");
    println!("switch {from}->{to}: {in_flight} requests waiting in {from} at the switch");

    let after = phase(&coupons, |p| p.after);
    let old_worker = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        app.worker_command_for(from).spawn().unwrap()
    };
    let (later, _old_worker) = tokio::join!(fire_all(&app, &after), old_worker);
    assert!(later.iter().flatten().all(|a| a.queue == to));
    for (all, more) in accepted.iter_mut().zip(later) {
        all.extend(more);
    }
    check_sale(&app, &coupons, &accepted, switched_at, from).await;
}

/// A switch from Redis to Kafka while things die around it:
/// * an api that died just before the switch (its row stops being
///   written) does not hold it: the fences settle it within the call
///   (invariants S3, S4);
/// * the new queue's worker is killed -9 while the barrier holds it, the
///   old queue's worker is killed -9 mid-drain; both are replaced;
/// * a second api is restarted during the switch and follows the record,
///   not its `APP_QUEUE_TYPE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switch_redis_to_kafka_through_killed_workers_and_an_api_restart() {
    let from = QueueType::Redis;
    let to = QueueType::Kafka;
    let (db, common) = test_config_both(from).await;
    let app = spawn_app_with(db.clone(), common.clone()).await;
    let second = spawn_app_with(db.clone(), common.clone()).await;
    let mut coupons = Vec::new();
    for plan in plans() {
        coupons.push(app.create_coupon(plan.stock).await);
    }
    let mut new_worker = app.worker_command_for(to).spawn().unwrap();
    let before = phase(&coupons, |p| p.before);
    let mut accepted = fire_all(&app, &before).await;

    app.db.api_that_just_died(1).await;
    let switched_at = Utc::now();
    let res = app.switch_queue(to).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["settledAt"].is_string(), "settled in the call: {body}");

    let after = phase(&coupons, |p| p.after);
    let chaos = async {
        // The new worker holds what it reads (the old queue has a backlog
        // and no worker yet): once the new queue has events, kill it with
        // them not committed.
        let new_queue = app.queue_reader(to).await;
        let start = std::time::Instant::now();
        while new_queue.size(coupons[0]).await == 0 {
            assert!(start.elapsed() < DRAIN, "no event reached {to}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        kill9(&mut new_worker).await;
        assert!(
            new_queue.size(coupons[0]).await > 0,
            "the new worker died with events of {to} not committed"
        );
        let new_worker = app.worker_command_for(to).spawn().unwrap();
        // Restart the second api: it comes back on the record's queue.
        drop(second);
        let restarted = spawn_app_with(db.clone(), common.clone()).await;
        // Small batches, so that the kill lands mid-drain.
        let batch = [("BATCH_SIZE", "20")];
        let mut old_workers = vec![app.start_worker_for(from, &batch)];
        wait_until("the old queue's drain to be under way", DRAIN, || async {
            figures(&app, coupons[0]).await.old_results >= 300
        })
        .await;
        let killed = app
            .kill_worker_draining(&coupons, &mut old_workers, DRAIN)
            .await;
        old_workers.push(app.start_worker_for(from, &batch));
        app.wait_for_takeover(&killed, &old_workers, DRAIN).await;
        (restarted, new_worker, old_workers)
    };
    let (later, (restarted, _new_worker, _old_worker)) =
        tokio::join!(fire_all(&app, &after), chaos);
    assert!(later.iter().flatten().all(|a| a.queue == to));
    for (all, more) in accepted.iter_mut().zip(later) {
        all.extend(more);
    }
    // Requests through the restarted api go to the active queue.
    let res = restarted.issue(coupons[2].get(), "777777").await;
    let status = res.status().as_u16();
    if status == 202 {
        let a: Accepted = res.json().await.unwrap();
        assert_eq!(a.queue, to);
        accepted[2].push(a);
    } else {
        assert_eq!(status, 409, "sold out is the only other answer");
    }
    let queue = restarted.get_json("/api/admin/queue").await;
    assert_eq!(queue["type"], to.as_str(), "{queue}");
    check_sale(&app, &coupons, &accepted, switched_at, from).await;
    let queue = app.get_json("/api/admin/queue").await;
    let settled: DateTime<Utc> = queue["settledAt"].as_str().unwrap().parse().unwrap();
    assert!(
        settled - switched_at < chrono::Duration::seconds(5),
        "the dead api's row held the switch: settled {settled}, switched {switched_at}"
    );
}

/// Kafka is active with `QUEUE_FALLBACK=true` and its broker dies mid-sale:
/// the api moves the service to Redis instead of answering 503 for the
/// rest of the outage; Redis requests wait for the Kafka ones accepted
/// before, which are processed once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_broker_down_falls_back_to_redis_and_keeps_first_come() {
    const STOCK: i64 = 8000;
    let mut broker = OwnedBroker::start().await;
    let (db, mut common) = test_config(QueueType::Redis).await;
    common.kafka_brokers = broker.brokers();
    common.queue_type = QueueType::Kafka;
    common.queue_fallback = true;
    common
        .kafka_settings()
        .ensure_topics()
        .await
        .expect("test topics are created");
    let app = spawn_app_with(db, common).await;
    // Acceptance runs ahead of processing: far more stock than the requests
    // accepted before the kill, so the sale is still open after it.
    let coupon = app.create_coupon(STOCK).await;
    let _kafka_worker = app.worker_command_for(QueueType::Kafka).spawn().unwrap();
    let _redis_worker = app.worker_command_for(QueueType::Redis).spawn().unwrap();
    let outage = async {
        wait_until("the sale to be under way", DRAIN, || async {
            app.result_count(coupon).await >= 100
        })
        .await;
        broker.kill();
        wait_until("the api to fall back to Redis", DRAIN, || async {
            app.get_json("/api/admin/queue").await["type"] == "redis"
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        broker.restart().await;
    };
    let sale = app.fire_through_outage(coupon, outage).await;
    let via_redis = sale
        .accepted
        .iter()
        .filter(|a| a.queue == QueueType::Redis)
        .count();
    assert!(via_redis > 0, "requests were accepted into Redis");
    let queue = app.get_json("/api/admin/queue").await;
    assert_eq!(queue["reason"], "fallback", "{queue}");
    app.wait_for_requests(coupon, &sale.accepted, DRAIN).await;
    let report = app
        .audit_with_unconfirmed(coupon, STOCK, &sale.accepted, &sale.unconfirmed)
        .await;
    assert_eq!(report.count(IssueStatus::Success), STOCK as usize);
    let f = figures(&app, coupon).await;
    f.assert_old_done_before_new(coupon);
    let accepted: HashSet<_> = sale.accepted.iter().map(|a| a.request_id).collect();
    println!(
        "fallback kafka->redis: {} accepted ({via_redis} via redis), {} refused during the \
         fail-over; {} results via kafka, {} via redis",
        accepted.len(),
        sale.refused,
        f.old_results,
        f.new_results
    );
}

/// Kafka, then Redis, then Kafka again, each with requests waiting and no
/// worker running; then workers of both queues start. Each epoch's requests
/// wait for the one before: the third epoch's Kafka events wait for the
/// Redis ones, which wait for the first epoch's Kafka events, which share
/// a partition (and a fetch) with the third's. The Kafka worker must let
/// the group's offset move past what it did while it holds the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switch_kafka_redis_kafka_back_and_forth_keeps_first_come() {
    const STOCK: i64 = 2000;
    let (db, common) = test_config_both(QueueType::Kafka).await;
    let app = spawn_app_with(db, common).await;
    let coupon = app.create_coupon(STOCK).await;
    let mut accepted = app.fire(coupon, &users(1..=750), 24).await;
    for (to, range) in [
        (QueueType::Redis, 751..=1750),
        (QueueType::Kafka, 1751..=2500),
    ] {
        wait_until("the last switch to settle", DRAIN, || async {
            !app.get_json("/api/admin/queue").await["settledAt"].is_null()
        })
        .await;
        let res = app.switch_queue(to).await;
        assert_eq!(res.status(), 200);
        let more = app.fire(coupon, &users(range), 24).await;
        assert!(more.iter().all(|a| a.queue == to));
        accepted.extend(more);
    }
    let _kafka = app.worker_command_for(QueueType::Kafka).spawn().unwrap();
    let _redis = app.worker_command_for(QueueType::Redis).spawn().unwrap();
    app.wait_for_requests(coupon, &accepted, DRAIN).await;
    let report = app.audit(coupon, STOCK, &accepted).await;
    assert_eq!(report.issued, STOCK);
    let epochs: Vec<(i64, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT queue_epoch, MIN(processed_at), MAX(processed_at) FROM coupon_issue_result \
         WHERE coupon_id = ? GROUP BY queue_epoch ORDER BY queue_epoch",
    )
    .bind(coupon.get())
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(epochs.len(), 3, "{epochs:?}");
    for pair in epochs.windows(2) {
        assert!(
            pair[0].2 <= pair[1].1,
            "epoch {} was still processed after epoch {} began: {epochs:?}",
            pair[0].0,
            pair[1].0
        );
    }
}

/// The record says the previous epoch was Kafka, but the Kafka topic this
/// deployment is configured with was never created (the record outlived
/// another deployment on the same database, as a benchmark's runs do): the
/// topic holds nothing, so a Redis sale is not held.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_previous_kafka_topic_that_does_not_exist_holds_nothing() {
    let (db, mut common) = test_config_both(QueueType::Redis).await;
    common.kafka_topic = format!("never-created-{}", uuid::Uuid::new_v4().simple());
    sqlx::query(
        "INSERT INTO queue_epoch (epoch, queue_type, reason, started_at, settled_at) VALUES \
         (1, 'kafka', 'start', NOW(6), NOW(6)), (2, 'redis', 'start', NOW(6), NULL)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let app = spawn_app_with(db, common).await;
    let coupon = app.create_coupon(100).await;
    let accepted = app.fire(coupon, &users(1..=300), 24).await;
    assert!(accepted.iter().all(|a| a.queue == QueueType::Redis));
    let _worker = app.spawn_worker();
    app.wait_for_requests(coupon, &accepted, DRAIN).await;
    let report = app.audit(coupon, 100, &accepted).await;
    assert_eq!(report.issued, 100);
}

/// An api cut off from MySQL keeps its last view of the record and keeps
/// accepting (invariant S2) while a switch is made through another api.
/// Off Redis, the fence refuses its old-epoch events and it sends them to
/// Kafka instead (S3); off Kafka, which cannot refuse them, its old-epoch
/// events land after the recorded marks and the processor forwards those
/// that arrive too late (S6). Either way every request gets one result and
/// first-come holds.
#[rstest]
#[case::off_redis(QueueType::Redis)]
#[case::off_kafka(QueueType::Kafka)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_switch_while_an_api_is_cut_off_from_mysql_keeps_first_come(#[case] from: QueueType) {
    let to = from.other();
    let (db, common) = test_config_both(from).await;
    let proxy =
        testkit::CuttableProxy::start(crate::faults::mysql_target(&common.database_url)).await;
    let mut through_proxy = common.clone();
    through_proxy.database_url = crate::faults::through_proxy(&common.database_url, proxy.port);
    let app = spawn_app_with(db.clone(), common).await;
    let cut_off = spawn_app_with(db, through_proxy).await;
    let stock = 1500;
    let coupon = app.create_coupon(stock).await;
    let _old_worker = app.worker_command_for(from).spawn().unwrap();
    let _new_worker = app.worker_command_for(to).spawn().unwrap();
    // The second api's coupon cache learns the coupon within a reload.
    let first = loop {
        let res = cut_off.issue(coupon.get(), "1").await;
        match res.status().as_u16() {
            202 => break res.json::<Accepted>().await.unwrap(),
            404 => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("unexpected {other}"),
        }
    };
    let mut accepted = vec![first];
    let (mine, theirs) = (users(2..=500), users(501..=1000));
    let (a, b) = tokio::join!(
        app.fire(coupon, &mine, 64),
        cut_off.fire(coupon, &theirs, 64)
    );
    accepted.extend(a.into_iter().chain(b));

    proxy.cut();
    let res = app.switch_queue(to).await;
    assert_eq!(res.status(), 200);
    let (mine, theirs) = (users(1001..=2500), users(2501..=4000));
    let (a, b) = tokio::join!(
        app.fire(coupon, &mine, 64),
        cut_off.fire(coupon, &theirs, 64)
    );
    assert!(
        a.iter().all(|r| r.queue == to),
        "the api that saw the switch"
    );
    let cut_off_queues: HashSet<QueueType> = b.iter().map(|r| r.queue).collect();
    match from {
        // The fences went up within the switch call: every old-epoch event
        // of the cut-off api was refused and sent to Kafka.
        QueueType::Redis => assert_eq!(cut_off_queues, HashSet::from([to])),
        // Nothing tells it: it goes on writing epoch 1 into Kafka.
        QueueType::Kafka => assert_eq!(cut_off_queues, HashSet::from([from])),
    }
    accepted.extend(a.into_iter().chain(b));
    // Once the switch has settled and the new queue has decided requests,
    // whatever the cut-off api still adds to the old queue arrives late.
    wait_until(
        "the switch to settle and the new queue to work",
        DRAIN,
        || async {
            app.json("/api/admin/queue").await["settledAt"].is_string()
                && figures(&app, coupon).await.new_results > 0
        },
    )
    .await;
    let late = users(4001..=4500);
    let late = cut_off.fire(coupon, &late, 64).await;
    assert!(late.iter().all(|r| cut_off_queues.contains(&r.queue)));
    accepted.extend(late);
    proxy.restore();

    app.wait_for_requests(coupon, &accepted, DRAIN).await;
    let report = app.audit(coupon, stock, &accepted).await;
    assert_eq!(report.issued, stock);
    let epochs: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT queue_epoch FROM coupon_issue_result WHERE coupon_id = ? ORDER BY 1",
    )
    .bind(coupon.get())
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(epochs, [1, 2], "results of both epochs");
    figures(&app, coupon)
        .await
        .assert_old_done_before_new(coupon);
    // Requests the client was told went to the old queue but were decided
    // in the new one: forwarded late (S6).
    match from {
        QueueType::Redis => assert_eq!(report.forwarded, 0, "the fences refused them at the door"),
        QueueType::Kafka => assert!(report.forwarded > 0, "the late writes were forwarded"),
    }
    println!(
        "switch {from}->{to} with an api cut off: {} accepted, {} forwarded late",
        accepted.len(),
        report.forwarded
    );
}
