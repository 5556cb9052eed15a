//! `GET`/`PUT /api/admin/queue` without workers: what a switch that cannot
//! be made answers, and that it changes nothing.

use common::config::QueueType;
use testkit::{free_port, spawn_app_with, test_config, Accepted};

use crate::TOKEN;

#[tokio::test]
async fn a_switch_to_an_unreachable_queue_is_refused_and_changes_nothing() {
    let (db, mut common) = test_config(QueueType::Redis).await;
    // Nothing listens there.
    common.kafka_brokers = format!("127.0.0.1:{}", free_port());
    let app = spawn_app_with(db, common).await;
    let coupon = app.create_coupon(10).await;

    let queue = app.json("/api/admin/queue").await;
    assert_eq!(queue["type"], "redis", "{queue}");
    assert_eq!(queue["epoch"], 1, "{queue}");
    assert_eq!(queue["previous"], serde_json::Value::Null, "{queue}");
    assert_eq!(queue["apis"].as_array().unwrap().len(), 1, "{queue}");

    let res = app.switch_queue(QueueType::Kafka).await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "QUEUE_UNAVAILABLE", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("kafka does not answer"), "{message}");
    assert!(message.contains("unchanged"), "{message}");

    let after = app.json("/api/admin/queue").await;
    assert_eq!(after["type"], "redis", "{after}");
    assert_eq!(after["epoch"], 1, "{after}");
    let epochs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queue_epoch")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(epochs, 1);
    let res = app.issue(coupon.get(), "1").await;
    assert_eq!(res.status(), 202);
    let accepted: Accepted = res.json().await.unwrap();
    assert_eq!(accepted.queue, QueueType::Redis);

    // Asking for the active queue changes nothing either.
    let res = app.switch_queue(QueueType::Redis).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["changed"], false, "{body}");
    assert_eq!(body["epoch"], 1, "{body}");
}

#[tokio::test]
async fn a_switch_needs_the_token_and_a_known_queue() {
    let app = crate::spawn_app().await;
    let url = format!("{}/api/admin/queue", app.address);
    let res = app
        .client
        .put(&url)
        .json(&serde_json::json!({"type": "kafka"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    for bad in [
        serde_json::json!({"type": "rabbitmq"}),
        serde_json::json!({"type": "kafka", "force": true}),
        serde_json::json!({}),
    ] {
        let res = app
            .client
            .put(&url)
            .bearer_auth(TOKEN)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 422, "{bad}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    let queue = app.json("/api/admin/queue").await;
    assert_eq!(queue["epoch"], 1, "{queue}");
}
