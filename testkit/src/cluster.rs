//! Redis Cluster for tests: the shared one named by `REDIS_CLUSTER_NODES`
//! (`scripts/test.sh` starts it), or a 3-master cluster of scratch
//! `redis-server` processes owned by one test, which may kill and restart
//! its masters.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::domain::CouponId;
use common::domain::QueueType;
use common::queue::redis::ClusterNodes;
use common::queue::redis::RedisKeys;
use uuid::Uuid;

use crate::servers::{wait_until_listening, KILLED_REDIS_APPENDFSYNC};
use crate::{free_port, spawn_app_with, test_config, wait_until, TestApp};

/// A Redis Cluster of three masters (no replicas, AOF
/// [`KILLED_REDIS_APPENDFSYNC`]), each with its own port and data directory.
pub struct OwnedCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

struct Node {
    port: u16,
    bus_port: u16,
    child: Option<std::process::Child>,
}

impl OwnedCluster {
    /// Starts three masters and joins them into a cluster.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("redis-cluster-{}", Uuid::new_v4().simple()));
        let mut cluster = Self {
            dir,
            nodes: (0..3)
                .map(|_| Node {
                    port: free_port(),
                    bus_port: free_port(),
                    child: None,
                })
                .collect(),
        };
        for i in 0..3 {
            cluster.restart(i).await;
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_ok().await;
        cluster
    }

    /// The `REDIS_CLUSTER_NODES` value of this cluster.
    pub fn nodes(&self) -> ClusterNodes {
        let urls: Vec<String> = self.urls();
        urls.join(",").parse().unwrap()
    }

    /// `redis://` url of every master, in start order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// Starts master `i` (again) on its port, with its AOF and `nodes.conf`.
    pub async fn restart(&mut self, i: usize) {
        let node_dir = self.dir.join(i.to_string());
        std::fs::create_dir_all(&node_dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node_dir.join("server.log"))
            .unwrap();
        let node = &mut self.nodes[i];
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &node.port.to_string()])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-port", &node.bus_port.to_string()])
            .args(["--cluster-node-timeout", "5000"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                KILLED_REDIS_APPENDFSYNC,
                "--save",
                "",
            ])
            .args(["--dir", "."])
            .current_dir(&node_dir)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let child = node.child.insert(child);
        wait_until_listening(child, node.port, &node_dir.join("server.log")).await;
    }

    /// SIGKILL of master `i`: no shutdown save. What it wrote to its AOF
    /// survives in the page cache, fsynced or not.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    /// Waits until every master reports `cluster_state:ok`.
    pub async fn wait_ok(&self) {
        for url in self.urls() {
            wait_until("cluster_state:ok", Duration::from_secs(30), || {
                let url = url.clone();
                async move {
                    node_command(&url, redis::cmd("CLUSTER").arg("INFO"))
                        .await
                        .ok()
                        .and_then(|v| redis::from_redis_value::<String>(v).ok())
                        .is_some_and(|info| info.contains("cluster_state:ok"))
                }
            })
            .await;
        }
    }

    /// The master that holds the coupon's queue keys.
    pub async fn master_of(&self, keys: &RedisKeys, coupon: CouponId) -> usize {
        master_of(&self.urls(), &keys.stream(coupon)).await
    }

    /// Starts the api against this cluster (and a fresh database).
    pub async fn spawn_app(&self) -> TestApp {
        spawn_cluster_app_on(self.nodes()).await
    }
}

impl Drop for OwnedCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// The cluster a test runs on: the shared one of `REDIS_CLUSTER_NODES`, or
/// one of its own (kept alive by the returned guard).
pub async fn test_cluster() -> (ClusterNodes, Option<OwnedCluster>) {
    match std::env::var("REDIS_CLUSTER_NODES") {
        Ok(raw) if !raw.trim().is_empty() => (
            raw.parse()
                .expect("REDIS_CLUSTER_NODES of the tests parses"),
            None,
        ),
        _ => {
            let owned = OwnedCluster::start().await;
            (owned.nodes(), Some(owned))
        }
    }
}

/// Starts the api in Redis mode on the cluster `nodes`, with its own
/// database and key prefix.
pub async fn spawn_cluster_app_on(nodes: ClusterNodes) -> TestApp {
    let (db, mut common) = test_config(QueueType::Redis).await;
    common.redis_cluster_nodes = Some(nodes);
    // REDIS_URL is not used in cluster mode: point it nowhere to prove it.
    common.redis_url = format!("redis://127.0.0.1:{}", free_port());
    spawn_app_with(db, common).await
}

/// Runs one command on one node (no redirection).
pub async fn node_command(url: &str, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    cmd.query_async(&mut conn).await
}

/// Index in `urls` of the master that serves `key` (the others answer MOVED).
pub async fn master_of(urls: &[String], key: &str) -> usize {
    for (i, url) in urls.iter().enumerate() {
        if node_command(url, redis::cmd("EXISTS").arg(key))
            .await
            .is_ok()
        {
            return i;
        }
    }
    panic!("no master serves {key}");
}

/// Keys under `prefix` stored on the node at `url`.
pub async fn keys_on_node(url: &str, prefix: &str) -> Vec<String> {
    let v = node_command(url, redis::cmd("KEYS").arg(format!("{prefix}*")))
        .await
        .unwrap();
    redis::from_redis_value(v).unwrap()
}

/// The `redis://` urls of every master of the cluster, from `CLUSTER SLOTS`
/// of the first seed node.
pub async fn master_urls(nodes: &ClusterNodes) -> Vec<String> {
    let v = node_command(&nodes.urls()[0], redis::cmd("CLUSTER").arg("SLOTS"))
        .await
        .unwrap();
    let ranges: Vec<redis::Value> = redis::from_redis_value(v).unwrap();
    let mut urls = Vec::new();
    for r in ranges {
        let parts: Vec<redis::Value> = redis::from_redis_value(r).unwrap();
        // [start, end, [host, port, id, ...], replicas...]
        let master: Vec<redis::Value> = redis::from_redis_value_ref(&parts[2]).unwrap();
        let host: String = redis::from_redis_value_ref(&master[0]).unwrap();
        let port: u16 = redis::from_redis_value_ref(&master[1]).unwrap();
        let url = format!("redis://{host}:{port}");
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    urls.sort();
    urls
}
