//! The repeat gate (DESIGN.md, "The door"): a crowd clicking again and
//! again, through two api instances, in both queue modes and on a Redis
//! Cluster. The queue and MySQL see one request per user; every repeat is
//! answered with that user's request; a user whose request ended without a
//! coupon may ask again; the operators' reset clears the gate.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::domain::{CouponId, CouponIssueEvent, IssueStatus, QueueType, UserId, FIRST_EPOCH};
use common::error::QueueError;
use common::queue::gate::Claim;
use common::queue::redis::RedisKeys;
use common::queue::{Admitted, GateEntry, CLAIM_STALE};
use rstest::rstest;
use testkit::{scrape_at, spawn_app_on, spawn_app_with, Accepted, Backend, Refusals, TestApp};

const DRAIN_TIMEOUT: Duration = Duration::from_secs(90);

/// Every user of `users` clicks `clicks` times, all at once, half of the
/// clicks through each api.
async fn crowd(apis: [&TestApp; 2], coupon: CouponId, users: &[i64], clicks: usize) -> Refusals {
    let half: Vec<i64> = users
        .iter()
        .flat_map(|u| std::iter::repeat_n(*u, clicks / 2))
        .collect();
    let (a, b) = tokio::join!(
        apis[0].fire_tolerant(coupon, &half, 200),
        apis[1].fire_tolerant(coupon, &half, 200)
    );
    let mut all = Refusals::default();
    for part in [a, b] {
        assert_eq!(part.refused, 0, "nothing refused");
        all.accepted.extend(part.accepted);
        all.repeats.extend(part.repeats);
        all.sold_out += part.sold_out;
    }
    all.check_repeats();
    all
}

/// One click of `user`; its status code and body.
async fn click(api: &TestApp, coupon: CouponId, user: i64) -> (u16, serde_json::Value) {
    let res = api.issue(coupon.get(), &user.to_string()).await;
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Clicks of fresh users (from `first_user` on) until `api` answers `409
/// SOLD_OUT`; returns how many it accepted meanwhile.
async fn until_sold_out(api: &TestApp, coupon: CouponId, first_user: i64) -> usize {
    let started = Instant::now();
    for (n, user) in (first_user..).enumerate() {
        let (status, body) = click(api, coupon, user).await;
        match status {
            409 => return n,
            202 => {}
            other => panic!("{other}: {body}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the api did not learn the sell-out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!()
}

/// The app's Redis keys, and a connection to its (single-node) Redis: the
/// gate read or written behind the api's back.
async fn gate_redis(app: &TestApp) -> (RedisKeys, redis::aio::MultiplexedConnection) {
    let keys = RedisKeys::new(app.common.redis_key_prefix.as_str());
    let conn = redis::Client::open(app.common.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    (keys, conn)
}

/// Kafka mode: waits until the coupon's gate holds `users` entries and none
/// is a claim (every request's place is recorded).
async fn until_placed(app: &TestApp, coupon: CouponId, users: usize) {
    let (keys, mut redis) = gate_redis(app).await;
    let started = Instant::now();
    loop {
        let entries: HashMap<i64, String> = redis::cmd("HGETALL")
            .arg(keys.gate(coupon))
            .query_async(&mut redis)
            .await
            .unwrap();
        if entries.len() == users && entries.values().all(|e| !e.starts_with("C ")) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "places not recorded: {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `scripts/reset-db.sh COUPON STOCK` on the app's database and Redis, as
/// an operator runs it between sales.
fn operators_reset(app: &TestApp, coupon: CouponId, stock: i32) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let redis = reqwest::Url::parse(&app.common.redis_url).unwrap();
    let mut cmd = Command::new(format!("{root}/scripts/reset-db.sh"));
    cmd.arg(coupon.get().to_string())
        .arg(stock.to_string())
        .env("DB_NAME", &app.db.name)
        .env("REDIS_KEY_PREFIX", &app.common.redis_key_prefix)
        .env("REDIS_HOST", redis.host_str().unwrap())
        .env("REDIS_PORT", redis.port().unwrap_or(6379).to_string())
        .env("USE_DOCKER", "no");
    match &app.common.redis_cluster_nodes {
        Some(nodes) => cmd.env("REDIS_CLUSTER_NODES", nodes.to_string()),
        None => cmd.env_remove("REDIS_CLUSTER_NODES"),
    };
    let out = cmd.output().expect("reset-db.sh runs");
    assert!(
        out.status.success(),
        "reset-db.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[rstest]
#[case::redis(Backend::Redis)]
#[case::redis_cluster(Backend::RedisCluster)]
#[case::kafka(Backend::Kafka)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crowd_clicking_again_through_two_apis_queues_one_request_per_user(
    #[case] backend: Backend,
) {
    let first = spawn_app_on(backend).await;
    let second = spawn_app_with(first.db.clone(), first.common.clone()).await;
    let stock = 30;
    let coupon = first.create_coupon(stock).await;
    let users: Vec<i64> = (1..=60).collect();

    // No worker yet: every request stays pending, so no user may ask again.
    let sale = crowd([&first, &second], coupon, &users, 8).await;
    let mut accepted_by_user: HashMap<i64, usize> = HashMap::new();
    for a in &sale.accepted {
        *accepted_by_user.entry(a.user_id).or_default() += 1;
    }
    assert_eq!(
        accepted_by_user.len(),
        users.len(),
        "every user was accepted"
    );
    assert!(
        accepted_by_user.values().all(|n| *n == 1),
        "simultaneous clicks of one user give one 202: {accepted_by_user:?}"
    );
    assert_eq!(sale.repeats.len(), users.len() * 7);
    if backend != Backend::Kafka {
        assert_eq!(
            first.queue_size(coupon).await,
            users.len() as u64,
            "one queue entry per user"
        );
    }
    assert!(sale
        .repeats
        .iter()
        .all(|r| r.status == IssueStatus::Pending));
    // The gate holds each request's place once its queue acknowledged it
    // (Kafka: simultaneous repeats may meet the claim before that, and the
    // api records places just after its answers): any api, not only the one
    // that accepted it, tells where it stands.
    if backend == Backend::Kafka {
        until_placed(&first, coupon, users.len()).await;
    }
    for api in [&first, &second] {
        for user in &users {
            let (status, body) = click(api, coupon, *user).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["status"], "PENDING", "{body}");
            assert!(body["queuePosition"].is_string(), "{body}");
            assert!(body["ahead"].is_u64(), "{body}");
        }
    }

    let _worker = first.spawn_worker();
    first
        .wait_for_results(coupon, sale.accepted.len(), DRAIN_TIMEOUT)
        .await;
    let report = first.audit(coupon, stock, &sale.accepted).await;
    assert_eq!(report.results, users.len(), "one result per user");
    assert_eq!(report.count(IssueStatus::Success), stock as usize);
    assert_eq!(
        report.count(IssueStatus::OutOfStock),
        users.len() - stock as usize
    );
    assert_eq!(report.count(IssueStatus::DuplicateRequest), 0);

    // After the sell-out (once each api knows it: Kafka mode learns it at
    // its next coupon cache reload): a winner is told of their coupon (not
    // SOLD_OUT), by either api; a loser is told the coupon is sold out.
    let mut probes = 0;
    for (i, api) in [&first, &second].into_iter().enumerate() {
        probes += until_sold_out(api, coupon, 100_000 * (i as i64 + 1)).await;
    }
    let winners: HashSet<i64> =
        sqlx::query_scalar("SELECT user_id FROM user_coupon WHERE coupon_id = ?")
            .bind(coupon.get())
            .fetch_all(&first.db.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let request_of: HashMap<i64, &Accepted> =
        sale.accepted.iter().map(|a| (a.user_id, a)).collect();
    let winner = *winners.iter().next().unwrap();
    let loser = *users.iter().find(|u| !winners.contains(u)).unwrap();
    for api in [&first, &second] {
        let (status, body) = click(api, coupon, winner).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "SUCCESS", "{body}");
        assert_eq!(body["repeat"], true);
        assert_eq!(
            body["requestId"],
            request_of[&winner].request_id.to_string(),
            "{body}"
        );
        let (status, body) = click(api, coupon, loser).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "SOLD_OUT");
    }

    // Once the apis hold a copy of the sold-out coupon's gate, such clicks
    // are answered from memory (no Redis read), and still exactly.
    let reads = || scrape_at(&first.address, "coupon_issue_sold_out_redis_reads_total");
    let started = Instant::now();
    loop {
        let before = reads().await;
        for api in [&first, &second] {
            let (status, body) = click(api, coupon, winner).await;
            assert_eq!(
                (status, &body["status"]),
                (200, &"SUCCESS".into()),
                "{body}"
            );
            let (status, body) = click(api, coupon, loser).await;
            assert_eq!(status, 409, "{body}");
        }
        if reads().await == before {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "sold-out clicks still read Redis"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A restock by SQL: the loser may ask again, as a new request.
    sqlx::query("UPDATE coupon SET stock = 1 WHERE coupon_id = ?")
        .bind(coupon.get())
        .execute(&first.db.pool)
        .await
        .unwrap();
    let started = Instant::now();
    let again = loop {
        let (status, body) = click(&second, coupon, loser).await;
        if status == 202 {
            break body;
        }
        assert_eq!(status, 409, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the restocked coupon did not re-open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(
        again["requestId"],
        request_of[&loser].request_id.to_string(),
        "a new request after the first ended without a coupon"
    );
    first
        .wait_for_results(coupon, sale.accepted.len() + probes + 1, DRAIN_TIMEOUT)
        .await;
    // It won the restocked unit, and the coupon is sold out again: both
    // apis, whatever copy of the gate they held, come to tell it so.
    for api in [&first, &second] {
        let started = Instant::now();
        loop {
            let (status, body) = click(api, coupon, loser).await;
            if status == 200 && body["status"] == "SUCCESS" {
                assert_eq!(body["requestId"], again["requestId"], "{body}");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the new winner is not told: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // The operators' reset clears the gate: the winner may ask again.
    operators_reset(&first, coupon, 5);
    let (status, body) = click(&first, coupon, winner).await;
    assert_eq!(status, 202, "after a reset: {body}");
}

#[rstest]
#[case::redis(Backend::Redis)]
#[case::kafka(Backend::Kafka)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeats_during_a_running_sale_never_reach_the_queue(#[case] backend: Backend) {
    // 400 users clicking 5 times each while a worker drains: a user whose
    // request ended may ask again (it is then a new request), so the check
    // is on what the gate promises: every repeat names its user's accepted
    // request, and no user has two requests pending at once (no
    // DUPLICATE_REQUEST ever comes from two pending requests).
    let app = spawn_app_on(backend).await;
    let second = spawn_app_with(app.db.clone(), app.common.clone()).await;
    let stock = 100;
    let coupon = app.create_coupon(stock).await;
    let _worker = app.spawn_worker();
    let users: Vec<i64> = (1..=400).collect();
    let sale = crowd([&app, &second], coupon, &users, 6).await;
    app.wait_for_results(coupon, sale.accepted.len(), DRAIN_TIMEOUT)
        .await;
    let report = app.audit(coupon, stock, &sale.accepted).await;
    assert_eq!(report.results, sale.accepted.len());
    assert_eq!(report.count(IssueStatus::Success), stock as usize);
    assert_eq!(
        report.count(IssueStatus::DuplicateRequest),
        0,
        "{:?}",
        report.by_status
    );
    assert!(
        sale.accepted.len() + sale.repeats.len() + sale.sold_out == users.len() * 6,
        "every click answered"
    );
    assert!(!sale.repeats.is_empty());
}

/// Kafka mode: an api that claimed a user's gate entry and died before
/// producing leaves a claim nobody places. The user's next click, once the
/// claim is stale, sends its event again under the same id: the request id
/// the gate handed out ends in a result, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_kafka_claim_is_taken_over_and_its_request_ends_in_a_result() {
    let app = spawn_app_on(Backend::Kafka).await;
    let coupon = app.create_coupon(10).await;
    let user = UserId::try_from(77).unwrap();
    let orphan = CouponIssueEvent::in_epoch(coupon, user, FIRST_EPOCH);
    let claimed_at = chrono::Utc::now().timestamp_millis() - CLAIM_STALE.as_millis() as i64 - 1_000;
    let (keys, mut redis) = gate_redis(&app).await;
    let _: i64 = redis::cmd("HSET")
        .arg(keys.gate(coupon))
        .arg(user.get())
        .arg(GateEntry::claim(
            orphan.event_id,
            &orphan.to_json(),
            claimed_at,
        ))
        .query_async(&mut redis)
        .await
        .unwrap();

    let (status, body) = click(&app, coupon, user.get()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requestId"], orphan.event_id.to_string());
    assert!(body["queuePosition"].is_string(), "sent again: {body}");
    // A second click while it is placed: the same request, not sent again.
    let (status, again) = click(&app, coupon, user.get()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["queuePosition"], body["queuePosition"]);

    let _worker = app.spawn_worker();
    app.wait_for_results(coupon, 1, DRAIN_TIMEOUT).await;
    let result = app
        .get_json(&format!("/api/coupons/issue-requests/{}", orphan.event_id))
        .await;
    assert_eq!(result["status"], "SUCCESS", "{result}");
    assert_eq!(app.result_count(coupon).await, 1);
}

/// Kafka mode with its Redis (the gate's home) unreachable: the door stays
/// open. Every click is queued as a new request, MySQL's own check answers
/// the repeats `DUPLICATE_REQUEST`, and every accepted request gets its
/// result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_mode_without_its_redis_gate_keeps_the_door_open() {
    let (db, mut common) = testkit::test_config(QueueType::Kafka).await;
    common.redis_url = format!("redis://127.0.0.1:{}", testkit::free_port());
    let app = spawn_app_with(db, common).await;
    let stock = 20;
    let coupon = app.create_coupon(stock).await;
    let users: Vec<i64> = (1..=50).flat_map(|u| [u, u]).collect();
    let sale = app.fire_all(coupon, &users, 20).await;
    assert!(sale.repeats.is_empty(), "no gate, no repeat answers");
    let _worker = app.spawn_worker();
    app.wait_for_results(coupon, sale.accepted.len(), DRAIN_TIMEOUT)
        .await;
    let report = app.audit(coupon, stock, &sale.accepted).await;
    assert_eq!(report.results, sale.accepted.len());
    assert_eq!(report.count(IssueStatus::Success), stock as usize);
}

/// Runs `cmd` on the app's Redis, single node or cluster.
async fn run_on(app: &TestApp, cmd: redis::Cmd) {
    match &app.common.redis_cluster_nodes {
        Some(nodes) => {
            let client = redis::cluster::ClusterClient::new(nodes.urls().to_vec()).unwrap();
            let mut conn = client.get_async_connection().await.unwrap();
            let _: redis::Value = cmd.query_async(&mut conn).await.unwrap();
        }
        None => {
            let (_, mut conn) = gate_redis(app).await;
            let _: redis::Value = cmd.query_async(&mut conn).await.unwrap();
        }
    }
}

/// Clicks sent at once through one queue handle, as a crowd's arrive, go
/// to the enqueue script grouped (several to a call), and each is answered
/// as a call of its own would answer it: every user queued once, in the
/// order sent, with its place counting those ahead; a user's second click
/// answered with the first's request, in the same call or not; an earlier
/// epoch's event fenced and a new click refused while the coupon is marked
/// sold out, while a replay sent with them is queued.
#[rstest]
#[case::redis(Backend::Redis)]
#[case::redis_cluster(Backend::RedisCluster)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clicks_sent_together_are_answered_as_one_by_one(#[case] backend: Backend) {
    let app = spawn_app_on(backend).await;
    let coupon = app.create_coupon(10).await;
    let queue = app.redis_queue().await;
    let users = 300;
    let user = |i: i64| UserId::try_from(i % users + 1).unwrap();
    let clicks: Vec<CouponIssueEvent> = (0..2 * users)
        .map(|i| CouponIssueEvent::new(coupon, user(i)))
        .collect();
    let answers = futures::future::join_all(clicks.iter().map(|e| queue.admit(e))).await;

    let mut last_position = None;
    for (i, answer) in answers.into_iter().enumerate() {
        match answer.unwrap() {
            Admitted::New(enqueued) if (i as i64) < users => {
                assert_eq!(enqueued.target, i as u64, "the places ahead of click {i}");
                let position = entry_order(&enqueued.position);
                assert!(last_position < Some(position), "in the order sent");
                last_position = Some(position);
            }
            Admitted::Repeat { entry, .. } if (i as i64) >= users => {
                assert_eq!(entry.request_id, clicks[i - users as usize].event_id);
            }
            other => panic!("click {i}: {other:?}"),
        }
    }
    let queued: Vec<UserId> = app
        .queued_events(coupon)
        .await
        .iter()
        .map(|e| e.user_id)
        .collect();
    assert_eq!(queued, (0..users).map(user).collect::<Vec<_>>());

    // A fenced event and a sold-out refusal beside events that pass.
    queue
        .raise_fences(&[coupon], FIRST_EPOCH + 1)
        .await
        .unwrap();
    let mut mark = redis::cmd("SET");
    mark.arg(RedisKeys::new(app.common.redis_key_prefix.as_str()).sold_out(coupon))
        .arg(1);
    run_on(&app, mark).await;
    let newcomer = |n: i64| UserId::try_from(users + n).unwrap();
    let late = CouponIssueEvent::in_epoch(coupon, newcomer(1), FIRST_EPOCH);
    let current = CouponIssueEvent::in_epoch(coupon, newcomer(2), FIRST_EPOCH + 1);
    let (late, refused, replayed) = tokio::join!(
        queue.admit(&late),
        queue.admit(&current),
        queue.requeue(&current, false)
    );
    assert!(
        matches!(late, Err(QueueError::Fenced(e)) if e == FIRST_EPOCH + 1),
        "{late:?}"
    );
    assert!(
        matches!(refused, Err(QueueError::SoldOut(c)) if c == coupon),
        "{refused:?}"
    );
    assert_eq!(replayed.unwrap().target, users as u64);
}

/// A stream entry id as numbers, to compare ids by order.
fn entry_order(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("a stream entry id");
    (ms.parse().unwrap(), seq.parse().unwrap())
}

/// Kafka mode's claims sent at once through one handle go to Redis
/// grouped, and each is answered as one sent alone would be: each user's
/// first click claims its entry, the second is a repeat naming the first's
/// request; a stale claim is taken over by the first click that meets it,
/// and the click behind it is a repeat of that request.
#[rstest]
#[case::redis(Backend::Redis)]
#[case::redis_cluster(Backend::RedisCluster)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_sent_together_are_answered_as_one_by_one(#[case] backend: Backend) {
    let app = spawn_app_on(backend).await;
    let coupon = app.create_coupon(10).await;
    let gate = app.redis_queue().await;
    let users = 300;
    let user = |i: i64| UserId::try_from(i % users + 1).unwrap();
    let stale_user = UserId::try_from(users + 1).unwrap();
    let orphan = CouponIssueEvent::new(coupon, stale_user);
    let claimed_at = chrono::Utc::now().timestamp_millis() - CLAIM_STALE.as_millis() as i64 - 1_000;
    let mut set = redis::cmd("HSET");
    set.arg(RedisKeys::new(app.common.redis_key_prefix.as_str()).gate(coupon))
        .arg(stale_user.get())
        .arg(GateEntry::claim(
            orphan.event_id,
            &orphan.to_json(),
            claimed_at,
        ));
    run_on(&app, set).await;

    let clicks: Vec<CouponIssueEvent> = (0..2 * users)
        .map(|i| CouponIssueEvent::new(coupon, user(i)))
        .chain((0..2).map(|_| CouponIssueEvent::new(coupon, stale_user)))
        .collect();
    let jsons: Vec<String> = clicks.iter().map(CouponIssueEvent::to_json).collect();
    let answers = futures::future::join_all(
        clicks
            .iter()
            .zip(&jsons)
            .map(|(e, json)| gate.claim(coupon, e.user_id, e.event_id, json, CLAIM_STALE)),
    )
    .await;
    for (i, answer) in answers.into_iter().enumerate() {
        let first = clicks[i % users as usize].event_id;
        match (i as i64, answer.unwrap()) {
            (i, Claim::Claimed) if i < users => {}
            (i, Claim::Repeat(entry)) if (users..2 * users).contains(&i) => {
                assert_eq!(entry.request_id, first, "click {i}");
            }
            (i, Claim::TakenOver(entry)) if i == 2 * users => {
                assert_eq!(entry.request_id, orphan.event_id);
            }
            (i, Claim::Repeat(entry)) if i == 2 * users + 1 => {
                assert_eq!(entry.request_id, orphan.event_id, "the taken-over claim");
            }
            (i, other) => panic!("click {i}: {other:?}"),
        }
    }
}
