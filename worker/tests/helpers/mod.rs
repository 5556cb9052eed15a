//! End-to-end harness: the real api on port 0 in this process, real worker
//! processes (the `worker` binary), a fresh database and a unique Redis key
//! prefix per test.

#![allow(dead_code)]

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{ApiConfig, Application};
use common::audit::{audit_sale, AuditReport};
use common::config::{CommonConfig, QueueType};
use common::domain::CouponId;
use common::testing::{kafka_brokers, kafka_names, key_prefix, redis_url, TestDb};
use serde::Deserialize;
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A running api with its own database and queue namespace.
pub struct TestApp {
    pub address: String,
    pub db: TestDb,
    pub common: CommonConfig,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub request_id: Uuid,
    pub user_id: i64,
    pub queue_position: String,
}

/// Services for one test in `mode`: a fresh database, a unique Redis prefix.
pub async fn test_config(mode: QueueType) -> (TestDb, CommonConfig) {
    let db = TestDb::new().await;
    let (topic, group) = kafka_names();
    let common = CommonConfig {
        queue_type: mode,
        database_url: db.url.clone(),
        redis_url: redis_url(),
        redis_key_prefix: key_prefix(),
        kafka_brokers: kafka_brokers(),
        kafka_topic: topic,
        kafka_group_id: group,
        ..CommonConfig::default()
    };
    if mode == QueueType::Kafka {
        common::queue::KafkaSettings::from_config(&common)
            .ensure_topics()
            .await
            .expect("test topics are created");
    }
    (db, common)
}

/// Starts the api in this process on a free port.
pub async fn spawn_app(mode: QueueType) -> TestApp {
    let (db, common) = test_config(mode).await;
    spawn_app_with(db, common).await
}

pub async fn spawn_app_with(db: TestDb, common: CommonConfig) -> TestApp {
    let app = Application::build(ApiConfig::for_tests(common.clone(), ADMIN_TOKEN))
        .await
        .expect("api builds");
    let address = format!("http://{}", app.local_addr());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(app.run_until(async move { stop.cancelled().await }));
    TestApp {
        address,
        db,
        common,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        shutdown,
    }
}

impl TestApp {
    /// Launches one `worker` process against this app's services.
    pub fn spawn_worker(&self) -> Child {
        self.worker_command()
            .spawn()
            .expect("worker process starts")
    }

    pub fn worker_command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_worker"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "APP_QUEUE_TYPE",
                match self.common.queue_type {
                    QueueType::Redis => "redis",
                    QueueType::Kafka => "kafka",
                },
            )
            .env("DATABASE_URL", &self.common.database_url)
            .env("REDIS_URL", &self.common.redis_url)
            .env("REDIS_KEY_PREFIX", &self.common.redis_key_prefix)
            .env("KAFKA_BROKERS", &self.common.kafka_brokers)
            .env("KAFKA_TOPIC", &self.common.kafka_topic)
            .env("KAFKA_GROUP_ID", &self.common.kafka_group_id)
            .env("KAFKA_PARTITIONS", self.common.kafka_partitions.to_string())
            .env("POLL_INTERVAL_MS", "100")
            .env("KAFKA_SESSION_TIMEOUT_MS", "6000")
            .env("LEASE_TTL_MS", "2000")
            .env("WORKER_HOST", "127.0.0.1")
            .env("WORKER_PORT", "0")
            .env(
                "RUST_LOG",
                std::env::var("WORKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

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

    /// Fires one request per entry of `users`, `concurrency` at a time;
    /// returns the accepted ones. Every request must be accepted.
    pub async fn fire(&self, coupon: CouponId, users: &[i64], concurrency: usize) -> Vec<Accepted> {
        let sale = self.fire_tolerant(coupon, users, concurrency).await;
        assert_eq!(sale.refused, 0, "every request is accepted");
        sale.accepted
    }

    /// Waits until every accepted request has a result.
    pub async fn wait_for_results(&self, coupon: CouponId, expected: usize, timeout: Duration) {
        let start = Instant::now();
        loop {
            let n: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM coupon_issue_result WHERE coupon_id = ?")
                    .bind(coupon.get())
                    .fetch_one(&self.db.pool)
                    .await
                    .unwrap();
            if n as usize >= expected {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "only {n} of {expected} results after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every request in `accepted` has a result (other results,
    /// of unconfirmed requests, may exist too).
    pub async fn wait_for_requests(
        &self,
        coupon: CouponId,
        accepted: &[Accepted],
        timeout: Duration,
    ) {
        let ids: HashSet<Uuid> = accepted.iter().map(|a| a.request_id).collect();
        let start = Instant::now();
        loop {
            let done = common::db::results_for_coupon(&self.db.pool, coupon)
                .await
                .unwrap()
                .iter()
                .filter(|r| ids.contains(&r.request_id))
                .count();
            if done == ids.len() {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "only {done} of {} accepted requests have a result after {timeout:?}",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Audits the sale and fails the test on any broken invariant.
    pub async fn audit(
        &self,
        coupon: CouponId,
        initial_stock: i64,
        accepted: &[Accepted],
    ) -> AuditReport {
        self.audit_with_unconfirmed(coupon, initial_stock, accepted, &HashSet::new())
            .await
    }

    /// [`TestApp::audit`] for a sale where some requests got
    /// `503 QUEUE_OUTCOME_UNKNOWN`: those may, but need not, have a result.
    pub async fn audit_with_unconfirmed(
        &self,
        coupon: CouponId,
        initial_stock: i64,
        accepted: &[Accepted],
        unconfirmed: &HashSet<Uuid>,
    ) -> AuditReport {
        let ids: HashSet<Uuid> = accepted.iter().map(|a| a.request_id).collect();
        assert_eq!(ids.len(), accepted.len(), "request ids are unique");
        let report = audit_sale(&self.db.pool, coupon, initial_stock, &ids, unconfirmed)
            .await
            .unwrap();
        assert!(report.violations.is_empty(), "{:#?}", report.violations);
        report
    }

    /// Entries left in the coupon's queue, per the api.
    pub async fn queue_size(&self, coupon: CouponId) -> u64 {
        let v: serde_json::Value = self
            .client
            .get(format!(
                "{}/api/coupons/{}/queue-size",
                self.address,
                coupon.get()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["queueSize"].as_u64().unwrap()
    }
}

/// `n` requests from `distinct` users: every user once, then repeats of the
/// first users, shuffled so repeats arrive anywhere.
pub fn users_with_repeats(n: usize, distinct: usize) -> Vec<i64> {
    use rand::seq::SliceRandom;
    let mut users: Vec<i64> = (1..=distinct as i64).collect();
    users.extend((0..n - distinct).map(|i| (i % distinct) as i64 + 1));
    users.shuffle(&mut rand::thread_rng());
    users
}

/// Polls `f` until it holds; fails the test after `within`.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestApp {
    /// Launches a worker whose health and metrics endpoint is on `port`.
    pub fn spawn_worker_on(&self, port: u16) -> Child {
        let mut cmd = self.worker_command();
        cmd.env("WORKER_PORT", port.to_string());
        cmd.spawn().expect("worker process starts")
    }

    /// Number of results stored for the coupon.
    pub async fn result_count(&self, coupon: CouponId) -> usize {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM coupon_issue_result WHERE coupon_id = ?")
                .bind(coupon.get())
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
        n as usize
    }
}

/// The value of a metric on a worker's `/metrics`, summed over its labels.
pub async fn scrape(port: u16, metric: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(metric))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Sends SIGTERM and waits for the process to exit; returns its status.
pub async fn terminate(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let pid = child.id().expect("process is running");
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {pid}");
    tokio::time::timeout(within, child.wait())
        .await
        .unwrap_or_else(|_| panic!("process {pid} did not exit within {within:?} of SIGTERM"))
        .unwrap()
}

/// A server process owned by one test: its own port and data directory, so
/// the test can kill and restart it without disturbing the others.
pub struct ScratchServer {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl ScratchServer {
    fn new(kind: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{kind}-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            port: free_port(),
            dir,
            child: None,
        }
    }

    /// Runs `cmd` in the data directory (stderr to `server.log`) and waits
    /// until the port accepts connections.
    async fn launch(&mut self, mut cmd: std::process::Command) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let child = cmd
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("test server starts");
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("test server did not listen on {}", self.port);
    }

    /// SIGKILL: the server dies without any chance to flush.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

impl Drop for ScratchServer {
    fn drop(&mut self) {
        self.kill();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// A Tansu broker with sqlite storage, owned by one test.
pub struct OwnedBroker {
    server: ScratchServer,
}

impl OwnedBroker {
    pub fn tansu_bin() -> std::path::PathBuf {
        if let Ok(p) = std::env::var("TANSU_BIN") {
            return p.into();
        }
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let p = std::path::PathBuf::from(home).join(".cache/coupon-service/tansu/bin/tansu");
        assert!(
            p.exists(),
            "the Tansu broker is not installed at {}; scripts/test.sh installs it",
            p.display()
        );
        p
    }

    pub async fn start() -> Self {
        let mut b = Self {
            server: ScratchServer::new("tansu"),
        };
        b.restart().await;
        b
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.server.port)
    }

    /// Starts the broker (again) on the same port and data.
    pub async fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.server.port);
        let mut cmd = std::process::Command::new(Self::tansu_bin());
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .env("RUST_LOG", "warn");
        self.server.launch(cmd).await;
    }

    pub fn kill(&mut self) {
        self.server.kill();
    }
}

impl TestApp {
    /// Like [`TestApp::fire`], but a refused request (503 while a service is
    /// down) is counted instead of failing the test. Returns the accepted
    /// requests and how many were refused; any other answer fails the test.
    pub async fn fire_tolerant(
        &self,
        coupon: CouponId,
        users: &[i64],
        concurrency: usize,
    ) -> Refusals {
        let gate = Arc::new(Semaphore::new(concurrency));
        let mut tasks = Vec::with_capacity(users.len());
        for user in users {
            let permit = gate.clone().acquire_owned().await.unwrap();
            let client = self.client.clone();
            let url = format!(
                "{}/api/coupons/{}/issue?userId={user}",
                self.address,
                coupon.get()
            );
            tasks.push(tokio::spawn(async move {
                let res = client.post(url).send().await.expect("api answers");
                drop(permit);
                match res.status().as_u16() {
                    202 => Ok(res.json::<Accepted>().await.unwrap()),
                    503 => {
                        let body: serde_json::Value = res.json().await.unwrap();
                        Err(body["error"]["requestId"]
                            .as_str()
                            .map(|id| Uuid::parse_str(id).unwrap()))
                    }
                    other => panic!("unexpected {other}: {:?}", res.text().await),
                }
            }));
        }
        let mut out = Refusals::default();
        for t in tasks {
            match t.await.unwrap() {
                Ok(a) => out.accepted.push(a),
                Err(Some(id)) => {
                    out.refused += 1;
                    out.unconfirmed.insert(id);
                }
                Err(None) => out.refused += 1,
            }
        }
        out
    }
}

/// What a volley of requests met while a service was down.
#[derive(Debug, Default)]
pub struct Refusals {
    pub accepted: Vec<Accepted>,
    /// Answered 503.
    pub refused: usize,
    /// Of those, the ones whose outcome is unknown (`QUEUE_OUTCOME_UNKNOWN`).
    pub unconfirmed: HashSet<Uuid>,
}

/// SIGKILL: the process dies mid-whatever, without cleanup.
pub async fn kill9(child: &mut Child) {
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

/// A TCP proxy in front of a server that the test can cut (every open
/// connection dropped, new ones refused) and restore.
pub struct CuttableProxy {
    pub port: u16,
    cut: Arc<std::sync::atomic::AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
    _task: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    pub async fn start(target: (&'static str, u16)) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let gen_tx = generation.clone();
        let is_cut = cut.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if is_cut.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut gen_rx = gen_tx.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = gen_rx.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            cut,
            generation,
            _task: task,
        }
    }

    /// Drops every connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A redis-server with AOF, owned by one test.
pub struct OwnedRedis {
    server: ScratchServer,
}

impl OwnedRedis {
    pub async fn start(appendfsync: &str) -> Self {
        let mut r = Self {
            server: ScratchServer::new("redis"),
        };
        r.restart(appendfsync).await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.server.port)
    }

    /// Starts Redis (again) on the same port and AOF directory.
    pub async fn restart(&mut self, appendfsync: &str) {
        let mut cmd = std::process::Command::new("redis-server");
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--port",
            &self.server.port.to_string(),
        ])
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            appendfsync,
            "--save",
            "",
        ])
        .args(["--dir", "."]);
        self.server.launch(cmd).await;
    }

    /// SIGKILL: no shutdown save, only what the AOF already holds survives.
    pub fn kill(&mut self) {
        self.server.kill();
    }
}

/// A broker owned by one test, of either kind, that it can kill and restart.
pub enum OwnedQueue {
    Redis(OwnedRedis),
    Kafka(OwnedBroker),
}

impl OwnedQueue {
    /// Redis runs with the AOF policy `scripts/` use (`everysec`).
    pub async fn start(mode: QueueType) -> Self {
        match mode {
            QueueType::Redis => OwnedQueue::Redis(OwnedRedis::start("everysec").await),
            QueueType::Kafka => OwnedQueue::Kafka(OwnedBroker::start().await),
        }
    }

    pub fn kill(&mut self) {
        match self {
            OwnedQueue::Redis(r) => r.kill(),
            OwnedQueue::Kafka(b) => b.kill(),
        }
    }

    pub async fn restart(&mut self) {
        match self {
            OwnedQueue::Redis(r) => r.restart("everysec").await,
            OwnedQueue::Kafka(b) => b.restart().await,
        }
    }

    /// Starts the api against this broker (and a fresh database).
    pub async fn spawn_app(&self) -> TestApp {
        let mode = match self {
            OwnedQueue::Redis(_) => QueueType::Redis,
            OwnedQueue::Kafka(_) => QueueType::Kafka,
        };
        let (db, mut common) = test_config(QueueType::Redis).await;
        common.queue_type = mode;
        match self {
            OwnedQueue::Redis(r) => common.redis_url = r.url(),
            OwnedQueue::Kafka(b) => {
                common.kafka_brokers = b.brokers();
                common::queue::KafkaSettings::from_config(&common)
                    .ensure_topics()
                    .await
                    .expect("test topics are created");
            }
        }
        spawn_app_with(db, common).await
    }
}
