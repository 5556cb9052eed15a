//! A test api on a free port with its own database and Redis key prefix,
//! shared by the api's test binaries.

#![allow(dead_code)]

use std::time::Duration;

use api::{ApiConfig, Application};
use common::config::CommonConfig;
use common::testing::{common_config, key_prefix, redis_url, TestDb};
use reqwest::StatusCode;
use serde_json::Value;

pub const TOKEN: &str = "test-admin-token";

pub struct App {
    pub address: String,
    pub db: TestDb,
    /// This app's Redis key prefix.
    pub prefix: String,
    pub client: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

pub async fn spawn_app() -> App {
    spawn_app_with_redis(&redis_url()).await
}

/// An app whose queue is the Redis at `redis` (which may be unreachable).
pub async fn spawn_app_with_redis(redis: &str) -> App {
    let db = TestDb::new().await;
    let prefix = key_prefix();
    let common = CommonConfig {
        database_url: db.url.clone(),
        redis_url: redis.into(),
        redis_key_prefix: prefix.clone(),
        ..common_config()
    };
    let app = Application::build(ApiConfig::for_tests(common, TOKEN))
        .await
        .unwrap();
    let (addr, stop) = app.spawn();
    App {
        address: format!("http://{addr}"),
        db,
        prefix,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        _stop: stop.drop_guard(),
    }
}

impl App {
    /// `GET path` and its JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn coupon(&self, quantity: i64) -> i64 {
        let res = self
            .client
            .post(format!("{}/api/admin/coupons", self.address))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "name": "c", "quantity": quantity }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json::<Value>().await.unwrap()["couponId"]
            .as_i64()
            .unwrap()
    }

    /// Every Redis key under this app's prefix.
    pub async fn redis_keys(&self) -> Vec<String> {
        let client = redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    pub async fn result_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM coupon_issue_result")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap()
    }

    pub async fn text(&self, path: &str) -> String {
        let res = self.get(path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        res.text().await.unwrap()
    }

    pub async fn json(&self, path: &str) -> Value {
        serde_json::from_str(&self.text(path).await).unwrap()
    }

    /// Status and `status` field of a JSON answer.
    pub async fn json_status(&self, path: &str) -> (u16, String) {
        let res = self.get(path).await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        (
            status,
            body["status"].as_str().unwrap_or_default().to_string(),
        )
    }
}

/// Every `src="..."` and `href="..."` of an HTML page.
pub fn links(html: &str) -> Vec<String> {
    ["src=\"", "href=\""]
        .iter()
        .flat_map(|attr| html.split(attr).skip(1))
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}
