use api::{ApiConfig, Application};

// An allocator made for servers: glibc's malloc and free were about a fifth
// of the api's CPU on the accept path (docs/performance.md, "Profile").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::Parser;
use common::{db, shutdown::shutdown_signal, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ApiConfig::parse();
    telemetry::init(config.common.log_format);
    if config.migrate_only {
        let pool = db::pool(&config.common.database_url, 1)?;
        db::migrate(&pool).await?;
        tracing::info!("migrations applied");
        return Ok(());
    }
    let app = Application::build(config).await?;
    app.run_until(shutdown_signal()).await
}
