//! Waiting positions: `ahead` and `etaMs` in the `202` of an issue request
//! and in every `PENDING` lookup, and the coupon's queue length and rate.

use std::time::{Duration, Instant};

use common::domain::CouponId;
use rstest::rstest;
use serde_json::Value;
use testkit::{spawn_app_on, terminate, wait_until, Backend, TestApp};
use uuid::Uuid;

const DRAIN: Duration = Duration::from_secs(90);

/// Fires one request and returns its `202` body.
async fn issue(app: &TestApp, coupon: CouponId, user: i64) -> Value {
    let res = app.issue(coupon.get(), &user.to_string()).await;
    assert_eq!(res.status(), 202);
    res.json().await.unwrap()
}

/// Looks a request up: `Some(body)` while `PENDING` (`202`), `None` once
/// it has its result (`200`).
async fn pending(app: &TestApp, id: &str) -> Option<Value> {
    let res = app.get(&format!("/api/coupons/issue-requests/{id}")).await;
    match res.status().as_u16() {
        202 => Some(res.json().await.unwrap()),
        200 => None,
        s => panic!("lookup answered {s}"),
    }
}

fn ahead(body: &Value) -> u64 {
    body["ahead"]
        .as_u64()
        .unwrap_or_else(|| panic!("ahead is a count: {body}"))
}

#[rstest]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::RedisCluster)]
#[case::kafka(Backend::Kafka)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn positions_are_exact_while_the_queue_stands_and_fall_as_it_moves(#[case] backend: Backend) {
    let app = spawn_app_on(backend).await;
    let coupon = app.create_coupon(10_000).await;

    // No worker yet: the queue stands still, so the n-th request has n-1
    // ahead of it, and no rate is known.
    let n = 150;
    let mut ids = Vec::new();
    for i in 0..n {
        let body = issue(&app, coupon, 1_000 + i).await;
        assert_eq!(ahead(&body), i as u64, "request {i}: {body}");
        assert!(body["etaMs"].is_null(), "no rate known yet: {body}");
        ids.push(body["requestId"].as_str().unwrap().to_string());
    }
    for (i, id) in ids.iter().enumerate() {
        let body = pending(&app, id).await.expect("not processed: no worker");
        assert_eq!(ahead(&body), i as u64, "lookup of request {i}: {body}");
        assert!(body["etaMs"].is_null(), "{body}");
    }
    let state = app
        .get_json(&format!("/api/coupons/{}", coupon.get()))
        .await;
    assert_eq!(state["queueLength"], n, "{state}");
    assert!(state["processingRate"].is_null(), "{state}");

    // A request this api never accepted has no position.
    let unknown = pending(&app, &Uuid::new_v4().to_string()).await.unwrap();
    assert!(unknown["ahead"].is_null() && unknown["etaMs"].is_null());

    // A worker with small batches: the last request's position only falls,
    // until its result is there.
    let mut worker = app.spawn_worker_with(&[("BATCH_SIZE", "5")]);
    let last = ids.last().unwrap();
    let mut seen = vec![n as u64 - 1];
    let start = Instant::now();
    while let Some(body) = pending(&app, last).await {
        let a = ahead(&body);
        assert!(a <= *seen.last().unwrap(), "ahead rose: {seen:?} then {a}");
        seen.push(a);
        assert!(start.elapsed() < DRAIN, "not drained: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.wait_for_results(coupon, n as usize, DRAIN).await;
    let status = terminate(&mut worker, Duration::from_secs(10)).await;
    assert!(status.success(), "worker exit status {status:?}");

    // The drain gave the queue a rate (over the last 10 s): the coupon shows
    // it, and new requests get an ETA that grows with their position.
    let app_ref = &app;
    wait_until("a processing rate", Duration::from_secs(5), || async move {
        let state = app_ref
            .get_json(&format!("/api/coupons/{}", coupon.get()))
            .await;
        state["processingRate"].as_f64().is_some_and(|r| r > 0.0) && state["queueLength"] == 0
    })
    .await;
    let first = issue(&app, coupon, 5_000).await;
    let first_id = first["requestId"].as_str().unwrap().to_string();
    // Kafka: the api reads committed offsets in the background; wait until
    // it has seen the worker's last commit.
    wait_until(
        "the first new request to be next",
        Duration::from_secs(5),
        || {
            let id = first_id.clone();
            async move { pending(app_ref, &id).await.is_some_and(|b| ahead(&b) == 0) }
        },
    )
    .await;
    // The api re-reads the rate every 500 ms, so four requests are compared
    // only when the coupon showed the same rate before and after them; a
    // volley that straddled a new reading is set aside and another is sent.
    let rate = || async move {
        app_ref
            .get_json(&format!("/api/coupons/{}", coupon.get()))
            .await["processingRate"]
            .clone()
    };
    let mut queued = 0;
    let mut compared = false;
    for volley in 0..10 {
        let before = rate().await;
        let mut etas = Vec::new();
        for i in 1..=4 {
            queued += 1;
            let body = issue(&app, coupon, 5_000 + 10 * volley + i).await;
            assert_eq!(ahead(&body), queued, "{body}");
            let eta = body["etaMs"]
                .as_u64()
                .unwrap_or_else(|| panic!("a rate is known: {body}"));
            assert!(eta > 0, "{body}");
            etas.push(eta);
        }
        if rate().await == before {
            assert!(etas.windows(2).all(|w| w[0] < w[1]), "ETA grows: {etas:?}");
            compared = true;
            break;
        }
    }
    assert!(compared, "the rate changed during every volley");
}
