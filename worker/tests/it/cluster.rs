//! Redis mode on a Redis Cluster (`REDIS_CLUSTER_NODES`): the real api and
//! worker processes against a real 3-master cluster. Every sale is audited
//! with `common::audit`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::domain::{CouponId, IssueStatus};
use common::queue::redis::RedisKeys;
use testkit::cluster::{
    keys_on_node, master_urls, node_command, spawn_cluster_app_on, test_cluster, OwnedCluster,
};
use testkit::{users_with_repeats, wait_until, Accepted, TestApp};

const DRAIN: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coupon_is_created_issued_and_its_result_read_on_a_cluster() {
    let (nodes, _owned) = test_cluster().await;
    let app = spawn_cluster_app_on(nodes).await;
    let coupon = app.create_coupon(1).await;
    let _worker = app.spawn_worker();

    let res = app.issue(coupon.get(), "42").await;
    assert_eq!(res.status(), 202);
    let accepted: Accepted = res.json().await.unwrap();
    app.wait_for_results(coupon, 1, DRAIN).await;

    let result = app
        .get_json(&format!(
            "/api/coupons/issue-requests/{}",
            accepted.request_id
        ))
        .await;
    assert_eq!(result["status"], "SUCCESS", "{result}");
    assert_eq!(result["queuePosition"], accepted.queue_position);
    let state = app
        .get_json(&format!("/api/coupons/{}", coupon.get()))
        .await;
    assert_eq!(state["remainingStock"], 0, "{state}");
    let report = app.audit(coupon, 1, &[accepted]).await;
    assert_eq!(report.count(IssueStatus::Success), 1);
    wait_until("the drained stream to be deleted", DRAIN, || async {
        app.queue_size(coupon).await == 0
    })
    .await;
}

/// Fires `users` at every coupon at once (32 in flight per coupon, about
/// as many in all as the single-node races); returns what each accepted.
async fn fire_at_all(
    app: &TestApp,
    coupons: &[CouponId],
    users: &[i64],
) -> HashMap<CouponId, Vec<Accepted>> {
    let sales =
        futures::future::join_all(coupons.iter().map(|&c| app.fire_tolerant(c, users, 32))).await;
    coupons
        .iter()
        .copied()
        .zip(sales)
        .map(|(c, sale)| {
            assert_eq!(
                sale.refused,
                0,
                "coupon {c}: every request is accepted ({} of the refusals with unknown outcome)",
                sale.unconfirmed.len()
            );
            (c, sale.accepted)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coupons_raced_on_a_cluster_survive_a_worker_killed_9_and_replaced() {
    let (nodes, _owned) = test_cluster().await;
    let app = spawn_cluster_app_on(nodes).await;
    let mut coupons = Vec::new();
    for _ in 0..6 {
        coupons.push(app.create_coupon(150).await);
    }
    let worker = || app.start_worker(&[("BATCH_SIZE", "20")]);
    let mut running = Vec::new();
    let users = users_with_repeats(800, 600);
    let killer = async {
        // The workers start once every coupon has requests waiting, so
        // that they drain a backlog (in a second or two): the first
        // seen holding a coupon's lease with entries left dies, and the
        // other, or the new one, takes that coupon over.
        wait_until("requests waiting for every coupon", DRAIN, || async {
            for &c in &coupons {
                if app.queue_size(c).await < 500 {
                    return false;
                }
            }
            true
        })
        .await;
        running.extend([worker(), worker()]);
        let killed = app
            .kill_worker_draining(&coupons, &mut running, DRAIN)
            .await;
        eprintln!(
            "killed worker {} holding coupon {} with {} entries left",
            killed.pid, killed.coupon, killed.left
        );
        running.push(worker());
        app.wait_for_takeover(&killed, &running, DRAIN).await;
    };
    let (sales, ()) = tokio::join!(fire_at_all(&app, &coupons, &users), killer);
    for (coupon, accepted) in &sales {
        // The rest were answered SOLD_OUT once the coupon's stock was gone.
        app.wait_for_results(*coupon, accepted.len(), DRAIN).await;
        let report = app.audit(*coupon, 150, accepted).await;
        assert_eq!(report.count(IssueStatus::Success), 150);
        assert_eq!(report.remaining_stock, 0);
        assert_eq!(report.results, accepted.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_queue_keys_of_many_coupons_spread_over_every_master() {
    let (nodes, _owned) = test_cluster().await;
    let app = spawn_cluster_app_on(nodes.clone()).await;
    let keys = RedisKeys::new(app.common.redis_key_prefix.clone());
    // No worker: the streams stay where the api put them.
    let mut coupons = Vec::new();
    for _ in 0..30 {
        let c = app.create_coupon(10).await;
        assert_eq!(app.issue(c.get(), "1").await.status(), 202);
        coupons.push(c);
    }
    let masters = master_urls(&nodes).await;
    assert_eq!(masters.len(), 3, "{masters:?}");
    let mut found = HashSet::new();
    for url in &masters {
        let on_node = keys_on_node(url, &app.common.redis_key_prefix).await;
        assert!(
            !on_node.is_empty(),
            "master {url} holds none of 30 coupon streams"
        );
        found.extend(on_node);
    }
    let expected: HashSet<String> = coupons
        .iter()
        .flat_map(|&c| [keys.stream(c), keys.gate(c)])
        .collect();
    assert_eq!(
        found, expected,
        "exactly one stream and one repeat gate per coupon, nothing else"
    );
    // A coupon's lease and gate hash to the slot of its stream.
    for &c in &coupons {
        let slot = |key: String| async {
            let v = node_command(&masters[0], redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
                .await
                .unwrap();
            redis::from_redis_value::<i64>(v).unwrap()
        };
        assert_eq!(slot(keys.stream(c)).await, slot(keys.lease(c)).await);
        assert_eq!(slot(keys.stream(c)).await, slot(keys.gate(c)).await);
    }
}

/// One master's process is SIGKILLed mid-sale and restarted: requests for
/// its coupons are refused meanwhile, the others go on; the clients
/// reconnect, the master replays its AOF, and every request answered 202
/// gets its result. The masters fsync their AOF before they reply
/// (`testkit::servers::KILLED_REDIS_APPENDFSYNC`), so this shows
/// reconnection and replay, not what `everysec` may lose.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_master_process_killed_mid_sale_is_reconnected_to_and_replays_every_accepted_request(
) {
    let mut cluster = OwnedCluster::start().await;
    let app = cluster.spawn_app().await;
    let keys = RedisKeys::new(app.common.redis_key_prefix.clone());
    let mut coupons = Vec::new();
    for _ in 0..4 {
        coupons.push(app.create_coupon(200).await);
    }
    let victim = cluster.master_of(&keys, coupons[0]).await;
    let _worker = app.spawn_worker_with(&[("BATCH_SIZE", "20")]);
    let outage = async {
        wait_until("the sale to be under way", DRAIN, || async {
            app.result_count(coupons[0]).await >= 100
        })
        .await;
        cluster.kill(victim);
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.restart(victim).await;
        cluster.wait_ok().await;
    };
    // Coupon 0's sale runs through the outage; the others are fired at
    // during it and after.
    let outage_over = tokio_util::sync::CancellationToken::new();
    let outage = async {
        outage.await;
        outage_over.cancel();
    };
    let others = futures::future::join_all(
        coupons[1..]
            .iter()
            .map(|&c| app.fire_through_outage(c, outage_over.cancelled())),
    );
    let (first, rest) = tokio::join!(app.fire_through_outage(coupons[0], outage), others);
    assert!(
        first.refused > 0,
        "requests for the dead master's coupon were refused"
    );
    let sales = std::iter::once(first).chain(rest);
    for (&coupon, sale) in coupons.iter().zip(sales) {
        app.wait_for_requests(coupon, &sale.accepted, DRAIN).await;
        let report = app
            .audit_with_unconfirmed(coupon, 200, &sale.accepted, &sale.unconfirmed)
            .await;
        assert_eq!(report.count(IssueStatus::Success), 200, "coupon {coupon}");
    }
}

async fn start_up_error(app: &TestApp, nodes: &str) -> (std::process::ExitStatus, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        app.worker_command()
            .env("REDIS_CLUSTER_NODES", nodes)
            .output(),
    )
    .await
    .expect("the worker gives up within a minute")
    .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_or_unreachable_redis_cluster_nodes_stops_start_up_naming_it() {
    let (nodes, _owned) = test_cluster().await;
    let app = spawn_cluster_app_on(nodes).await;
    let nobody = format!("redis://127.0.0.1:{}", testkit::free_port());
    let not_a_cluster = testkit::redis_url();
    for bad in [
        "127.0.0.1:7001",
        "redis://x:notaport",
        nobody.as_str(),
        not_a_cluster.as_str(),
    ] {
        let (status, stderr) = start_up_error(&app, bad).await;
        assert!(!status.success(), "worker started with {bad}");
        assert!(stderr.contains("REDIS_CLUSTER_NODES"), "{bad}: {stderr}");
    }
    // The api refuses the same way.
    let mut config = testkit::api_config(app.common.clone(), testkit::ADMIN_TOKEN);
    config.common.redis_cluster_nodes = Some(nobody.parse().unwrap());
    let err = api::Application::build(config)
        .await
        .err()
        .expect("api refuses");
    assert!(
        format!("{err:#}").contains("REDIS_CLUSTER_NODES"),
        "{err:#}"
    );
}
