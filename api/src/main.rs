use api::{ApiConfig, Application};
use clap::Parser;
use common::{shutdown::shutdown_signal, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ApiConfig::parse();
    telemetry::init(config.common.log_format);
    let app = Application::build(config).await?;
    app.run_until(shutdown_signal()).await
}
