//! `loadgen`: the benchmark's load generator and ceilings.
//!
//! * `sale`: creates coupons, sends the workload at a fixed concurrency or a
//!   fixed offered rate, waits for every result, audits the sale;
//! * `drain`: times a worker through a backlog `sale --backlog` left;
//! * `bare-http`, `enqueue`, `insert`: the ceilings measured in the same run;
//! * `plot`: the per-second timeline of a run as SVG;
//! * `audit`: the invariant checks of a sale run by hand, printed for people.
//!
//! Every measuring subcommand prints one JSON line on stdout (progress goes
//! to stderr) and exits non-zero when the run failed (an invariant broke, or
//! requests were refused).

mod audit;
mod ceiling;
mod load;
mod plot;
mod results;
mod sale;
mod stats;
mod workload;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Load generator and ceilings of the coupon benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send the workload to the api, wait for the results, audit.
    Sale(sale::SaleArgs),
    /// Time a worker through a backlog left by `sale --backlog`.
    Drain(results::DrainArgs),
    /// Serve the issue route with a constant 202, nothing else.
    BareHttp {
        #[arg(long, default_value_t = 29200)]
        port: u16,
    },
    /// The enqueue step alone, at the api's concurrency.
    Enqueue(ceiling::EnqueueArgs),
    /// Bulk INSERT of result rows into a scratch database.
    Insert(ceiling::InsertArgs),
    /// SVG of the per-second timelines in a results.json.
    Plot(plot::PlotArgs),
    /// Check the invariants of a sale (exit status 1 when one broke).
    Audit(audit::AuditArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let figures = match Cli::parse().command {
        Command::Sale(a) => sale::sale(a).await?,
        Command::Drain(a) => results::drain(a).await?,
        Command::Enqueue(a) => ceiling::enqueue(a).await?,
        Command::Insert(a) => ceiling::insert(a).await?,
        Command::BareHttp { port } => return ceiling::bare_http(port).await,
        Command::Plot(a) => return plot::plot(a),
        Command::Audit(a) => {
            if audit::audit(a).await? {
                return Ok(());
            }
            std::process::exit(1);
        }
    };
    println!("{figures}");
    if figures["ok"] != true {
        anyhow::bail!("the run failed: an invariant broke or requests were refused");
    }
    Ok(())
}
