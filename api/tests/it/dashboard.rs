//! The dashboard page and its data, and the JSON errors around them,
//! against real MariaDB and Redis.

use crate::{links, spawn_app, TOKEN};
use reqwest::StatusCode;
use serde_json::Value;

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
    // One request processed (as a worker would: the coupon's row first, its
    // holders version raised with the holder), one worker alive, one long
    // gone.
    let pool = &app.db.pool;
    let now = chrono::Utc::now().naive_utc();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "UPDATE coupon SET stock = stock - 1, holders_version = holders_version + 1 \
         WHERE coupon_id = ?",
    )
    .bind(coupon)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO user_coupon (user_id, coupon_id, status, request_id, issued_at) \
         VALUES (?, ?, 'ISSUED', UUID(), ?)",
    )
    .bind(user)
    .bind(coupon)
    .bind(now)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
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
    // The rate is the mean of the last 5 complete seconds: once the three
    // accepted requests are in complete seconds, exactly 3 / 5.
    testkit::wait_until(
        "the accepted rate of the last complete seconds",
        std::time::Duration::from_secs(10),
        || async {
            let d: Value = app.json("/api/dashboard").await;
            let c = d["coupons"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["couponId"] == coupon)
                .cloned()
                .unwrap();
            c["acceptedPerSecond"].as_f64() == Some(0.6)
        },
    )
    .await;
    let workers: Vec<&str> = d["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["workerId"].as_str().unwrap())
        .collect();
    assert_eq!(workers, ["worker-alive"]);
    // A repeat click: the door's counts show it.
    // (The page's data is cached for half a second.)
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let door_before = app.json("/api/dashboard").await["door"].clone();
    let res = app
        .client
        .post(format!(
            "{}/api/coupons/{coupon}/issue?userId={user}",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let door = app.json("/api/dashboard").await["door"].clone();
    assert!(
        door["repeat"].as_u64().unwrap() > door_before["repeat"].as_u64().unwrap(),
        "{door_before} -> {door}"
    );
    assert!(door["accepted"].as_u64().unwrap() >= 3, "{door}");
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
