//! Services in containers, for a test run without `DATABASE_URL`,
//! `REDIS_URL` or `KAFKA_BROKERS` on a machine where a Docker engine answers.
//!
//! Each service is one container started with testcontainers the first time
//! a test asks for it and then reused (`ReuseDirective::Always`, found by its
//! labels) by every later test process: nextest runs each test in a process
//! of its own, and a MySQL per test would cost seconds each. A lock file
//! keeps two processes from starting the same service at once. The
//! containers outlive the run; `scripts/test.sh --containers` removes them
//! (`docker rm -f -v $(docker ps -aq --filter label=coupon-service.test)`).
//!
//! Images come from `MYSQL_IMAGE`, `REDIS_IMAGE` and `KAFKA_IMAGE` (default
//! the official `mysql:8.0`, `redis:7`, `apache/kafka:3.8.0`);
//! `scripts/images.sh` builds stand-ins for machines that cannot pull.

use std::sync::OnceLock;
use std::time::Duration;

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, Healthcheck, Image, ImageExt, ReuseDirective};
use testcontainers_modules::kafka::apache::{Kafka, KAFKA_PORT};
use testcontainers_modules::redis::Redis;

use crate::docker_api::{self, Endpoint, Engine, CLIENT_API_VERSION};
use crate::service::Service;

/// The label every container of the test services carries.
pub const LABEL: &str = "coupon-service.test";

const MYSQL_ROOT_PASSWORD: &str = "root";
const DATABASE: &str = "e_commerce_db";

/// The engine, or why none answered; probed once per process.
pub(crate) fn engine() -> &'static Result<Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE.get_or_init(|| docker_api::probe(&Endpoint::from_env()))
}

/// The runtime containers are started on: one per process, outliving the
/// tests' own runtimes (testcontainers keeps one Docker client per process,
/// whose connections belong to the runtime that opened them).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("testcontainers")
            .enable_all()
            .build()
            .expect("tokio runtime for testcontainers");
        if let Ok(engine) = engine() {
            if engine.api_version < CLIENT_API_VERSION {
                let (tx, rx) = std::sync::mpsc::channel();
                let engine = engine.clone();
                rt.spawn(async move {
                    let _ = tx.send(docker_api::relay(engine).await);
                });
                let addr = rx
                    .recv()
                    .expect("relay started")
                    .expect("relay to the Docker engine");
                // Read once, by testcontainers' first call, which comes after this.
                std::env::set_var("DOCKER_HOST", format!("tcp://{addr}"));
            }
        }
        rt
    })
}

/// The address of `service` in its container, starting the container if no
/// test process has yet. Blocks the calling thread.
pub(crate) fn url(service: Service) -> String {
    let lock_path =
        std::env::temp_dir().join(format!("coupon-service-test-{}.lock", service.name()));
    let lock = std::fs::File::create(&lock_path).expect("lock file for the test containers");
    lock.lock().expect("lock the test containers");
    let (tx, rx) = std::sync::mpsc::channel();
    runtime().spawn(async move {
        let _ = tx.send(start(service).await);
    });
    let result = rx.recv().expect("container start-up finished");
    drop(lock);
    result.unwrap_or_else(|e| {
        panic!(
            "starting the {} container ({}) failed: {e}\n\
             Without registry access, build local images with scripts/images.sh and set {} \
             (scripts/test.sh --containers does both).",
            service.name(),
            service.image(),
            service.image_var()
        )
    })
}

async fn start(service: Service) -> Result<String, testcontainers::TestcontainersError> {
    let image = service.image();
    let (name, tag) = image.rsplit_once(':').unwrap_or((image.as_str(), "latest"));
    match service {
        Service::Mysql => {
            let c = GenericImage::new(name, tag)
                .with_exposed_port(3306.tcp())
                .with_wait_for(WaitFor::healthcheck())
                .with_env_var("MYSQL_ROOT_PASSWORD", MYSQL_ROOT_PASSWORD)
                .with_env_var("MYSQL_DATABASE", DATABASE)
                .with_env_var("TZ", "UTC")
                .with_health_check(
                    Healthcheck::cmd_shell(format!(
                        "mysqladmin ping -h 127.0.0.1 -uroot -p{MYSQL_ROOT_PASSWORD} --silent"
                    ))
                    .with_interval(Duration::from_millis(500))
                    .with_retries(360),
                );
            let c = labelled(c, service, &image).start().await?;
            let (host, port) = address(&c, 3306).await?;
            Ok(format!(
                "mysql://root:{MYSQL_ROOT_PASSWORD}@{host}:{port}/{DATABASE}"
            ))
        }
        Service::Redis => {
            let c = Redis::default().with_name(name).with_tag(tag).with_cmd([
                "redis-server",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ]);
            let c = labelled(c, service, &image).start().await?;
            let (host, port) = address(&c, 6379).await?;
            Ok(format!("redis://{host}:{port}"))
        }
        Service::Kafka => {
            // The module advertises 127.0.0.1 and the mapped port.
            let c = Kafka::default()
                .with_jvm_image()
                .with_name(name)
                .with_tag(tag);
            let c = labelled(c, service, &image).start().await?;
            let port = c.get_host_port_ipv4(KAFKA_PORT).await?;
            Ok(format!("127.0.0.1:{port}"))
        }
    }
}

fn labelled<I: Image>(
    request: impl ImageExt<I>,
    service: Service,
    image: &str,
) -> testcontainers::ContainerRequest<I> {
    request
        .with_label(LABEL, service.name())
        .with_label(format!("{LABEL}.image"), image)
        .with_reuse(ReuseDirective::Always)
        .with_startup_timeout(Duration::from_secs(240))
}

async fn address<I: Image>(
    c: &ContainerAsync<I>,
    port: u16,
) -> Result<(String, u16), testcontainers::TestcontainersError> {
    let host = match c.get_host().await?.to_string().as_str() {
        "localhost" => "127.0.0.1".to_string(),
        other => other.to_string(),
    };
    Ok((host, c.get_host_port_ipv4(port).await?))
}
