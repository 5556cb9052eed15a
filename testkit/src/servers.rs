//! Servers a test owns and may kill: scratch Redis and nisshi (Kafka protocol) brokers, a
//! scratch MariaDB it may also pause, and a TCP proxy that can cut connections.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::domain::QueueType;
use uuid::Uuid;

use crate::{free_port, spawn_app_with, test_config, TestApp};

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
        let child = self.child.insert(child);
        wait_until_listening(child, self.port, &self.dir.join("server.log")).await;
    }

    /// SIGKILL: the server dies without any chance to flush.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the running server.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the server runs").id();
        let ok = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {pid}");
    }
}

impl Drop for ScratchServer {
    fn drop(&mut self) {
        self.kill();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// Waits up to 10 s until `child`, just started, accepts connections on
/// `port`. A server that exits first (its port taken, a bad flag) fails the
/// test at once; either failure shows the server's log.
pub(crate) async fn wait_until_listening(
    child: &mut std::process::Child,
    port: u16,
    log: &std::path::Path,
) {
    let start = std::time::Instant::now();
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Some(status) = child.try_wait().expect("poll the test server") {
            panic!(
                "the test server for port {port} exited ({status}) before listening; its log:\n{}",
                log()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the test server did not listen on {port} within 10 s; its log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A nisshi broker with sqlite storage, owned by one test.
pub struct OwnedBroker {
    server: ScratchServer,
}

impl OwnedBroker {
    /// `NISSHI_BIN`, or where `scripts/lib.sh` caches the build.
    pub fn nisshi_bin() -> std::path::PathBuf {
        if let Ok(p) = std::env::var("NISSHI_BIN") {
            return p.into();
        }
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let p = std::path::PathBuf::from(home).join(".cache/coupon-service/nisshi/bin/nisshi");
        assert!(
            p.exists(),
            "the nisshi broker is not installed at {}; scripts/test.sh installs it",
            p.display()
        );
        p
    }

    pub async fn start() -> Self {
        let mut b = Self {
            server: ScratchServer::new("nisshi"),
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
        let mut cmd = std::process::Command::new(Self::nisshi_bin());
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "sqlite://nisshi.db"])
        .env("RUST_LOG", "warn");
        self.server.launch(cmd).await;
    }

    pub fn kill(&mut self) {
        self.server.kill();
    }
}

/// The machine's `mariadbd`: on `PATH`, or where Debian installs it
/// (`/usr/sbin`, which a user's `PATH` may leave out).
fn mariadbd() -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("mariadbd"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| "/usr/sbin/mariadbd".into())
}

/// A MariaDB server owned by one test (the machine's `mariadbd`, its own data
/// directory and port, no grant checks), so that the test can pause it, kill
/// it and start it again under a running service.
pub struct OwnedMysql {
    server: ScratchServer,
}

impl OwnedMysql {
    pub async fn start() -> Self {
        let mut m = Self {
            server: ScratchServer::new("mariadb"),
        };
        let data = m.server.dir.join("data");
        std::fs::create_dir_all(m.tmpdir()).expect("the server's temporary directory");
        let out = std::process::Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            // Passed on to the bootstrapping mariadbd.
            .arg(format!("--tmpdir={}", m.tmpdir().display()))
            .args([
                "--user=root",
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
            ])
            .output()
            .expect("mariadb-install-db runs (MariaDB is installed)");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        m.restart().await;
        m
    }

    /// Its own directory for temporary files. A starting mariadbd removes
    /// every `#sql*` file of its tmpdir: with `/tmp` shared, one test's
    /// server starting would take the temporary tables of another test's
    /// `mariadb-install-db` from under it ("Unknown table
    /// 'mysql.tmp_user_sys'").
    fn tmpdir(&self) -> std::path::PathBuf {
        self.server.dir.join("tmp")
    }

    /// The server's url, without a database; [`crate::TestDb::on`] makes one.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.server.port)
    }

    /// Starts the server (again) on the same port and data.
    pub async fn restart(&mut self) {
        let dir = &self.server.dir;
        let mut cmd = std::process::Command::new(mariadbd());
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .arg(format!("--tmpdir={}", self.tmpdir().display()))
            .arg(format!("--port={}", self.server.port))
            .args([
                "--user=root",
                "--bind-address=127.0.0.1",
                "--skip-grant-tables",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M",
                "--max-connections=500",
            ]);
        self.server.launch(cmd).await;
    }

    /// SIGSTOP: every connection stays open and nothing answers.
    pub fn pause(&self) {
        self.server.signal("STOP");
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        self.server.signal("CONT");
    }

    /// SIGKILL: connections drop; what InnoDB committed survives a restart.
    pub fn kill(&mut self) {
        self.server.kill();
    }
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
    pub async fn start(target: (&str, u16)) -> Self {
        use std::sync::atomic::Ordering;
        let target = (target.0.to_string(), target.1);
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
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect((target.0.as_str(), target.1)).await
                    else {
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

    /// SIGKILL: no shutdown save. What the process wrote to its AOF
    /// survives in the page cache, fsynced or not; under `everysec` it may
    /// not have written all it replied to (see [`KILLED_REDIS_APPENDFSYNC`]).
    pub fn kill(&mut self) {
        self.server.kill();
    }
}

/// The AOF policy of the Redis servers the tests kill: `always`, under
/// which Redis writes and fsyncs its AOF before it replies. Under the
/// `everysec` of `scripts/`, a busy disk lets Redis hold its AOF write back
/// by up to 2 s while a background fsync is slow, and reply all the same, so
/// a kill can lose acknowledged requests (docs/architecture.md, "Redis
/// durability"). What the kill tests check is reconnection and replay.
pub const KILLED_REDIS_APPENDFSYNC: &str = "always";

/// A broker owned by one test, of either kind, that it can kill and restart.
pub enum OwnedQueue {
    Redis(OwnedRedis),
    Kafka(OwnedBroker),
}

impl OwnedQueue {
    /// Redis runs with AOF [`KILLED_REDIS_APPENDFSYNC`].
    pub async fn start(mode: QueueType) -> Self {
        match mode {
            QueueType::Redis => {
                OwnedQueue::Redis(OwnedRedis::start(KILLED_REDIS_APPENDFSYNC).await)
            }
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
            OwnedQueue::Redis(r) => r.restart(KILLED_REDIS_APPENDFSYNC).await,
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
                common
                    .kafka_settings()
                    .ensure_topics()
                    .await
                    .expect("test topics are created");
            }
        }
        spawn_app_with(db, common).await
    }
}
