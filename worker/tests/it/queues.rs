//! Queue behaviour with real brokers: consumer-group sharing, resuming from
//! committed offsets after SIGTERM, a broker that dies, and malformed
//! messages going to the dead-letter queue.

use std::collections::HashSet;
use std::time::Duration;

use common::domain::QueueType;
use common::domain::{CouponId, IssueStatus};
use common::queue::kafka::partition_for;
use common::queue::{Producer, RedisQueue};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rstest::rstest;
use testkit::{
    free_port, scrape, spawn_app, spawn_app_on, terminate, wait_until, Backend, OwnedQueue, TestApp,
};
use tokio::process::Child;

const DRAIN: Duration = Duration::from_secs(90);

/// 20 requests queued behind malformed entries of a 5-unit coupon, then one
/// worker: every request gets its result and the sale passes the audit.
async fn sale_behind_malformed_entries(app: &TestApp, coupon: CouponId) -> Child {
    let accepted = app.fire(coupon, &(1..=20).collect::<Vec<_>>(), 20).await;
    let worker = app.spawn_worker();
    app.wait_for_results(coupon, 20, DRAIN).await;
    app.audit(coupon, 5, &accepted).await;
    worker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_kafka_workers_share_the_partitions_and_keep_every_invariant() {
    let app = spawn_app(QueueType::Kafka).await;
    let ports = [free_port(), free_port()];
    let _workers: Vec<_> = ports.iter().map(|p| app.spawn_worker_on(*p)).collect();
    wait_until(
        "both workers to hold partitions",
        Duration::from_secs(60),
        || async {
            let a = scrape(ports[0], "kafka_assigned_partitions")
                .await
                .unwrap_or(0.0);
            let b = scrape(ports[1], "kafka_assigned_partitions")
                .await
                .unwrap_or(0.0);
            a > 0.0 && b > 0.0 && a + b == 3.0
        },
    )
    .await;

    // Coupons on every partition, so both members get work.
    let mut coupons = Vec::new();
    let mut covered = HashSet::new();
    while covered.len() < 3 {
        let c = app.create_coupon(40).await;
        covered.insert(partition_for(c, 3));
        coupons.push(c);
    }
    let users: Vec<i64> = (1..=200).collect();
    let mut sales = Vec::new();
    for c in &coupons {
        sales.push((*c, app.fire(*c, &users, 100).await));
    }
    for (c, accepted) in &sales {
        app.wait_for_results(*c, accepted.len(), DRAIN).await;
        let report = app.audit(*c, 40, accepted).await;
        assert_eq!(report.count(IssueStatus::Success), 40);
        assert_eq!(report.count(IssueStatus::OutOfStock), accepted.len() - 40);
    }
    for p in ports {
        let done = scrape(p, "coupon_issue_events_acknowledged_total")
            .await
            .unwrap_or(0.0);
        assert!(done > 0.0, "worker on port {p} processed nothing");
    }
}

/// SIGTERM mid-drain: the worker exits 0 promptly with its offsets committed
/// exactly up to what it processed (Redis: trimmed, Kafka: committed); a new
/// worker resumes from there.
#[rstest]
#[case::redis(QueueType::Redis)]
#[case::kafka(QueueType::Kafka)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_stopped_by_sigterm_hands_over_at_its_committed_position(#[case] mode: QueueType) {
    let app = spawn_app(mode).await;
    let coupon = app.create_coupon(500).await;
    let users: Vec<i64> = (1..=4000).collect();
    let accepted = app.fire(coupon, &users, 200).await;

    // Small batches so the drain is still under way when SIGTERM arrives.
    let mut first = app.spawn_worker_with(&[("BATCH_SIZE", "5")]);
    let app_ref = &app;
    wait_until("the first worker to start draining", DRAIN, || async move {
        app_ref.result_count(coupon).await > 0
    })
    .await;
    let status = terminate(&mut first, Duration::from_secs(10)).await;
    assert!(status.success(), "worker exit status {status:?}");
    let processed = app.result_count(coupon).await;
    assert!(processed < accepted.len(), "stopped before the end");

    let producer = Producer::new(&app.common.queue_settings(), app.common.queue_type)
        .await
        .unwrap();
    let left = producer.queue_size(coupon).await.unwrap().size as usize;
    assert_eq!(
        left,
        accepted.len() - processed,
        "queue position = exactly what was processed"
    );

    let _second = app.spawn_worker();
    app.wait_for_results(coupon, accepted.len(), DRAIN).await;
    let report = app.audit(coupon, 500, &accepted).await;
    assert_eq!(report.count(IssueStatus::Success), 500);
    assert_eq!(report.results, accepted.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_kafka_broker_gives_503_and_the_api_recovers_without_restart() {
    let mut broker = OwnedQueue::start(QueueType::Kafka).await;
    let app = broker.spawn_app().await;
    let coupon = app.create_coupon(10).await;
    let mut accepted = app.fire(coupon, &[1, 2, 3], 3).await;

    broker.kill();
    let res = app.issue(coupon.get(), "4").await;
    assert_eq!(res.status(), 503);
    let refusal: serde_json::Value = res.json().await.unwrap();
    // With an unknown outcome the api keeps sending the request, under the
    // id it gave, until the broker is back: that id ends in a result.
    let unknown = (refusal["error"]["code"] == "QUEUE_OUTCOME_UNKNOWN")
        .then(|| uuid::Uuid::parse_str(refusal["error"]["requestId"].as_str().unwrap()).unwrap());

    broker.restart().await;
    let mut user = 5;
    wait_until("the api to accept again", Duration::from_secs(60), || {
        user += 1;
        let app = &app;
        let u = user;
        async move { app.issue(coupon.get(), &u.to_string()).await.status() == 202 }
    })
    .await;
    // The request that succeeded inside `wait_until` is not tracked; count
    // from here with tracked ones only.
    accepted.extend(app.fire(coupon, &[1001, 1002, 1003], 3).await);

    let _worker = app.spawn_worker();
    let mut ids: HashSet<_> = accepted.iter().map(|a| a.request_id).collect();
    ids.extend(unknown);
    wait_until("every tracked request to have a result", DRAIN, || async {
        let results = common::db::results_for_coupon(&app.db.pool, coupon)
            .await
            .unwrap();
        results
            .iter()
            .filter(|r| ids.contains(&r.request_id))
            .count()
            == ids.len()
    })
    .await;
    let results = common::db::results_for_coupon(&app.db.pool, coupon)
        .await
        .unwrap();
    // Requests from before the kill survived it: the sqlite storage kept them.
    for a in &accepted[..3] {
        assert!(results.iter().any(|r| r.request_id == a.request_id));
    }
    // The refused request (user 4) left nothing behind, or, when its
    // outcome was unknown, exactly the result of the id it was given.
    let of_user_4: Vec<_> = results.iter().filter(|r| r.user_id == 4).collect();
    match unknown {
        None => assert!(of_user_4.is_empty(), "{of_user_4:?}"),
        Some(id) => {
            assert_eq!(of_user_4.len(), 1, "{of_user_4:?}");
            assert_eq!(of_user_4[0].request_id, id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_kafka_message_is_dead_lettered_and_the_events_behind_it_processed() {
    let app = spawn_app(QueueType::Kafka).await;
    let coupon = app.create_coupon(5).await;
    // What a producer with a bug might send, keyed by the coupon like the
    // api's messages.
    let producer: FutureProducer = app
        .common
        .kafka_settings()
        .producer_config(Duration::from_secs(10))
        .create()
        .unwrap();
    let mut v9 = common::domain::CouponIssueEvent::new(coupon, 77.try_into().unwrap());
    v9.version = 9;
    let key = coupon.to_string();
    for payload in [b"{not json".to_vec(), v9.to_json().into_bytes()] {
        producer
            .send(
                FutureRecord::to(&app.common.kafka_topic)
                    .key(&key)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let _worker = sale_behind_malformed_entries(&app, coupon).await;

    let dlq: StreamConsumer = app
        .common
        .kafka_settings()
        .dead_letter_reader_config()
        .create()
        .unwrap();
    dlq.subscribe(&[&format!("{}.dlq", app.common.kafka_topic)])
        .unwrap();
    let mut reasons = Vec::new();
    while reasons.len() < 2 {
        let m = match tokio::time::timeout(Duration::from_secs(30), dlq.recv())
            .await
            .expect("dead letters arrive")
        {
            // The reader reports each partition's end; keep waiting.
            Err(rdkafka::error::KafkaError::PartitionEOF(_)) => continue,
            other => other.unwrap(),
        };
        let reason = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "reason").and_then(|h| h.value))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        reasons.push((m.payload().unwrap_or_default().to_vec(), reason));
    }
    assert_eq!(reasons[0].0, b"{not json");
    assert!(reasons[0].1.contains("malformed"), "{}", reasons[0].1);
    assert!(
        reasons[1].1.contains("unknown event version 9"),
        "{}",
        reasons[1].1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_redis_entry_is_dead_lettered_and_the_events_behind_it_processed() {
    let app = spawn_app(QueueType::Redis).await;
    let coupon = app.create_coupon(5).await;
    let queue = RedisQueue::new(
        &app.common.redis_url,
        &app.common.redis_key_prefix,
        Duration::from_secs(2),
    )
    .unwrap();
    queue
        .enqueue_raw(coupon, b"\xff\xfe garbage")
        .await
        .unwrap();
    let other = CouponId::try_from(coupon.get() + 1000).unwrap();
    let stray = common::domain::CouponIssueEvent::new(other, 5.try_into().unwrap());
    queue
        .enqueue_raw(coupon, stray.to_json().as_bytes())
        .await
        .unwrap();
    let _worker = sale_behind_malformed_entries(&app, coupon).await;
    let letters = queue.dead_letters(None, 10).await.unwrap();
    assert_eq!(letters.len(), 2);
    assert!(letters[0].reason.contains("malformed"));
    assert_eq!(letters[0].payload, b"\xff\xfe garbage");
    assert!(letters[1].reason.contains("in the stream of coupon"));
    assert_eq!(app.queue_size(coupon).await, 0);
}

/// With a poll interval far longer than the test, only the wake-up that an
/// enqueue into an empty queue publishes can start the worker: the first
/// request of a sale, and the first one after the queue drained, both get
/// their results at once.
#[rstest]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::RedisCluster)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_redis_worker_wakes_when_work_arrives_instead_of_waiting_for_its_poll(
    #[case] backend: Backend,
) {
    let app = spawn_app_on(backend).await;
    let coupon = app.create_coupon(10).await;
    let _worker = app.spawn_worker_with(&[("POLL_INTERVAL_MS", "600000")]);
    // The worker's first poll runs at start; give it time to subscribe.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for round in 0..2 {
        let users: Vec<i64> = (round * 100 + 1..=round * 100 + 3).collect();
        let accepted = app.fire(coupon, &users, 3).await;
        app.wait_for_results(coupon, ((round + 1) * 3) as usize, Duration::from_secs(20))
            .await;
        assert_eq!(accepted.len(), 3);
    }
}
