//! One call to the api and its answer: issue, admin calls, lookups.

use common::domain::{CouponId, QueueType};

use crate::app::{TestApp, ADMIN_TOKEN};

impl TestApp {
    pub async fn issue(&self, coupon: i64, user: &str) -> reqwest::Response {
        self.client
            .post(format!(
                "{}/api/coupons/{coupon}/issue?userId={user}",
                self.address
            ))
            .send()
            .await
            .expect("api answers")
    }

    /// `POST /api/coupons/{coupon}/issue?{query}`, to be sent by the caller
    /// (who adds a token or headers).
    pub fn issue_request(&self, coupon: CouponId, query: &str) -> reqwest::RequestBuilder {
        self.client.post(format!(
            "{}/api/coupons/{}/issue?{query}",
            self.address,
            coupon.get()
        ))
    }

    /// `PUT /api/admin/queue` with the admin token.
    pub async fn switch_queue(&self, to: QueueType) -> reqwest::Response {
        self.client
            .put(format!("{}/api/admin/queue", self.address))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "type": to }))
            .send()
            .await
            .expect("api answers")
    }

    /// Creates a coupon through the admin api.
    pub async fn create_coupon(&self, quantity: i64) -> CouponId {
        let res = self
            .client
            .post(format!("{}/api/admin/coupons", self.address))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "name": "race", "quantity": quantity }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let body: serde_json::Value = res.json().await.unwrap();
        CouponId::try_from(body["couponId"].as_i64().unwrap()).unwrap()
    }

    /// `GET path` on the api.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("api answers")
    }

    /// `GET path` on the api, its body as JSON, whatever the status.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path).await.json().await.unwrap()
    }

    /// `GET path`, which must answer `200`, and its body.
    pub async fn text(&self, path: &str) -> String {
        let res = self.get(path).await;
        assert_eq!(res.status(), 200, "{path}");
        res.text().await.unwrap()
    }

    /// `GET path`, which must answer `200`, and its body as JSON.
    pub async fn json(&self, path: &str) -> serde_json::Value {
        serde_json::from_str(&self.text(path).await).unwrap()
    }

    /// Status and `status` field of a JSON answer to `GET path`.
    pub async fn json_status(&self, path: &str) -> (u16, String) {
        let res = self.get(path).await;
        let status = res.status().as_u16();
        let body: serde_json::Value = res.json().await.unwrap();
        (
            status,
            body["status"].as_str().unwrap_or_default().to_string(),
        )
    }

    /// Entries left in the coupon's queue, per the api.
    pub async fn queue_size(&self, coupon: CouponId) -> u64 {
        self.get_json(&format!("/api/coupons/{}/queue-size", coupon.get()))
            .await["queueSize"]
            .as_u64()
            .unwrap()
    }
}
