//! The api against real MariaDB and Redis: input validation, error shape,
//! admin auth, lookups, and a Redis that is cut off.

use std::time::Duration;

use crate::{spawn_app, TOKEN};
use api::Application;
use common::config::CommonConfig;
use common::domain::{CouponId, QueueType};
use common::queue::redis::RedisKeys;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use testkit::{common_config, key_prefix, redis_url, Accepted, CuttableProxy, TestDb};

/// An api whose queue is the Redis at `redis` (which may be cut off).
async fn spawn_app_with_redis(redis: &str) -> testkit::TestApp {
    let (db, mut common) = testkit::test_config(QueueType::Redis).await;
    common.redis_url = redis.into();
    testkit::spawn_app_with(db, common).await
}

/// Asserts the JSON error shape and returns its code.
async fn error_code(res: reqwest::Response) -> String {
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    body["error"]["code"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn malformed_issue_requests_get_a_json_4xx_and_enqueue_nothing() {
    let app = spawn_app().await;
    let coupon = app.create_coupon(10).await.get();
    let long = "9".repeat(5000);
    let very_long_path = format!("/api/coupons/{}/issue?userId=1", "1".repeat(60_000));
    let cases: Vec<(Method, String, u16)> = vec![
        (
            Method::POST,
            "/api/coupons/abc/issue?userId=1".to_string(),
            400,
        ),
        (
            Method::POST,
            "/api/coupons/0/issue?userId=1".to_string(),
            400,
        ),
        (
            Method::POST,
            "/api/coupons/-1/issue?userId=1".to_string(),
            400,
        ),
        (
            Method::POST,
            "/api/coupons/99999999999999999999/issue?userId=1".to_string(),
            400,
        ),
        (
            Method::POST,
            "/api/coupons/1.5/issue?userId=1".to_string(),
            400,
        ),
        (
            Method::POST,
            "/api/coupons/%E2%91%A0/issue?userId=1".to_string(),
            400,
        ),
        (
            Method::POST,
            format!("/api/coupons/{long}/issue?userId=1"),
            400,
        ),
        (Method::POST, format!("/api/coupons/{coupon}/issue"), 400),
        (
            Method::POST,
            format!("/api/coupons/{coupon}/issue?userId="),
            400,
        ),
        (
            Method::POST,
            format!("/api/coupons/{coupon}/issue?userId=x"),
            400,
        ),
        (
            Method::POST,
            format!("/api/coupons/{coupon}/issue?userId=0"),
            400,
        ),
        (
            Method::POST,
            format!("/api/coupons/{coupon}/issue?userId=-5"),
            400,
        ),
        (
            Method::POST,
            format!("/api/coupons/{coupon}/issue?userId=9223372036854775808"),
            400,
        ),
        (
            Method::POST,
            format!("/api/coupons/{coupon}/issue?userId=%FF"),
            400,
        ),
        (
            Method::POST,
            format!("/api/coupons/{coupon}/issue?userId=1&userId=2"),
            400,
        ),
        (
            Method::POST,
            "/api/coupons/424242/issue?userId=1".to_string(),
            404,
        ),
        (
            Method::GET,
            format!("/api/coupons/{coupon}/issue?userId=1"),
            405,
        ),
        (
            Method::PUT,
            format!("/api/coupons/{coupon}/issue?userId=1"),
            405,
        ),
        (Method::DELETE, format!("/api/coupons/{coupon}"), 405),
        (Method::POST, very_long_path, 400),
        (
            Method::POST,
            format!("/api/coupons/{}", "a/".repeat(2000)),
            404,
        ),
        (
            Method::POST,
            format!("/api/coupons/{coupon}/issue?userId=%D9%A1%D9%A2"),
            400,
        ),
        (
            Method::POST,
            format!("/api/coupons/{coupon}/issue?userId=1%00"),
            400,
        ),
        (
            Method::POST,
            format!("/api/coupons/{coupon}/issue?userId=%201"),
            400,
        ),
        (
            Method::POST,
            format!("/api/coupons/{coupon}/issue?userId=1e3"),
            400,
        ),
        (
            Method::POST,
            format!("/api/coupons/{coupon}/issue?userId=0x10"),
            400,
        ),
        (Method::GET, "/api/admin/coupons".into(), 405),
        (Method::PATCH, "/api/admin/coupons".into(), 405),
        (Method::POST, "/api/nowhere".into(), 404),
        (Method::GET, "/".into(), 404),
        (
            Method::GET,
            "/api/coupons/issue-requests/not-a-uuid".into(),
            400,
        ),
        (Method::GET, "/api/coupons/0".into(), 400),
        (Method::GET, "/api/coupons/555555".into(), 404),
        (Method::GET, "/api/coupons/555555/queue-size".into(), 404),
    ];
    for (method, path, want) in cases {
        let res = app
            .client
            .request(method.clone(), format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let short: String = path.chars().take(60).collect();
        assert_eq!(status, want, "{method} {short}");
        error_code(res).await;
    }
    // Nothing was queued, and no key was made for the made-up coupons: a
    // request accepted now is the only entry of the coupon's queue, and its
    // keys (its stream, its repeat gate, the pending set) are the only ones
    // under this test's prefix.
    let res = app.issue(coupon, "7").await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let accepted: Accepted = res.json().await.unwrap();
    let id = CouponId::try_from(coupon).unwrap();
    let queued: Vec<_> = app.queued_events(id).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].event_id, accepted.request_id);
    let keys = RedisKeys::new(app.common.redis_key_prefix.as_str());
    let mut found = app.redis_keys().await;
    found.sort();
    let mut expected = vec![keys.stream(id), keys.gate(id), keys.pending()];
    expected.sort();
    assert_eq!(found, expected);
}

#[tokio::test]
async fn an_accepted_request_reads_as_pending_until_processed() {
    let app = spawn_app().await;
    let coupon = app.create_coupon(1).await.get();
    let res = app
        .client
        .post(format!(
            "{}/api/coupons/{coupon}/issue?userId=42",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "PENDING");
    assert_eq!(body["couponId"], coupon);
    assert_eq!(body["userId"], 42);
    let id = body["requestId"].as_str().unwrap();
    let res = app.get(&format!("/api/coupons/issue-requests/{id}")).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "PENDING");
    let size = app
        .get_json(&format!("/api/coupons/{coupon}/queue-size"))
        .await;
    assert_eq!(size["queueSize"], 1);
    let state = app.get_json(&format!("/api/coupons/{coupon}")).await;
    assert_eq!(state["totalQuantity"], 1);
    assert_eq!(state["remainingStock"], 1);
    assert_eq!(state["issuedCount"], 0);
}

#[tokio::test]
async fn admin_endpoints_refuse_without_the_token_and_validate_bodies() {
    let app = spawn_app().await;
    let url = format!("{}/api/admin/coupons", app.address);
    let body = serde_json::json!({ "name": "x", "quantity": 5 });
    for auth in [
        None,
        Some("Bearer wrong-token-000"),
        Some("Basic dGVzdA=="),
        Some("Bearer "),
    ] {
        let mut req = app.client.post(&url).json(&body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(error_code(res).await, "UNAUTHORIZED");
    }
    let bad_bodies: Vec<(&str, &str, u16)> = vec![
        ("application/json", "", 400),
        ("application/json", "{", 400),
        ("application/json", "[]", 422),
        ("application/json", r#"{"name":"x"}"#, 422),
        ("application/json", r#"{"name":"x","quantity":-1}"#, 400),
        ("application/json", r#"{"name":"x","quantity":1e30}"#, 422),
        ("application/json", r#"{"name":"","quantity":1}"#, 400),
        (
            "application/json",
            r#"{"name":"x","quantity":1,"extra":true}"#,
            422,
        ),
        (
            "application/json",
            r#"{"name":"x","quantity":1,"issueStartsAt":"tomorrow"}"#,
            422,
        ),
        (
            "application/json",
            r#"{"name":"x","quantity":1,"issueStartsAt":"2030-01-02T00:00:00Z","issueEndsAt":"2030-01-01T00:00:00Z"}"#,
            400,
        ),
        ("text/plain", r#"{"name":"x","quantity":1}"#, 415),
    ];
    for (ct, body, want) in bad_bodies {
        let res = app
            .client
            .post(&url)
            .bearer_auth(TOKEN)
            .header("content-type", ct)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), want, "{ct} {body}");
        error_code(res).await;
    }
    let huge = format!(r#"{{"name":"{}","quantity":1}}"#, "x".repeat(100_000));
    let res = app
        .client
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    error_code(res).await;

    let res = app
        .client
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({
            "name": "  noon sale ✓ ", "quantity": 100,
            "issueStartsAt": "2026-01-01T00:00:00Z", "issueEndsAt": "2036-01-01T00:00:00+09:00"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["name"], "noon sale ✓");
    assert_eq!(created["remainingStock"], 100);
    assert_eq!(created["issueEndsAt"], "2035-12-31T15:00:00Z");
}

/// The test Redis's host and port.
fn redis_address() -> (String, u16) {
    match redis::Client::open(redis_url())
        .unwrap()
        .get_connection_info()
        .addr()
    {
        redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
        other => panic!("the test Redis is not on TCP: {other:?}"),
    }
}

/// The api's Redis is cut off (every connection dropped, new ones refused):
/// issue requests get `503 QUEUE_UNAVAILABLE` and `/ready` says the queue
/// is down. Once Redis is reachable again the api accepts without a
/// restart, and its queue holds exactly what it accepted since: nothing it
/// refused was kept to be sent later.
#[tokio::test]
async fn a_redis_cut_off_gives_503_and_nothing_it_refused_is_queued_once_it_is_back() {
    let (host, port) = redis_address();
    let proxy = CuttableProxy::start((&host, port)).await;
    proxy.cut();
    let app = spawn_app_with_redis(&format!("redis://127.0.0.1:{}", proxy.port)).await;
    let coupon = app.create_coupon(10).await;
    for user in 1..=5 {
        let res = app.issue(coupon.get(), &user.to_string()).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_code(res).await, "QUEUE_UNAVAILABLE");
    }
    let ready = app.get("/ready").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json::<Value>().await.unwrap()["queue"], "DOWN");

    proxy.restore();
    // Probes from users 101, 102, ... until one is accepted.
    let started = std::time::Instant::now();
    let mut accepted: Vec<Accepted> = Vec::new();
    for user in 101.. {
        let res = app.issue(coupon.get(), &user.to_string()).await;
        if res.status() == StatusCode::ACCEPTED {
            accepted.push(res.json().await.unwrap());
            break;
        }
        assert_eq!(error_code(res).await, "QUEUE_UNAVAILABLE");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the api did not accept within 30 s of Redis coming back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    accepted.extend(app.fire(coupon, &[201, 202, 203], 3).await);
    assert_eq!(app.get("/ready").await.status(), StatusCode::OK);
    let queued: Vec<_> = app.queued_events(coupon).await;
    let users: Vec<i64> = queued.iter().map(|e| e.user_id.get()).collect();
    assert!(
        users.iter().all(|u| *u > 100),
        "refused users were queued: {users:?}"
    );
    let ids: Vec<_> = queued.iter().map(|e| e.event_id).collect();
    let mut expected: Vec<_> = accepted.iter().map(|a| a.request_id).collect();
    expected.sort();
    let mut found = ids.clone();
    found.sort();
    assert_eq!(
        found, expected,
        "the queue holds exactly the accepted requests"
    );
}

#[tokio::test]
async fn health_ready_and_metrics_answer() {
    let app = spawn_app().await;
    for (path, want) in [("/health", 200), ("/ready", 200), ("/metrics", 200)] {
        let res = app.get(path).await;
        assert_eq!(res.status().as_u16(), want, "{path}");
    }
}

#[tokio::test]
async fn the_api_refuses_to_start_on_a_schema_newer_than_it_knows() {
    let db = TestDb::new().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations \
         (version, description, installed_on, success, checksum, execution_time) \
         VALUES (99991231000000, 'from a newer build', NOW(), 1, X'00', 0)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let common = CommonConfig {
        database_url: db.url.clone(),
        redis_url: redis_url(),
        redis_key_prefix: key_prefix(),
        ..common_config()
    };
    let err = Application::build(testkit::api_config(common, TOKEN))
        .await
        .err()
        .expect("start-up is refused");
    assert!(format!("{err:#}").contains("99991231000000"), "{err:#}");
}
