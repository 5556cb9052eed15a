//! MySQL outages under a running sale: the database of the test's own is
//! paused (SIGSTOP) or killed and restarted while two workers drain and the
//! crowd keeps clicking. The door stays open (no refused call while the
//! queue answers), no request becomes a `SYSTEM_ERROR`, every accepted
//! request gets its result once the database is back, the audit holds, and
//! in Kafka mode no worker is dropped from its group.

use std::time::{Duration, Instant};

use common::domain::{IssueStatus, QueueType};
use rstest::rstest;
use testkit::{scrape, spawn_app_with, test_config_on, wait_until, OwnedMysql, TestDb};

const DRAIN: Duration = Duration::from_secs(240);

/// What happens to the database mid-sale.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// SIGSTOP for this long, then SIGCONT: connections hang, nothing fails.
    Pause(Duration),
    /// SIGKILL, restarted after this long: connections fail at once.
    KillAndRestartAfter(Duration),
}

#[rstest]
#[case::redis_pause_12s(QueueType::Redis, Outage::Pause(Duration::from_secs(12)))]
#[case::kafka_pause_12s(QueueType::Kafka, Outage::Pause(Duration::from_secs(12)))]
#[case::redis_kill_restart(QueueType::Redis, Outage::KillAndRestartAfter(Duration::from_secs(8)))]
#[case::kafka_kill_restart(QueueType::Kafka, Outage::KillAndRestartAfter(Duration::from_secs(8)))]
#[case::redis_pause_60s(QueueType::Redis, Outage::Pause(Duration::from_secs(60)))]
#[case::kafka_pause_60s(QueueType::Kafka, Outage::Pause(Duration::from_secs(60)))]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_door_stays_open_and_every_request_gets_its_result_through_a_mysql_outage(
    #[case] mode: QueueType,
    #[case] outage: Outage,
) {
    let mut mysql = OwnedMysql::start().await;
    let (db, common) = test_config_on(TestDb::on(&mysql.url()).await, mode).await;
    let app = spawn_app_with(db, common).await;
    let stock = 500;
    let coupon = app.db.coupon(stock).await;
    let ports = [testkit::free_port(), testkit::free_port()];
    let _workers: Vec<_> = ports.iter().map(|&p| app.spawn_worker_on(p)).collect();

    let mut back = None;
    let mut revoked_before = Vec::new();
    let during = async {
        wait_until("the sale to be under way", DRAIN, || async {
            app.result_count(coupon).await >= 50
        })
        .await;
        if mode == QueueType::Kafka {
            for port in ports {
                assert!(
                    scrape(port, "kafka_assigned_partitions").await.is_some(),
                    "the worker on {port} answers /metrics"
                );
                revoked_before.push(revocations(port).await);
            }
        }
        match outage {
            Outage::Pause(d) => {
                mysql.pause();
                tokio::time::sleep(d).await;
                mysql.resume();
            }
            Outage::KillAndRestartAfter(d) => {
                mysql.kill();
                tokio::time::sleep(d).await;
                mysql.restart().await;
            }
        }
        back = Some(Instant::now());
    };
    // A volley of 100 every 250 ms: a few thousand calls through the outage.
    let sale = app
        .fire_through_outage_every(coupon, Duration::from_millis(250), during)
        .await;
    assert_eq!(
        sale.refused, 0,
        "the door refused calls while only the database was down"
    );
    app.wait_for_requests(coupon, &sale.accepted, DRAIN).await;
    let back = back.expect("the outage ended");
    eprintln!(
        "{mode} {outage:?}: {} accepted, {} sold out, {} refused; last result {:.1} s after the database came back",
        sale.accepted.len(),
        sale.sold_out,
        sale.refused,
        back.elapsed().as_secs_f64() - app.seconds_since_last_result(coupon).await,
    );
    let report = app.audit(coupon, stock.into(), &sale.accepted).await;
    assert_eq!(report.count(IssueStatus::Success), stock as usize);
    assert_eq!(
        report.count(IssueStatus::SystemError),
        0,
        "an outage delays results, it does not fail them"
    );
    if mode == QueueType::Kafka {
        for (port, before) in ports.into_iter().zip(revoked_before) {
            assert_eq!(
                revocations(port).await,
                before,
                "the worker on {port} lost its partitions during the outage (a rebalance)"
            );
        }
    }
}

/// Partitions taken from the worker on `port` so far (the counter appears
/// with the first revocation).
async fn revocations(port: u16) -> f64 {
    scrape(port, "kafka_partitions_revoked_total")
        .await
        .unwrap_or(0.0)
}
