use clap::Parser;
use common::{shutdown::cancel_on_signal, telemetry};
use worker::{Worker, WorkerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = WorkerConfig::parse();
    telemetry::init(config.common.log_format);
    let worker = Worker::build(config).await?;
    tracing::info!(addr = %worker.local_addr(), "worker health endpoint listening");
    worker.run(cancel_on_signal()).await
}
