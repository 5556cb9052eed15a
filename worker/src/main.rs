use clap::Parser;
use common::{shutdown::cancel_on_signal, telemetry};
use worker::{Worker, WorkerConfig};

// The api's allocator: glibc's malloc and free were about a seventh of the
// worker's CPU in a backlog drain (docs/performance.md, "Drain"). It holds
// on to more memory: the worker's peak RSS in the bench went from 18 to
// about 40 MB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = WorkerConfig::parse();
    telemetry::init(config.common.log_format);
    if config.replay_dead_letters {
        let summary = worker::replay::replay_dead_letters(&config).await?;
        println!(
            "replayed {} dead letters; {} undecodable ones left for inspection",
            summary.replayed, summary.undecodable
        );
        return Ok(());
    }
    let worker = Worker::build(config).await?;
    tracing::info!(addr = %worker.local_addr(), "worker health endpoint listening");
    worker.run(cancel_on_signal()).await
}
