//! The OpenAPI document, the docs page and the dashboard, against real
//! MariaDB and Redis.

use std::collections::BTreeSet;
use std::time::Duration;

use api::{ApiConfig, Application};
use common::config::CommonConfig;
use common::testing::{key_prefix, redis_url, TestDb};
use reqwest::StatusCode;
use serde_json::Value;

const TOKEN: &str = "test-admin-token";

struct App {
    address: String,
    db: TestDb,
    client: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

async fn spawn_app() -> App {
    let db = TestDb::new().await;
    let common = CommonConfig {
        database_url: db.url.clone(),
        redis_url: redis_url(),
        redis_key_prefix: key_prefix(),
        ..CommonConfig::default()
    };
    let app = Application::build(ApiConfig::for_tests(common, TOKEN))
        .await
        .unwrap();
    let (addr, stop) = app.spawn();
    App {
        address: format!("http://{addr}"),
        db,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        _stop: stop.drop_guard(),
    }
}

impl App {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap()
    }

    async fn text(&self, path: &str) -> String {
        let res = self.get(path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        res.text().await.unwrap()
    }

    async fn json(&self, path: &str) -> Value {
        serde_json::from_str(&self.text(path).await).unwrap()
    }
}

/// Every `src="..."` and `href="..."` of an HTML page.
fn links(html: &str) -> Vec<String> {
    ["src=\"", "href=\""]
        .iter()
        .flat_map(|attr| html.split(attr).skip(1))
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_with_its_error_shape() {
    let app = spawn_app().await;
    let doc = app.json("/api-docs/openapi.json").await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            routes.insert(format!("{} {path}", method.to_uppercase()));
            let responses = op["responses"].as_object().unwrap();
            for (status, answer) in responses {
                if status.starts_with('4') || status == "503" && path.starts_with("/api") {
                    let schema = &answer["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    let expected: BTreeSet<String> = [
        "POST /api/coupons/{couponId}/issue",
        "GET /api/coupons/issue-requests/{requestId}",
        "GET /api/coupons/{couponId}",
        "GET /api/coupons/{couponId}/queue-size",
        "POST /api/admin/coupons",
        "GET /api/dashboard",
        "GET /dashboard",
        "GET /dashboard/dashboard.js",
        "GET /dashboard/dashboard.css",
        "GET /health",
        "GET /ready",
        "GET /metrics",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(routes, expected);
    let admin = &doc["paths"]["/api/admin/coupons"]["post"];
    assert_eq!(admin["security"][0]["adminToken"], serde_json::json!([]));
    assert_eq!(
        doc["components"]["securitySchemes"]["adminToken"]["scheme"],
        "bearer"
    );
    // The document in the binary is the one served.
    let built = serde_json::to_value(api::openapi::document()).unwrap();
    assert_eq!(built["paths"], doc["paths"]);
}

#[tokio::test]
async fn the_docs_page_is_served_with_its_own_assets() {
    let app = spawn_app().await;
    let html = app.text("/docs").await;
    assert!(html.contains("swagger-ui"), "{html}");
    let assets = links(&html);
    assert!(assets.len() >= 3, "{assets:?}");
    for asset in &assets {
        assert!(!asset.contains("//"), "outside asset {asset}");
        let path = format!("/docs/{}", asset.trim_start_matches("./"));
        assert!(!app.text(&path).await.is_empty(), "{path}");
    }
    let init = app.text("/docs/swagger-initializer.js").await;
    assert!(init.contains("/api-docs/openapi.json"), "{init}");
    let compact = init.replace(' ', "");
    assert!(compact.contains("\"validatorUrl\":\"none\""), "{init}");
    assert!(
        !init.contains("http://") && !init.contains("https://"),
        "{init}"
    );
    let missing = app.get("/docs/no-such-file.js").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NOT_FOUND");
}

#[tokio::test]
async fn the_dashboard_page_loads_nothing_from_outside() {
    let app = spawn_app().await;
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/dashboard.js", "text/javascript"),
        ("/dashboard/dashboard.css", "text/css"),
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let header = |name: &str| res.headers()[name].to_str().unwrap().to_string();
        assert!(header("content-type").starts_with(kind), "{path}");
        assert_eq!(
            header("content-security-policy"),
            "default-src 'self'; img-src 'self' data:"
        );
        let body = res.text().await.unwrap();
        // The SVG namespace is a name, not a fetch.
        let without_ns = body.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !without_ns.contains("http://") && !without_ns.contains("https://"),
            "{path}"
        );
        for link in links(&body) {
            let local = link.starts_with('/') && !link.starts_with("//");
            assert!(local || link.starts_with("data:"), "{path}: {link}");
        }
    }
}

#[tokio::test]
async fn the_dashboard_shows_coupon_figures_and_live_workers_but_no_user_ids() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(format!("{}/api/admin/coupons", app.address))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "name": "flash sale", "quantity": 10 }))
        .send()
        .await
        .unwrap();
    let coupon = res.json::<Value>().await.unwrap()["couponId"]
        .as_i64()
        .unwrap();
    let user = 987_654_321_001_i64;
    for u in user..user + 3 {
        let res = app
            .client
            .post(format!(
                "{}/api/coupons/{coupon}/issue?userId={u}",
                app.address
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }
    // One request processed (as a worker would), one worker alive, one long gone.
    let pool = &app.db.pool;
    let now = chrono::Utc::now().naive_utc();
    sqlx::query("UPDATE coupon SET stock = stock - 1 WHERE coupon_id = ?")
        .bind(coupon)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO user_coupon (user_id, coupon_id, status, request_id, issued_at) \
         VALUES (?, ?, 'ISSUED', UUID(), ?)",
    )
    .bind(user)
    .bind(coupon)
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO coupon_issue_result (request_id, coupon_id, user_id, status, \
         queue_position, requested_at, processed_at) VALUES (UUID(), ?, ?, 'SUCCESS', '1-0', ?, ?)",
    )
    .bind(coupon)
    .bind(user)
    .bind(now)
    .bind(now)
    .execute(pool)
    .await
    .unwrap();
    for (id, age) in [("worker-alive", 1), ("worker-dead", 600)] {
        sqlx::query(
            "INSERT INTO worker_heartbeat (worker_id, queue_type, host, pid, started_at, last_seen_at) \
             VALUES (?, 'redis', 'test-host', 4242, ?, ?)",
        )
        .bind(id)
        .bind(now - chrono::TimeDelta::hours(1))
        .bind(now - chrono::TimeDelta::seconds(age))
        .execute(pool)
        .await
        .unwrap();
    }

    let body = app.text("/api/dashboard").await;
    assert!(
        !body.contains(&user.to_string()[..9]),
        "a user id leaks: {body}"
    );
    assert!(!body.to_lowercase().contains("userid") && !body.contains("user_id"));
    let d: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["queueType"], "redis");
    let c = d["coupons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["couponId"] == coupon)
        .expect("the coupon is shown");
    assert_eq!(c["name"], "flash sale");
    assert_eq!(c["totalQuantity"], 10);
    assert_eq!(c["remainingStock"], 9);
    assert_eq!(c["issuedCount"], 1);
    assert_eq!(c["queueSize"], 3);
    let sum = |k: &str| {
        c[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(sum("accepted"), 3);
    assert_eq!(sum("processed"), 1);
    assert_eq!(
        c["accepted"].as_array().unwrap().len(),
        d["seriesSeconds"].as_u64().unwrap() as usize
    );
    assert!(c["acceptedPerSecond"].as_f64().unwrap() >= 0.0);
    let workers: Vec<&str> = d["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["workerId"].as_str().unwrap())
        .collect();
    assert_eq!(workers, ["worker-alive"]);
}

#[tokio::test]
async fn unknown_and_malformed_ids_still_get_json_errors() {
    let app = spawn_app().await;
    for (path, want, code) in [
        (
            "/api/coupons/issue-requests/not-a-uuid",
            400,
            "INVALID_REQUEST_ID",
        ),
        ("/api/coupons/0", 400, "INVALID_COUPON_ID"),
        ("/api/coupons/424242", 404, "NOT_FOUND"),
        ("/api/coupons/424242/queue-size", 404, "NOT_FOUND"),
        ("/dashboard/no-such.js", 404, "NOT_FOUND"),
        ("/api/dashboard/42", 404, "NOT_FOUND"),
    ] {
        let res = app.get(path).await;
        assert_eq!(res.status().as_u16(), want, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{path}");
    }
    let pending = app
        .json_status("/api/coupons/issue-requests/0190a0a0-0000-7000-8000-000000000000")
        .await;
    assert_eq!(pending, (202, "PENDING".to_string()));
}

impl App {
    async fn json_status(&self, path: &str) -> (u16, String) {
        let res = self.get(path).await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        (
            status,
            body["status"].as_str().unwrap_or_default().to_string(),
        )
    }
}

#[tokio::test]
async fn coupon_creation_takes_integral_floats_and_refuses_unstorable_windows() {
    let app = spawn_app().await;
    let create = |body: Value| {
        app.client
            .post(format!("{}/api/admin/coupons", app.address))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
    };
    let res = create(serde_json::json!({ "name": "x", "quantity": 5.0 }))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.json::<Value>().await.unwrap()["totalQuantity"], 5);
    for (body, want) in [
        (serde_json::json!({ "name": "x", "quantity": 5.5 }), 422),
        (serde_json::json!({ "name": "x", "quantity": 1e30 }), 422),
        (
            serde_json::json!({ "name": "x", "quantity": 1, "issueStartsAt": "9999-12-31T23:59:59-01:00" }),
            400,
        ),
        (
            serde_json::json!({ "name": "x", "quantity": 1, "issueEndsAt": "0999-01-01T00:00:00Z" }),
            400,
        ),
    ] {
        let res = create(body.clone()).await.unwrap();
        assert_eq!(res.status().as_u16(), want, "{body}");
    }
}
