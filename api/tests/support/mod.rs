//! A test api on a free port with its own database and Redis key prefix,
//! shared by the docs and dashboard tests.

#![allow(dead_code)]

use std::time::Duration;

use api::{ApiConfig, Application};
use common::config::CommonConfig;
use common::testing::{key_prefix, redis_url, TestDb};
use reqwest::StatusCode;
use serde_json::Value;

pub const TOKEN: &str = "test-admin-token";

pub struct App {
    pub address: String,
    pub db: TestDb,
    pub client: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

pub async fn spawn_app() -> App {
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
