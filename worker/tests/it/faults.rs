//! Fault tests: things really die or get cut mid-sale, and afterwards every
//! invariant of a finished sale still holds (`common::audit`).

use std::time::Duration;

use common::domain::IssueStatus;
use common::domain::QueueType;
use rstest::rstest;
use testkit::{spawn_app, wait_until, Accepted, CuttableProxy, OwnedQueue};

const DRAIN: Duration = Duration::from_secs(180);

/// 20,000 requests for 5,000 coupons; the worker draining the coupon is
/// SIGKILLed with entries in hand (see `TestApp::kill_worker_draining`).
/// With one worker a new one is started. With two, the survivor takes
/// over: in Redis mode once the dead worker's lease expires, in Kafka mode
/// once the group coordinator drops the dead member (`session.timeout.ms`)
/// and hands its partition to the survivor.
#[rstest]
#[case::redis_replaced(QueueType::Redis, 1)]
#[case::redis_one_of_two(QueueType::Redis, 2)]
#[case::kafka_replaced(QueueType::Kafka, 1)]
#[case::kafka_one_of_two(QueueType::Kafka, 2)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_drain_loses_and_doubles_nothing(
    #[case] mode: QueueType,
    #[case] workers: usize,
) {
    let app = spawn_app(mode).await;
    let coupon = app.create_coupon(5000).await;
    let batch = [("BATCH_SIZE", "100")];
    let mut running: Vec<_> = (0..workers).map(|_| app.start_worker(&batch)).collect();
    if mode == QueueType::Kafka {
        app.wait_for_partitions(&running, DRAIN).await;
    }
    let users: Vec<i64> = (1..=20_000).collect();
    let killer = async {
        wait_until("the drain to be under way", DRAIN, || async {
            app.result_count(coupon).await >= 2_000
        })
        .await;
        let killed = app
            .kill_worker_draining(&[coupon], &mut running, DRAIN)
            .await;
        if workers == 1 {
            running.push(app.start_worker(&batch));
        }
        app.wait_for_takeover(&killed, &running, DRAIN).await;
        killed
    };
    let (accepted, killed) = tokio::join!(app.fire(coupon, &users, 256), killer);
    eprintln!(
        "{mode} with {workers} worker(s): killed with {} entries not acknowledged",
        killed.left
    );
    app.wait_for_results(coupon, accepted.len(), DRAIN).await;
    let report = app.audit(coupon, 5000, &accepted).await;
    assert_eq!(report.count(IssueStatus::Success), 5000);
    assert_eq!(report.count(IssueStatus::OutOfStock), accepted.len() - 5000);
    assert_eq!(report.remaining_stock, 0);
}

/// `mysql://user:pass@host:port/db` with `host:port` replaced by the proxy's.
pub(crate) fn through_proxy(url: &str, port: u16) -> String {
    let start = url
        .find('@')
        .map_or_else(|| url.find("://").unwrap() + 3, |i| i + 1);
    let end = start + url[start..].find('/').unwrap();
    format!("{}127.0.0.1:{port}{}", &url[..start], &url[end..])
}

pub(crate) fn mysql_target(url: &str) -> (&'static str, u16) {
    let start = url
        .find('@')
        .map_or_else(|| url.find("://").unwrap() + 3, |i| i + 1);
    let end = start + url[start..].find('/').unwrap();
    let port = url[start..end]
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(3306);
    ("127.0.0.1", port)
}

/// The worker's MySQL connections are cut for 5 s mid-drain: it retries,
/// acknowledges nothing it did not commit, and finishes correctly.
#[rstest]
#[case::redis(QueueType::Redis)]
#[case::kafka(QueueType::Kafka)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_mid_drain_is_ridden_out(#[case] mode: QueueType) {
    let app = spawn_app(mode).await;
    let proxy = CuttableProxy::start(mysql_target(&app.common.database_url)).await;
    let coupon = app.create_coupon(2000).await;
    let _worker = app
        .worker_command()
        .env(
            "DATABASE_URL",
            through_proxy(&app.common.database_url, proxy.port),
        )
        .env("BATCH_SIZE", "50")
        .spawn()
        .unwrap();
    let users: Vec<i64> = (1..=6000).collect();
    let outage = async {
        wait_until("the drain to be under way", DRAIN, || async {
            app.result_count(coupon).await >= 300
        })
        .await;
        proxy.cut();
        let at_cut = app.result_count(coupon).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let during = app.result_count(coupon).await;
        proxy.restore();
        (at_cut, during)
    };
    let (accepted, (at_cut, during)) = tokio::join!(app.fire(coupon, &users, 128), outage);
    // At most the batch whose commit was already on the wire lands after the cut.
    assert!(
        during <= at_cut + 50,
        "worker wrote through a cut connection"
    );
    app.wait_for_results(coupon, accepted.len(), DRAIN).await;
    let report = app.audit(coupon, 2000, &accepted).await;
    assert_eq!(report.count(IssueStatus::Success), 2000);
    assert_eq!(
        report.count(IssueStatus::SystemError),
        0,
        "an outage is not a failure"
    );
}

/// An event the processor keeps refusing (a trigger rejects user 666) ends
/// as SYSTEM_ERROR in the dead-letter queue without blocking the others;
/// once the cause is gone, replaying the dead letters issues it.
#[rstest]
#[case::redis(QueueType::Redis)]
#[case::kafka(QueueType::Kafka)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_event_is_dead_lettered_then_replayed(#[case] mode: QueueType) {
    let app = spawn_app(mode).await;
    let coupon = app.create_coupon(100).await;
    sqlx::raw_sql(
        "CREATE TRIGGER refuse_user_666 BEFORE INSERT ON user_coupon FOR EACH ROW \
         BEGIN IF NEW.user_id = 666 THEN \
         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'user 666 is refused'; END IF; END",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let mut users: Vec<i64> = (1..=49).collect();
    users.insert(20, 666);
    let mut accepted: Vec<Accepted> = Vec::new();
    for chunk in users.chunks(10) {
        accepted.extend(app.fire(coupon, chunk, 10).await);
    }
    let mut worker = app.spawn_worker();
    app.wait_for_results(coupon, 50, DRAIN).await;
    let results = common::db::results_for_coupon(&app.db.pool, coupon)
        .await
        .unwrap();
    let refused = results.iter().find(|r| r.user_id == 666).unwrap();
    assert_eq!(refused.status, IssueStatus::SystemError);
    assert!(refused
        .reason
        .as_deref()
        .unwrap()
        .contains("user 666 is refused"));
    assert_eq!(
        results
            .iter()
            .filter(|r| r.status == IssueStatus::Success)
            .count(),
        49,
        "the events around it were issued"
    );
    testkit::terminate(&mut worker, Duration::from_secs(10)).await;

    sqlx::query("DROP TRIGGER refuse_user_666")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let out = app
        .worker_command()
        .arg("--replay-dead-letters")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("replayed 1 dead letters"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _worker = app.spawn_worker();
    let request = refused.request_id;
    wait_until("the replayed event to be issued", DRAIN, || async {
        common::db::find_result(&app.db.pool, request)
            .await
            .unwrap()
            .is_some_and(|r| r.status == IssueStatus::Success)
    })
    .await;
    // The replayed request stands at its new place in the queue.
    let mut answers = testkit::answers(&accepted);
    answers.replayed.insert(request);
    let report = app.audit_answers(coupon, 100, &answers).await;
    assert_eq!(report.count(IssueStatus::Success), 50);
    assert_eq!(report.results, 50);
}

/// The queue's server process is SIGKILLed mid-sale and restarted: the api
/// answers 503 meanwhile and recovers, the worker reconnects, the server
/// replays its log (Redis's AOF, the broker's sqlite file), and every
/// request answered 202 gets its result. Redis fsyncs its AOF before it
/// replies here (`testkit::servers::KILLED_REDIS_APPENDFSYNC`), so this
/// shows reconnection and replay, not what `everysec` may lose (see
/// docs/architecture.md, "Redis durability").
#[rstest]
#[case::redis(QueueType::Redis)]
#[case::kafka(QueueType::Kafka)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_process_killed_mid_sale_is_reconnected_to_and_replays_every_accepted_request(
    #[case] mode: QueueType,
) {
    let mut queue = OwnedQueue::start(mode).await;
    let app = queue.spawn_app().await;
    // Far more stock than sells before the kill, so the outage meets a sale
    // still open (not one answered SOLD_OUT by the api's cache).
    let coupon = app.create_coupon(1000).await;
    let _worker = app.spawn_worker_with(&[("BATCH_SIZE", "20")]);
    let outage = async {
        wait_until("the sale to be under way", DRAIN, || async {
            app.result_count(coupon).await >= 100
        })
        .await;
        queue.kill();
        tokio::time::sleep(Duration::from_secs(3)).await;
        queue.restart().await;
    };
    let sale = app.fire_through_outage(coupon, outage).await;
    assert!(sale.refused > 0, "some requests met the dead queue");
    app.wait_for_requests(coupon, &sale.accepted, DRAIN).await;
    let report = app
        .audit_with_unconfirmed(coupon, 1000, &sale.accepted, &sale.unconfirmed)
        .await;
    assert_eq!(report.count(IssueStatus::Success), 1000);
}
