//! End-to-end harness: the real api on port 0 in this process, real worker
//! processes (the `worker` binary), a fresh database and a unique Redis key
//! prefix per test.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::services::{
    common_config, kafka_brokers, kafka_names, key_prefix, parse_flags, redis_url, TestDb,
};
use api::{ApiConfig, Application};
use common::audit::{audit_sale, AuditReport};
use common::config::CommonConfig;
use common::domain::CouponId;
use common::domain::QueueType;
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
    /// The queue the request went to.
    pub queue: QueueType,
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

/// The workspace's `worker` binary. nextest names it at run time for the
/// worker package's tests (`NEXTEST_BIN_EXE_worker`); otherwise it is where
/// cargo builds it, in the target folder above the test binary's `deps/`.
pub fn worker_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("NEXTEST_BIN_EXE_worker") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(format!("worker{}", std::env::consts::EXE_SUFFIX)))
        .expect("the test binary is in a target folder");
    assert!(
        bin.exists(),
        "no worker binary at {}: build it first (cargo build -p worker)",
        bin.display()
    );
    bin
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

async fn spawn_api(db: TestDb, config: ApiConfig) -> TestApp {
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
        self.worker_command_for(self.common.queue_type)
    }

    /// A `worker` of `queue`, against this app's services.
    pub fn worker_command_for(&self, queue: QueueType) -> Command {
        let mut cmd = Command::new(worker_bin());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("APP_QUEUE_TYPE", queue.as_str())
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
        if let Some(nodes) = &self.common.redis_cluster_nodes {
            cmd.env("REDIS_CLUSTER_NODES", nodes.to_string());
        }
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

    /// Fires one request per entry of `users`, `concurrency` at a time;
    /// returns the accepted ones. Every request must be accepted, or answered
    /// `409 SOLD_OUT` once the coupon's stock is gone.
    pub async fn fire(&self, coupon: CouponId, users: &[i64], concurrency: usize) -> Vec<Accepted> {
        let sale = self.fire_tolerant(coupon, users, concurrency).await;
        assert_eq!(sale.refused, 0, "every request is accepted or sold out");
        sale.accepted
    }

    /// Waits until every accepted request has a result.
    pub async fn wait_for_results(&self, coupon: CouponId, expected: usize, timeout: Duration) {
        let start = Instant::now();
        loop {
            let n = self.result_count(coupon).await;
            if n >= expected {
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

    /// `GET path` on the api, its body as JSON, whatever the status.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path).await.json().await.unwrap()
    }

    /// `GET path` on the api.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("api answers")
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

    /// Every Redis key under this app's prefix.
    pub async fn redis_keys(&self) -> Vec<String> {
        // The test Redis, even when this app was given an unreachable one.
        let client = redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("KEYS")
            .arg(format!("{}*", self.common.redis_key_prefix))
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// Number of result rows in this app's database, of every coupon.
    pub async fn result_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM coupon_issue_result")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// Entries left in the coupon's queue, per the api.
    pub async fn queue_size(&self, coupon: CouponId) -> u64 {
        self.get_json(&format!("/api/coupons/{}/queue-size", coupon.get()))
            .await["queueSize"]
            .as_u64()
            .unwrap()
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

/// A free loopback port for a server the test starts later (a worker's
/// health endpoint, a scratch Redis, Redis Cluster node or broker), which
/// binds it itself.
///
/// Taken from the 10,000 ports below the kernel's ephemeral range
/// (`ip_local_port_range`), checked free by binding it: a port from
/// `bind(0)` is in that range, where the kernel may hand it to any new
/// connection before the server binds it (a cluster node once died of
/// "Address already in use" on its bus port while the other tests ran).
/// Falls back to `bind(0)` when the range starts too low to leave room.
///
/// Binding only shows the port free now: until its server binds it, another
/// `free_port` (this process's next call, another test process) may pick it
/// too, and two nodes of one test cluster once got the same port. So each
/// port is also reserved, by an exclusive lock on
/// `coupon-service-port-PORT.lock` in the temp directory, held until this
/// process exits (also over a kill and restart of the server).
pub fn free_port() -> u16 {
    use rand::Rng;
    static RESERVED: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let reserve = |port: u16| {
        let lock = std::fs::File::create(
            std::env::temp_dir().join(format!("coupon-service-port-{port}.lock")),
        )
        .ok()?;
        // flock: taken already by another process, or by this one for an
        // earlier call (each open file is locked on its own).
        lock.try_lock().ok()?;
        std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
        RESERVED.lock().unwrap().push(lock);
        Some(port)
    };
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if low > 11_024 {
        let mut rng = rand::thread_rng();
        for _ in 0..1000 {
            if let Some(port) = reserve(rng.gen_range(low - 10_000..low)) {
                return port;
            }
        }
    }
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if let Some(port) = reserve(port) {
            return port;
        }
    }
}

impl TestApp {
    /// Launches a worker whose health and metrics endpoint is on `port`.
    pub fn spawn_worker_on(&self, port: u16) -> Child {
        self.spawn_worker_with(&[("WORKER_PORT", &port.to_string())])
    }

    /// Launches a worker with these variables on top of the test's.
    pub fn spawn_worker_with(&self, vars: &[(&str, &str)]) -> Child {
        let mut cmd = self.worker_command();
        cmd.envs(vars.iter().copied());
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
                    202 => Answer::Accepted(res.json::<Accepted>().await.unwrap()),
                    409 => {
                        let body: serde_json::Value = res.json().await.unwrap();
                        assert_eq!(body["error"]["code"], "SOLD_OUT", "{body}");
                        Answer::SoldOut
                    }
                    503 => {
                        let body: serde_json::Value = res.json().await.unwrap();
                        Answer::Refused(
                            body["error"]["requestId"]
                                .as_str()
                                .map(|id| Uuid::parse_str(id).unwrap()),
                        )
                    }
                    other => panic!("unexpected {other}: {:?}", res.text().await),
                }
            }));
        }
        let mut out = Refusals::default();
        for t in tasks {
            match t.await.unwrap() {
                Answer::Accepted(a) => out.accepted.push(a),
                Answer::SoldOut => out.sold_out += 1,
                Answer::Refused(Some(id)) => {
                    out.refused += 1;
                    out.unconfirmed.insert(id);
                }
                Answer::Refused(None) => out.refused += 1,
            }
        }
        out
    }
}

impl Refusals {
    fn absorb(&mut self, other: Refusals) {
        self.accepted.extend(other.accepted);
        self.sold_out += other.sold_out;
        self.refused += other.refused;
        self.unconfirmed.extend(other.unconfirmed);
    }
}

impl TestApp {
    /// Fires volleys of 100 requests from fresh users (1, 2, 3, ...) at
    /// `coupon` until `outage` (which kills and restarts a service) is over,
    /// then goes on until the coupon sells out (the api answers
    /// `SOLD_OUT`), so the sale runs through the outage and past it however
    /// fast either runs and however long the service takes to recover.
    pub async fn fire_through_outage(
        &self,
        coupon: CouponId,
        outage: impl std::future::Future<Output = ()>,
    ) -> Refusals {
        self.fire_through_outage_every(coupon, Duration::from_millis(20), outage)
            .await
    }

    /// [`TestApp::fire_through_outage`] with a volley every `every` (at
    /// least): a long outage with a bounded number of calls.
    pub async fn fire_through_outage_every(
        &self,
        coupon: CouponId,
        every: Duration,
        outage: impl std::future::Future<Output = ()>,
    ) -> Refusals {
        let over = std::sync::atomic::AtomicBool::new(false);
        let mut next_user = 1i64;
        let mut fresh = |n: usize| {
            let users: Vec<i64> = (next_user..next_user + n as i64).collect();
            next_user += n as i64;
            users
        };
        let mut all = Refusals::default();
        let firing = async {
            while !over.load(std::sync::atomic::Ordering::SeqCst) {
                let volley = tokio::time::sleep(every);
                all.absorb(self.fire_tolerant(coupon, &fresh(100), 50).await);
                volley.await;
            }
        };
        let outage = async {
            outage.await;
            over.store(true, std::sync::atomic::Ordering::SeqCst);
        };
        tokio::join!(firing, outage);
        let recovered = Instant::now();
        while all.sold_out == 0 {
            assert!(
                recovered.elapsed() < Duration::from_secs(120),
                "the coupon did not sell out within 120 s of the restart: {} accepted, {} refused",
                all.accepted.len(),
                all.refused
            );
            let volley = tokio::time::sleep(every);
            all.absorb(self.fire_tolerant(coupon, &fresh(100), 50).await);
            volley.await;
        }
        all
    }

    /// Seconds since the coupon's newest result was written (by MySQL's clock).
    pub async fn seconds_since_last_result(&self, coupon: CouponId) -> f64 {
        sqlx::query_scalar(
            "SELECT CAST(TIMESTAMPDIFF(MICROSECOND, MAX(processed_at), UTC_TIMESTAMP(6)) AS DOUBLE) / 1e6 \
             FROM coupon_issue_result WHERE coupon_id = ?",
        )
        .bind(coupon.get())
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }
}

/// How the api answered one issue request.
enum Answer {
    Accepted(Accepted),
    /// `409 SOLD_OUT`: not queued.
    SoldOut,
    /// `503`, with the request id when the outcome is unknown.
    Refused(Option<Uuid>),
}

/// What a volley of requests met while a service was down.
#[derive(Debug, Default)]
pub struct Refusals {
    pub accepted: Vec<Accepted>,
    /// Answered `409 SOLD_OUT` (nothing queued).
    pub sold_out: usize,
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
