//! The api under test: its configuration, and the real api on a free port
//! in this process with a fresh database and a unique Redis key prefix.

use std::time::Duration;

use crate::cluster::{spawn_cluster_app_on, test_cluster, OwnedCluster};
use crate::services::{
    common_config, kafka_brokers, kafka_names, key_prefix, parse_flags, redis_url, TestDb,
};
use api::{ApiConfig, Application};
use common::config::CommonConfig;
use common::domain::QueueType;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A running api with its own database and queue namespace.
pub struct TestApp {
    pub address: String,
    pub db: TestDb,
    pub common: CommonConfig,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    /// The Redis Cluster this app runs on when the test started its own
    /// (see [`spawn_app_on`]); it lives as long as the app.
    owned_cluster: Option<OwnedCluster>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The api's configuration for a test: loopback, a free port, the given
/// services and admin token, every other flag at its default (whatever the
/// shell exports).
pub fn api_config(common: CommonConfig, admin_token: &str) -> ApiConfig {
    let flags = [
        "api",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--admin-token",
        admin_token,
    ];
    let mut config: ApiConfig = parse_flags(&flags).expect("test flags parse");
    config.common = common;
    config
}

/// Services for one test in `mode`: a fresh database, a unique Redis prefix.
pub async fn test_config(mode: QueueType) -> (TestDb, CommonConfig) {
    test_config_on(TestDb::new().await, mode).await
}

/// [`test_config`] with the database `db` (on a server the test owns).
pub async fn test_config_on(db: TestDb, mode: QueueType) -> (TestDb, CommonConfig) {
    let (topic, group) = kafka_names();
    let common = CommonConfig {
        queue_type: mode,
        database_url: db.url.clone(),
        redis_url: redis_url(),
        redis_key_prefix: key_prefix(),
        // Only Kafka-mode tests need a broker (and start its container).
        kafka_brokers: match mode {
            QueueType::Kafka => kafka_brokers(),
            QueueType::Redis => common_config().kafka_brokers,
        },
        kafka_topic: topic,
        kafka_group_id: group,
        ..common_config()
    };
    if mode == QueueType::Kafka {
        common
            .kafka_settings()
            .ensure_topics()
            .await
            .expect("test topics are created");
    }
    (db, common)
}

/// Services for a test that uses both queues, starting on `mode`: a fresh
/// database, a unique Redis prefix, its own Kafka topics.
pub async fn test_config_both(mode: QueueType) -> (TestDb, CommonConfig) {
    let (db, mut common) = test_config(QueueType::Kafka).await;
    common.queue_type = mode;
    (db, common)
}

/// Where a test's queue lives: the two queue types, and Redis mode on a
/// Redis Cluster. A test that runs on several takes it as an rstest
/// `#[case]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Redis,
    RedisCluster,
    Kafka,
}

/// Starts the api on `backend`. On a cluster, the shared one of
/// `REDIS_CLUSTER_NODES`, or one of the app's own when that is unset.
pub async fn spawn_app_on(backend: Backend) -> TestApp {
    match backend {
        Backend::Redis => spawn_app(QueueType::Redis).await,
        Backend::Kafka => spawn_app(QueueType::Kafka).await,
        Backend::RedisCluster => {
            let (nodes, owned) = test_cluster().await;
            let mut app = spawn_cluster_app_on(nodes).await;
            app.owned_cluster = owned;
            app
        }
    }
}

/// Starts the api in this process on a free port.
pub async fn spawn_app(mode: QueueType) -> TestApp {
    let (db, common) = test_config(mode).await;
    spawn_app_with(db, common).await
}

pub async fn spawn_app_with(db: TestDb, common: CommonConfig) -> TestApp {
    spawn_api(db, api_config(common, ADMIN_TOKEN)).await
}

/// [`spawn_app`] with the api's coupon cache reloaded only every `refresh`.
pub async fn spawn_app_with_cache_refresh(mode: QueueType, refresh: Duration) -> TestApp {
    let (db, common) = test_config(mode).await;
    let mut config = api_config(common, ADMIN_TOKEN);
    config.coupon_cache_refresh_ms = refresh.as_millis() as u64;
    spawn_api(db, config).await
}

/// Starts the api with `config` (made with [`api_config`], then changed by
/// the test) on the database `db`.
pub async fn spawn_api(db: TestDb, config: ApiConfig) -> TestApp {
    let common = config.common.clone();
    let app = Application::build(config).await.expect("api builds");
    let (addr, shutdown) = app.spawn();
    TestApp {
        address: format!("http://{addr}"),
        db,
        common,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        shutdown,
        owned_cluster: None,
    }
}
