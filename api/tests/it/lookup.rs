//! Lookups that wait (`waitMs`, event streams) without a worker: what a
//! wait that runs out answers, malformed waits, a MySQL that is cut off,
//! and a shutdown. With workers: `worker/tests/it/held.rs`.

use std::str::FromStr;
use std::time::{Duration, Instant};

use common::domain::{CouponId, QueueType};
use reqwest::StatusCode;
use rstest::rstest;
use serde_json::Value;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::ConnectOptions;
use testkit::{spawn_app_on, Accepted, Backend, CuttableProxy, TestApp};
use uuid::Uuid;

use crate::spawn_app;

/// `requests` accepted one after the other from users 1, 2, ...: the n-th
/// has n-1 ahead of it while no worker runs.
async fn accept_in_order(app: &TestApp, coupon: CouponId, requests: i64) -> Vec<Accepted> {
    let users: Vec<i64> = (1..=requests).collect();
    app.fire(coupon, &users, 1).await
}

fn lookup(id: Uuid, wait_ms: &str) -> String {
    format!("/api/coupons/issue-requests/{id}?waitMs={wait_ms}")
}

/// Status and body of `GET path`, and how long the answer took.
async fn timed_get(app: &TestApp, path: &str) -> (StatusCode, Value, Duration) {
    let start = Instant::now();
    let res = app.get(path).await;
    let status = res.status();
    let body = res.json().await.unwrap();
    (status, body, start.elapsed())
}

#[tokio::test]
async fn wait_ms_out_of_range_or_malformed_is_a_400() {
    let app = spawn_app().await;
    let coupon = app.create_coupon(1).await;
    let id = accept_in_order(&app, coupon, 1).await[0].request_id;
    for bad in [
        "30001",
        "-1",
        "abc",
        "",
        "1.5",
        "+5",
        "5s",
        "99999999999999999999",
    ] {
        for accept in ["application/json", "text/event-stream"] {
            let res = app
                .client
                .get(format!("{}{}", app.address, lookup(id, bad)))
                .header("accept", accept)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad:?} {accept}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], "INVALID_WAIT_MS", "{bad:?}: {body}");
        }
    }
    // 0 is no wait: today's answer at once.
    let (status, body, took) = timed_get(&app, &lookup(id, "0")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("PENDING"))
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[rstest]
#[case::redis(Backend::Redis)]
#[case::kafka(Backend::Kafka)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_call_whose_wait_runs_out_answers_pending_with_ahead(#[case] backend: Backend) {
    let app = spawn_app_on(backend).await;
    let coupon = app.create_coupon(10).await;
    let accepted = accept_in_order(&app, coupon, 3).await;
    let wait = Duration::from_millis(1_500);
    let (status, body, took) = timed_get(&app, &lookup(accepted[2].request_id, "1500")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "PENDING");
    assert_eq!(body["requestId"], accepted[2].request_id.to_string());
    assert_eq!(body["ahead"], 2, "{body}");
    assert!(
        took >= wait && took < wait + Duration::from_secs(1),
        "held for {took:?}"
    );

    // An id nobody accepted waits its time too, and has no position.
    let (status, body, took) = timed_get(&app, &lookup(Uuid::now_v7(), "500")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(body["ahead"].is_null(), "{body}");
    assert!(took >= Duration::from_millis(500), "{took:?}");
}

/// The api's database is the test's, reached through `proxy`.
fn through(db_url: &str, proxy: &CuttableProxy) -> String {
    MySqlConnectOptions::from_str(db_url)
        .unwrap()
        .host("127.0.0.1")
        .port(proxy.port)
        .to_url_lossy()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_mysql_is_cut_off_a_held_call_waits_out_its_time_and_answers_pending() {
    let (db, mut common) = testkit::test_config(QueueType::Redis).await;
    let server = MySqlConnectOptions::from_str(&db.url).unwrap();
    let proxy = CuttableProxy::start((server.get_host(), server.get_port())).await;
    common.database_url = through(&db.url, &proxy);
    let app = testkit::spawn_app_with(db, common).await;
    let coupon = app.create_coupon(10).await;
    let accepted = accept_in_order(&app, coupon, 2).await;
    let id = accepted[1].request_id;

    proxy.cut();
    // Without a wait the lookup needs MySQL now: 503.
    let (status, body, _) = timed_get(&app, &format!("/api/coupons/issue-requests/{id}")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // A held call waits its time, then says where the request stands.
    let (status, body, took) = timed_get(&app, &lookup(id, "2000")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "PENDING");
    assert_eq!(body["ahead"], 1, "{body}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "held for {took:?}"
    );

    // Back: a result written now is found by the next look-up round.
    proxy.restore();
    let id = accepted[0].request_id;
    let path = lookup(id, "10000");
    let held = app.get(&path);
    let write = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::query(
            "INSERT INTO coupon_issue_result (request_id, coupon_id, user_id, status, \
             queue_position, requested_at, processed_at) \
             VALUES (?, ?, 1, 'OUT_OF_STOCK', '1-0', UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
        )
        .bind(id.to_string())
        .bind(coupon.get())
        .execute(&app.db.pool)
        .await
        .unwrap();
    };
    let (res, ()) = tokio::join!(held, write);
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "OUT_OF_STOCK", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_calls_and_event_streams_end_at_once_when_the_api_shuts_down() {
    let app = spawn_app().await;
    let coupon = app.create_coupon(10).await;
    let id = accept_in_order(&app, coupon, 1).await[0].request_id;
    let mut stream = app.event_stream(id).await;
    let first = stream.next().await.expect("a first event");
    assert_eq!(first.name, "pending");
    assert_eq!(first.data["ahead"], 0, "{}", first.data);

    let (client, url) = (
        app.client.clone(),
        format!("{}{}", app.address, lookup(id, "20000")),
    );
    let held = tokio::spawn(async move {
        let start = Instant::now();
        let res = client.get(url).send().await.unwrap();
        (res.status(), start.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(app); // starts the api's graceful shutdown

    let (status, took) = held.await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(took < Duration::from_secs(3), "the held call took {took:?}");
    let last = stream.rest().await;
    let names: Vec<&str> = last.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["pending"], "the stream ends with where it stands");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_of_one_id_share_its_entry_and_a_client_that_goes_away_is_waited_for_no_more() {
    let app = spawn_app().await;
    let coupon = app.create_coupon(10).await;
    let id = accept_in_order(&app, coupon, 1).await[0].request_id;
    let held_ids = || async {
        testkit::scrape_at(&app.address, "coupon_held_requests")
            .await
            .unwrap_or(0.0)
    };
    let mut stream = app.event_stream(id).await;
    assert_eq!(stream.next().await.unwrap().name, "pending");
    let (client, url) = (
        app.client.clone(),
        format!("{}{}", app.address, lookup(id, "20000")),
    );
    let call = tokio::spawn(async move { client.get(url).send().await });
    testkit::wait_until(
        "one held id for two callers",
        Duration::from_secs(2),
        || async { held_ids().await == 1.0 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the call is in

    drop(stream);
    call.abort();
    testkit::wait_until("no held id", Duration::from_secs(2), || async {
        held_ids().await == 0.0
    })
    .await;
}
