//! SIGTERM to the api process: requests in flight complete, new ones are
//! refused, the process exits 0, and every request answered 202 is queued.

use std::process::Stdio;
use std::time::Duration;

use common::domain::CouponId;
use common::queue::redis::RedisKeys;
use testkit::{key_prefix, redis_url, TestDb};
use tokio::process::Command;

use crate::TOKEN;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_in_flight_requests_and_refuses_new_ones() {
    let db = TestDb::new().await;
    let prefix = key_prefix();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut api = Command::new(env!("CARGO_BIN_EXE_api"))
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("REDIS_URL", redis_url())
        .env("REDIS_KEY_PREFIX", &prefix)
        .env("API_HOST", "127.0.0.1")
        .env("API_PORT", port.to_string())
        .env("ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut up = false;
    for _ in 0..100 {
        if client.get(format!("{base}/health")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "api did not start");
    let coupon: serde_json::Value = client
        .post(format!("{base}/api/admin/coupons"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "name": "shutdown", "quantity": 10 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let coupon = coupon["couponId"].as_i64().unwrap();

    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for user in 1..=400 {
        let client = client.clone();
        let url = format!("{base}/api/coupons/{coupon}/issue?userId={user}");
        let counter = answered.clone();
        tasks.push(tokio::spawn(async move {
            let r = client.post(url).send().await.map(|r| r.status().as_u16());
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            r
        }));
        if user == 200 {
            // SIGTERM while the first volley is still being answered.
            while answered.load(std::sync::atomic::Ordering::SeqCst) < 20 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let pid = api.id().unwrap();
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
        }
    }
    let mut accepted = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(202) => accepted += 1,
            Ok(other) => panic!("in-flight request answered {other}"),
            Err(_) => refused += 1,
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(10), api.wait())
        .await
        .expect("api exits promptly")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(accepted > 0, "the requests in flight were answered");
    assert!(refused > 0, "the requests sent after SIGTERM were refused");
    assert!(
        client.get(format!("{base}/health")).send().await.is_err(),
        "no longer listening"
    );

    let redis = redis::Client::open(redis_url()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let queued: usize = redis::cmd("XLEN")
        .arg(RedisKeys::new(prefix.as_str()).stream(CouponId::try_from(coupon).unwrap()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        queued, accepted,
        "every 202 is queued, nothing else ({refused} refused)"
    );
}
