//! `loadgen`: the benchmark's load generator and ceilings.
//!
//! * `sale`: creates coupons, sends the workload at a fixed concurrency or a
//!   fixed offered rate, waits for every result, audits the sale;
//! * `crowd`: users clicking again and again on one coupon, then waiting
//!   for their results: what reaches the queue and MySQL per user;
//! * `drain`: times a worker through a backlog `sale --backlog` left;
//! * `bare-http`, `enqueue`, `insert`: the ceilings measured in the same run;
//! * `line`: the lines of figures the benchmark script measures itself (CPU
//!   and RSS from `/proc`), and of a step that printed none;
//! * `report`: medians, ceilings and targets of a benchmark's lines:
//!   `results.md`, `results.json`, the same tables in `docs/performance.md`
//!   and the SVG;
//! * `plot`: the per-second timeline of a run as SVG;
//! * `audit`: the invariant checks of a sale run by hand, printed for people.
//!
//! Every measuring subcommand prints one JSON line on stdout (progress goes
//! to stderr) and exits non-zero when the run failed (an invariant broke, or
//! requests were refused). Given `--run`, `--mode` and `--kind`, the line is
//! a line of `results.jsonl`: the figures under `result`, beside the step
//! they belong to; a step that ends in an error then prints a line too, with
//! the error.

mod audit;
mod ceiling;
mod cpu;
mod crowd;
mod figures;
mod load;
mod plot;
mod report;
mod results;
mod sale;
mod stats;
mod workload;

use clap::{Parser, Subcommand};
use figures::{CpuFigures, CpuSnapshot, Failed, Figures, Line, RssFigures, Step};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Load generator and ceilings of the coupon benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send the workload to the api, wait for the results, audit.
    Sale(sale::SaleArgs),
    /// Users clicking several times each on one coupon, then waiting for
    /// their results: queue entries, result rows and MySQL statements per
    /// user, and when the last user knew.
    Crowd(crowd::CrowdArgs),
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
    /// Print a line of results.jsonl for figures measured outside loadgen.
    #[command(subcommand)]
    Line(LineCommand),
    /// Medians of a benchmark's results.jsonl: results.md, results.json,
    /// the tables in the performance document, the SVG.
    Report(report::ReportArgs),
    /// SVG of the per-second timelines in a results.json.
    Plot(plot::PlotArgs),
    /// Check the invariants of a sale (exit status 1 when one broke).
    Audit(audit::AuditArgs),
}

#[derive(Subcommand)]
enum LineCommand {
    /// CPU seconds of the processes sharing the machine before and after a
    /// sale, each given as `api=S worker=S redis=S mariadb=S broker=S
    /// loadgen=S wall=UNIX_SECONDS`.
    Cpu {
        #[arg(long)]
        before: CpuSnapshot,
        #[arg(long)]
        after: CpuSnapshot,
        #[command(flatten)]
        step: Step,
    },
    /// Peak RSS (VmHWM) of the api and the workers, in kB.
    Rss {
        /// The api at the end of the mode's steps.
        #[arg(long)]
        api_kb: u64,
        /// The api after the closed-loop sales.
        #[arg(long)]
        api_kb_closed_loop: u64,
        /// The highest of the workers.
        #[arg(long)]
        worker_kb: u64,
        #[command(flatten)]
        step: Step,
    },
    /// A step that printed no figures, and why.
    Failed {
        #[arg(long)]
        error: String,
        #[command(flatten)]
        step: Step,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Sale(a) => emit(a.step.as_ref(), sale::sale(&a).await),
        Command::Crowd(a) => emit(a.step.as_ref(), crowd::crowd(&a).await),
        Command::Drain(a) => emit(a.step.as_ref(), results::drain(&a).await),
        Command::Enqueue(a) => emit(a.step.as_ref(), ceiling::enqueue(&a).await),
        Command::Insert(a) => emit(a.step.as_ref(), ceiling::insert(&a).await),
        Command::BareHttp { port } => ceiling::bare_http(port).await,
        // The line is the point: printing it succeeds even for `failed`.
        Command::Line(LineCommand::Cpu {
            before,
            after,
            step,
        }) => print_line(
            Some(&step),
            &CpuFigures {
                ok: true,
                before,
                after,
            },
        ),
        Command::Line(LineCommand::Rss {
            api_kb,
            api_kb_closed_loop,
            worker_kb,
            step,
        }) => print_line(
            Some(&step),
            &RssFigures {
                ok: true,
                api_kb,
                api_kb_closed_loop,
                worker_kb,
            },
        ),
        Command::Line(LineCommand::Failed { error, step }) => {
            print_line(Some(&step), &Failed::new(error))
        }
        Command::Report(a) => report::report(&a),
        Command::Plot(a) => plot::plot(&a),
        Command::Audit(a) => {
            if audit::audit(a).await? {
                return Ok(());
            }
            std::process::exit(1);
        }
    }
}

/// Prints a step's figures, or, when it ended in an error and names its
/// step, a line with the error, so that results.jsonl has a line for every
/// step; errs when the run failed, so that the exit status says so too.
fn emit<F: Figures>(step: Option<&Step>, figures: anyhow::Result<F>) -> anyhow::Result<()> {
    match figures {
        Ok(f) => {
            print_line(step, &f)?;
            if !f.ok() {
                anyhow::bail!("the run failed: an invariant broke or requests were refused");
            }
            Ok(())
        }
        Err(e) => {
            if let Some(step) = step {
                print_line(Some(step), &Failed::new(format!("{e:#}")))?;
            }
            Err(e)
        }
    }
}

/// One JSON line on stdout: the figures, wrapped in a line of results.jsonl
/// when the step is named.
fn print_line<F: Serialize>(step: Option<&Step>, figures: &F) -> anyhow::Result<()> {
    let line = match step {
        Some(step) => serde_json::to_string(&Line::new(step, figures))?,
        None => serde_json::to_string(figures)?,
    };
    println!("{line}");
    Ok(())
}
