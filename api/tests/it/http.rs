//! The api against real MariaDB and Redis: input validation, error shape,
//! admin auth, lookups, and a Redis that cannot be reached.

use crate::{spawn_app, TOKEN};
use api::Application;
use common::config::CommonConfig;
use common::domain::QueueType;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use testkit::{common_config, key_prefix, redis_url, TestDb};

/// An api whose queue is the Redis at `redis` (which may be unreachable).
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
    assert!(app.redis_keys().await.is_empty(), "nothing enqueued");
    assert_eq!(app.result_rows().await, 0);
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

#[tokio::test]
async fn an_unreachable_redis_gives_503_and_records_nothing() {
    // Port 1 on loopback: nothing listens there.
    let app = spawn_app_with_redis("redis://127.0.0.1:1").await;
    let coupon = app.create_coupon(10).await.get();
    for user in 1..=5 {
        let res = app
            .client
            .post(format!(
                "{}/api/coupons/{coupon}/issue?userId={user}",
                app.address
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_code(res).await, "QUEUE_UNAVAILABLE");
    }
    let ready = app.get("/ready").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json::<Value>().await.unwrap()["queue"], "DOWN");
    assert_eq!(app.result_rows().await, 0);
    assert!(app.redis_keys().await.is_empty());
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
