//! `GET`/`PUT /api/admin/queue` without workers: what a switch that cannot
//! be made answers, and that it changes nothing.

use common::domain::QueueType;
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

/// The record wins over `APP_QUEUE_TYPE` (invariant S1): after a switch to
/// Kafka, the only api restarts with `APP_QUEUE_TYPE=redis` and stays on
/// Kafka; a routine deploy is not a switch.
#[tokio::test]
async fn a_switch_survives_a_restart_of_the_only_api() {
    let (db, common) = testkit::test_config_both(QueueType::Redis).await;
    assert_eq!(common.queue_type, QueueType::Redis);
    let app = spawn_app_with(db.clone(), common.clone()).await;
    let coupon = app.create_coupon(10).await;
    assert_eq!(app.switch_queue(QueueType::Kafka).await.status(), 200);
    drop(app);

    let restarted = spawn_app_with(db, common).await;
    let queue = restarted.json("/api/admin/queue").await;
    assert_eq!(queue["type"], "kafka", "{queue}");
    assert_eq!(queue["epoch"], 2, "{queue}");
    let res = restarted.issue(coupon.get(), "1").await;
    assert_eq!(res.status(), 202);
    let accepted: Accepted = res.json().await.unwrap();
    assert_eq!(accepted.queue, QueueType::Kafka);
    let epochs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queue_epoch")
        .fetch_one(&restarted.db.pool)
        .await
        .unwrap();
    assert_eq!(epochs, 2, "the restart switched nothing");
}

/// Kafka cannot refuse a write, so an epoch after Kafka settles only once
/// every live api follows it (invariant S4): an api that stopped writing
/// its row holds the switch until the row goes stale, and a second switch
/// meanwhile is refused with `409`. After Redis, the fences settle a switch
/// at once.
#[tokio::test]
async fn a_switch_off_kafka_waits_for_every_live_api_and_a_switch_off_redis_does_not() {
    let (db, common) = testkit::test_config_both(QueueType::Kafka).await;
    let app = spawn_app_with(db, common).await;
    app.db.api_that_just_died(1).await;
    let res = app.switch_queue(QueueType::Redis).await;
    assert_eq!(res.status(), 200);
    let queue = app.json("/api/admin/queue").await;
    assert_eq!(queue["settledAt"], serde_json::Value::Null, "{queue}");
    let refused = app.switch_queue(QueueType::Kafka).await;
    assert_eq!(refused.status(), 409);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "SWITCH_IN_PROGRESS", "{body}");

    testkit::wait_until(
        "the dead api's row to go stale and the switch to settle",
        std::time::Duration::from_secs(30),
        || async { app.json("/api/admin/queue").await["settledAt"].is_string() },
    )
    .await;
    // Off Redis: the fences settle it within the call.
    let res = app.switch_queue(QueueType::Kafka).await;
    assert_eq!(res.status(), 200);
    let queue = app.json("/api/admin/queue").await;
    assert_eq!(queue["epoch"], 3, "{queue}");
    assert!(queue["settledAt"].is_string(), "{queue}");
}
