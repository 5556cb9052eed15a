//! Results pushed: lookups held with `waitMs`, and event streams, answered
//! as real workers write the results. A held call is answered within a
//! second of its result being written, and a crowd of held calls costs a
//! number of MySQL reads set by the look-up interval, not by the crowd
//! (invariants H1 and H2 of `api::held`).

use std::time::{Duration, Instant};

use api::held::{CHUNK, LOOKUP_EVERY};
use chrono::{DateTime, TimeDelta, Utc};
use common::domain::CouponId;
use futures::future::join_all;
use rstest::rstest;
use serde_json::Value;
use testkit::{scrape_at, spawn_app_on, spawn_app_with, wait_until, Accepted, Backend, TestApp};
use uuid::Uuid;

const DRAIN: Duration = Duration::from_secs(90);
/// Invariant H2's promise to a caller: answered within a second of the write.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);
/// What measuring adds: the write's transaction commits after its
/// `processed_at`, and the answer crosses HTTP to the test's clock.
const MARGIN: Duration = Duration::from_millis(250);

/// The answer to a held lookup, and when it came.
struct Answer {
    status: u16,
    body: Value,
    at: DateTime<Utc>,
    took: Duration,
}

async fn held_lookup(app: &TestApp, id: Uuid, wait_ms: u64) -> Answer {
    let start = Instant::now();
    let res = app
        .get(&format!(
            "/api/coupons/issue-requests/{id}?waitMs={wait_ms}"
        ))
        .await;
    let status = res.status().as_u16();
    let body = res.json().await.unwrap();
    Answer {
        status,
        body,
        at: Utc::now(),
        took: start.elapsed(),
    }
}

/// The stored result of `id` as the lookup's `200` shows it, and when it
/// was written.
async fn stored(app: &TestApp, id: Uuid) -> Option<(Value, DateTime<Utc>)> {
    let row = common::db::find_result(&app.db.pool, id).await.unwrap()?;
    let at = row.processed_at;
    Some((serde_json::to_value(row).unwrap(), at))
}

fn millis(d: TimeDelta) -> i64 {
    d.num_milliseconds()
}

async fn lookups(app: &TestApp) -> f64 {
    scrape_at(&app.address, "coupon_result_lookups_total")
        .await
        .unwrap_or(0.0)
}

#[rstest]
#[case::redis(Backend::Redis)]
#[case::kafka(Backend::Kafka)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_call_is_answered_within_a_second_of_its_result_being_written(
    #[case] backend: Backend,
) {
    let app = spawn_app_on(backend).await;
    let coupon = app.create_coupon(5).await;
    let users: Vec<i64> = (1..=10).collect();
    let accepted = app.fire(coupon, &users, 10).await;
    assert_eq!(accepted.len(), 10);

    // Every call is held before the worker starts (a Kafka worker takes a
    // few seconds to join its group: the wait leaves room for that).
    let holds = join_all(
        accepted
            .iter()
            .map(|a| held_lookup(&app, a.request_id, 20_000)),
    );
    let worker = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        app.spawn_worker()
    };
    let (answers, _worker) = tokio::join!(holds, worker);

    let mut late = Vec::new();
    for (a, answer) in accepted.iter().zip(&answers) {
        assert_eq!(
            answer.status, 200,
            "held for {:?}: {}",
            answer.took, answer.body
        );
        let (row, written) = stored(&app, a.request_id).await.expect("a result");
        assert_eq!(answer.body, row, "the answer is the stored result");
        late.push(millis(answer.at - written));
    }
    late.sort();
    eprintln!(
        "{backend:?}: held calls answered {late:?} ms after their result was written (median {} ms)",
        late[late.len() / 2]
    );
    let worst = *late.last().unwrap();
    assert!(
        worst <= (ANSWER_WITHIN + MARGIN).as_millis() as i64,
        "a held call was answered {worst} ms after its result was written"
    );
    app.audit(coupon, 5, &accepted).await;
}

/// 1,000 clients, half on each of two apis, each holding the lookup of its
/// request for 4 s; a worker with small batches starts 3.5 s in, so some
/// calls are answered with their result and the rest wait their 4 s (in
/// Kafka mode the worker is still joining its group then: all wait).
#[rstest]
#[case::redis(Backend::Redis)]
#[case::kafka(Backend::Kafka)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_held_calls_on_two_apis_cost_a_few_dozen_mysql_reads(#[case] backend: Backend) {
    const CLIENTS: i64 = 1_000;
    const WAIT: Duration = Duration::from_secs(4);
    let first = spawn_app_on(backend).await;
    let second = spawn_app_with(first.db.clone(), first.common.clone()).await;
    let coupon = first.create_coupon(100).await;
    let half: Vec<i64> = (1..=CLIENTS / 2).collect();
    let other_half: Vec<i64> = (CLIENTS / 2 + 1..=CLIENTS).collect();
    let on_first = first.fire(coupon, &half, 100).await;
    let on_second = second.fire(coupon, &other_half, 100).await;
    assert_eq!(on_first.len() + on_second.len(), CLIENTS as usize);
    let held: Vec<(&TestApp, &Accepted)> = on_first
        .iter()
        .map(|a| (&first, a))
        .chain(on_second.iter().map(|a| (&second, a)))
        .collect();

    // Both apis run in this process and share its metrics recorder: one
    // scrape counts the look-ups of both.
    let before = lookups(&first).await;
    let start = Instant::now();
    let holds = join_all(
        held.iter()
            .map(|(app, a)| held_lookup(app, a.request_id, WAIT.as_millis() as u64)),
    );
    let worker = async {
        tokio::time::sleep(WAIT * 7 / 8).await;
        first.spawn_worker_with(&[("BATCH_SIZE", "5")])
    };
    let (answers, _worker) = tokio::join!(holds, worker);
    let held_for = start.elapsed();
    // A round under way when the last call ended is counted when it ends.
    tokio::time::sleep(LOOKUP_EVERY * 2).await;
    let window = start.elapsed();
    let reads = lookups(&first).await - before;

    let mut found = 0;
    for ((_, a), answer) in held.iter().zip(&answers) {
        let row = stored(&first, a.request_id).await;
        match answer.status {
            200 => {
                let (row, written) = row.expect("a 200 has a stored result");
                assert_eq!(answer.body, row);
                let after_write = answer.at - written;
                assert!(
                    after_write <= TimeDelta::from_std(ANSWER_WITHIN + MARGIN).unwrap(),
                    "{} was answered {} ms after its result was written",
                    a.request_id,
                    millis(after_write)
                );
                found += 1;
            }
            202 => {
                assert_eq!(answer.body["status"], "PENDING", "{}", answer.body);
                assert!(
                    answer.took >= WAIT,
                    "a 202 before the wait ran out: {:?}",
                    answer.took
                );
                // Written too late for this call to be told (invariant H2).
                if let Some((_, written)) = row {
                    let before_answer = answer.at - written;
                    assert!(
                        before_answer <= TimeDelta::from_std(ANSWER_WITHIN + MARGIN).unwrap(),
                        "{} had its result {} ms before its 202",
                        a.request_id,
                        millis(before_answer)
                    );
                }
            }
            other => panic!("held lookup answered {other}: {}", answer.body),
        }
        // Opening 1,000 connections at once delays some calls' start.
        assert!(
            answer.took < WAIT + 2 * ANSWER_WITHIN,
            "a held call took {:?}",
            answer.took
        );
    }

    // Invariant H1: per api at most one round per interval, plus the first,
    // each one query per CHUNK ids.
    let chunks = (CLIENTS as usize / 2).div_ceil(CHUNK) as f64;
    let rounds = (window.as_secs_f64() / LOOKUP_EVERY.as_secs_f64()).ceil() + 1.0;
    let bound = 2.0 * rounds * chunks;
    eprintln!(
        "{backend:?}: {CLIENTS} calls held {held_for:?} on 2 apis: {found} answered with their \
         result, {} with 202; {reads} MySQL reads (bound {bound})",
        CLIENTS as usize - found
    );
    assert!(reads >= 1.0, "the held calls were looked up");
    assert!(
        reads <= bound && reads <= 300.0,
        "{reads} MySQL reads for {CLIENTS} held calls"
    );

    // Every hold was dropped: no id is held any more.
    wait_until("no held ids", Duration::from_secs(2), || async {
        scrape_at(&first.address, "coupon_held_requests").await == Some(0.0)
    })
    .await;
    let accepted: Vec<Accepted> = on_first.into_iter().chain(on_second).collect();
    first.wait_for_requests(coupon, &accepted, DRAIN).await;
    first.audit(coupon, 100, &accepted).await;
}

#[rstest]
#[case::redis(Backend::Redis)]
#[case::kafka(Backend::Kafka)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_stream_tells_where_the_request_stands_then_its_result_and_ends(
    #[case] backend: Backend,
) {
    const AHEAD: u64 = 1_000;
    let app = spawn_app_on(backend).await;
    let coupon: CouponId = app.create_coupon(3).await;
    let users: Vec<i64> = (1..=AHEAD as i64).collect();
    let mut accepted = app.fire(coupon, &users, 50).await;
    accepted.extend(app.fire(coupon, &[AHEAD as i64 + 1], 1).await);
    let last = accepted.last().unwrap().request_id;

    let mut stream = app.event_stream(last).await;
    let first = stream.next().await.expect("a first event");
    assert_eq!(first.name, "pending", "{first:?}");
    assert_eq!(first.data["requestId"], last.to_string());
    assert_eq!(first.data["ahead"], AHEAD, "{}", first.data);

    // Small batches: the queue takes seconds to move past the requests
    // ahead, and the stream reports its steps (a Kafka batch costs more).
    let batch = if backend == Backend::Kafka { "3" } else { "1" };
    let _worker = app.spawn_worker_with(&[("BATCH_SIZE", batch)]);
    let mut aheads = vec![AHEAD];
    let result = loop {
        let event = stream.next().await.expect("the result before the end");
        match event.name.as_str() {
            "pending" => {
                let ahead = event.data["ahead"].as_u64().expect("ahead is known");
                assert!(
                    ahead <= *aheads.last().unwrap(),
                    "ahead rose: {aheads:?} then {ahead}"
                );
                aheads.push(ahead);
            }
            "result" => break event.data,
            other => panic!("unexpected event {other}: {}", event.data),
        }
    };
    eprintln!("{backend:?}: the stream said ahead {aheads:?}, then the result");
    assert!(
        aheads.len() >= 2,
        "the stream told the queue moving: {aheads:?}"
    );
    let (row, _) = stored(&app, last).await.expect("a stored result");
    assert_eq!(result, row, "the result event is the stored result");
    assert_eq!(
        stream.next().await,
        None,
        "the stream ends after the result"
    );

    // A request that has its result: that is the only event.
    let done = accepted[0].request_id;
    let (row, _) = stored(&app, done).await.expect("processed before the last");
    let events = app.event_stream(done).await.rest().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].name.as_str(), &events[0].data), ("result", &row));

    app.wait_for_requests(coupon, &accepted, DRAIN).await;
    app.audit(coupon, 3, &accepted).await;
}
