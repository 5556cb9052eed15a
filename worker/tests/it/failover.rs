//! Repeated fail-over: one deployment (api, database, queue namespace), two
//! workers, several sales in a row. In each sale the worker draining the
//! coupon is SIGKILLed with entries in hand and a new one joins; another
//! worker must take the entries over, and every sale must drain with every
//! invariant that `common::audit` checks. Prints the time from the kill to
//! the first result written after it, and to the full drain.
//!
//! `FAILOVER_ROUNDS` sets the number of sales (default 2 per queue mode);
//! `scripts/failover-test.sh --rounds N` runs more and prints a summary.

use std::time::{Duration, Instant};

use common::domain::IssueStatus;
use common::domain::QueueType;
use rstest::rstest;
use testkit::{spawn_app, wait_until, TestApp, WorkerProcess};

/// No sale may take longer than this to drain after its worker was killed.
const DRAIN: Duration = Duration::from_secs(120);
const STOCK: i64 = 2_000;
const REQUESTS: i64 = 10_000;
/// Entries queued while the workers are held back, before the kill.
const BACKLOG: u64 = 1_000;
/// The longest the workers are held back: under the test's lease (2 s) and
/// the Kafka session timeout, so that nobody's lease lapses meanwhile.
const HOLD: Duration = Duration::from_millis(1_500);

/// What one round measured.
#[derive(Debug)]
struct Round {
    /// Results already written when the worker died.
    results_at_kill: usize,
    /// Entries it had taken on and not acknowledged.
    left: u64,
    /// Kill to the first result written after it.
    first_result: Duration,
    /// Kill to the last result of the sale.
    drained: Duration,
}

fn start_worker(app: &TestApp) -> WorkerProcess {
    app.start_worker(&[("BATCH_SIZE", "100")])
}

/// One sale: fire `REQUESTS` for a new `STOCK` coupon; once a tenth of the
/// stock has results, hold the workers back until `BACKLOG` entries wait,
/// then kill the worker draining them, start a new worker in its slot, wait
/// until another takes over, then for the drain; audit.
async fn sale_with_a_killed_worker(app: &TestApp, workers: &mut [WorkerProcess]) -> Round {
    if app.common.queue_type == QueueType::Kafka {
        // The last round's new member has joined: no rebalance mid-sale.
        app.wait_for_partitions(workers, DRAIN).await;
    }
    let coupon = app.create_coupon(STOCK).await;
    let users: Vec<i64> = (1..=REQUESTS).collect();
    let killer = async {
        wait_until("the drain to be under way", DRAIN, || async {
            app.result_count(coupon).await >= (STOCK / 10) as usize
        })
        .await;
        // A worker that keeps up with the api holds few entries at any
        // moment, and none once the sell-out stops the enqueues: a backlog
        // built while the workers are held back gives the kill its moment.
        app.hold_workers_until_backlog(coupon, workers, BACKLOG, HOLD)
            .await;
        let dead = app.kill_worker_draining(&[coupon], workers, DRAIN).await;
        let killed = Instant::now();
        let results_at_kill = app.result_count(coupon).await;
        workers[dead.index] = start_worker(app);
        app.wait_for_takeover(&dead, workers, DRAIN).await;
        (killed, results_at_kill, dead.left)
    };
    let (accepted, (killed, results_at_kill, left)) =
        tokio::join!(app.fire(coupon, &users, 128), killer);

    let mut first_result = None;
    loop {
        let n = app.result_count(coupon).await;
        if n > results_at_kill && first_result.is_none() {
            first_result = Some(killed.elapsed());
        }
        if n >= accepted.len() {
            break;
        }
        assert!(
            killed.elapsed() < DRAIN,
            "only {n} of {} results {DRAIN:?} after the kill",
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = killed.elapsed();
    let report = app.audit(coupon, STOCK, &accepted).await;
    assert_eq!(report.count(IssueStatus::Success), STOCK as usize);
    assert_eq!(
        report.count(IssueStatus::OutOfStock),
        accepted.len() - STOCK as usize
    );
    assert_eq!(report.remaining_stock, 0);
    Round {
        results_at_kill,
        left,
        first_result: first_result.unwrap_or(drained),
        drained,
    }
}

#[rstest]
#[case::redis(QueueType::Redis)]
#[case::kafka(QueueType::Kafka)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sales_in_a_row_each_survive_a_killed_worker_and_a_new_one(#[case] mode: QueueType) {
    let rounds: usize = std::env::var("FAILOVER_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    let app = spawn_app(mode).await;
    let mut workers = [start_worker(&app), start_worker(&app)];
    let mut measured = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let r = sale_with_a_killed_worker(&app, &mut workers).await;
        eprintln!(
            "failover {mode:?} round {round}/{rounds}: killed at {} results with {} entries in hand; first new result after {:.2} s; drained after {:.2} s",
            r.results_at_kill,
            r.left,
            r.first_result.as_secs_f64(),
            r.drained.as_secs_f64()
        );
        measured.push(r);
    }
    let summary = |pick: fn(&Round) -> Duration| {
        let mut v: Vec<f64> = measured.iter().map(|r| pick(r).as_secs_f64()).collect();
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() - 1])
    };
    let (first_median, first_max) = summary(|r| r.first_result);
    let (drain_median, drain_max) = summary(|r| r.drained);
    eprintln!(
        "failover {mode:?} summary over {rounds} rounds: first new result median {first_median:.2} s, max {first_max:.2} s; full drain median {drain_median:.2} s, max {drain_max:.2} s"
    );
}
