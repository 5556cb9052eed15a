//! `loadgen report`: turns the lines of `results.jsonl` (one per step and
//! run, printed by the other subcommands) into `results.json` and
//! `results.md`: the median of every figure over the runs, beside the
//! ceiling measured in the same run, their ratio and the target; a step that
//! failed in any run is marked FAILED. The tables also go into the document
//! given by `--doc`, between its `bench` markers, and the last sale's
//! timeline of every mode into the SVG given by `--plot`. The crowd steps
//! get a table of their own: the baseline build beside this one.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::figures::{Line, Timeline};
use crate::plot::{self, Panel};

/// The document's lines that enclose the tables.
pub const DOC_BEGIN: &str = "<!-- bench:begin -->";
pub const DOC_END: &str = "<!-- bench:end -->";
/// The README's lines that enclose the headline figures.
pub const SUMMARY_BEGIN: &str = "<!-- bench:summary:begin -->";
pub const SUMMARY_END: &str = "<!-- bench:summary:end -->";

mod crowd;
mod figure;
mod guard;
mod runs;
mod text;

pub use crowd::{crowd_markdown, crowd_rows, CrowdRow};
pub use figure::{figures, Figure};
pub use runs::Runs;
pub use text::{grouped, markdown, summary_markdown};
/// The queue modes, in the order of the tables.
const MODES: [&str; 2] = ["redis", "kafka"];

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The `results.jsonl` of a benchmark: one line per step and run.
    #[arg(long)]
    pub input: PathBuf,
    /// Where `results.md` and `results.json` are written.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Also draw the last sale's timeline of every mode into this SVG (what
    /// `loadgen plot` draws from `results.json`).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Document whose lines `<!-- bench:begin -->` and `<!-- bench:end -->`
    /// enclose the tables: what is between them is replaced. Skipped, with
    /// a note, when the file or a marker is missing.
    #[arg(long, default_value = "docs/performance.md")]
    pub doc: PathBuf,
    /// Document whose lines `<!-- bench:summary:begin -->` and
    /// `<!-- bench:summary:end -->` enclose the headline figures
    /// (the README's Performance section).
    #[arg(long)]
    pub readme: Option<PathBuf>,
    /// The regression guard's reference: the api's CPU per accepted request
    /// as a multiple of the bare server's per answer; a row per mode, and a
    /// warning when this run is more than 15 % over it.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Write this run's multiples into `--reference` (after the check).
    #[arg(long, requires = "reference")]
    pub save_reference: bool,
    #[command(flatten)]
    pub config: Config,
}

/// The workload the benchmark ran, for the labels; kept in `results.json`.
#[derive(Debug, Clone, clap::Args, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// The machine in words: load at the start, cores, memory, kernel.
    #[arg(long)]
    pub machine: String,
    /// The worker's BATCH_SIZE (rows per INSERT in the insert ceiling).
    #[arg(long)]
    pub batch: usize,
    /// Calls of the sale.
    #[arg(long)]
    pub requests: u64,
    /// Distinct users among them.
    #[arg(long)]
    pub users: u64,
    /// Stock of the sale's coupon.
    #[arg(long)]
    pub stock: u64,
    /// Coupons of the spread sale (`sale-20`).
    #[arg(long)]
    pub coupons: u64,
    /// Offered req/s of the `rate` step.
    #[arg(long)]
    pub rate: u64,
    /// Calls of the `batch-*` backlogs.
    #[arg(long)]
    pub small: u64,
    /// Cores of the machine: the CPU seconds a step could use are cores ×
    /// wall seconds. Defaults to the cores this process sees.
    #[arg(long)]
    pub cores: Option<usize>,
    /// The baseline build of the `crowd-before` steps, in words (the git
    /// ref and its commit).
    #[arg(long)]
    pub before: Option<String>,
}

impl Config {
    fn cores(&self) -> usize {
        self.cores
            .or_else(|| std::thread::available_parallelism().ok().map(Into::into))
            .unwrap_or(1)
    }
}

/// The last sale's timeline of every mode, titled.
fn panels(runs: &Runs, c: &Config) -> Vec<Panel> {
    // Only the timeline: a failed sale that printed its figures has one too.
    #[derive(Deserialize)]
    struct WithTimeline {
        timeline: Option<Timeline>,
    }
    runs.modes()
        .into_iter()
        .filter_map(|m| {
            let timeline = runs
                .of(m, "sale")
                .filter_map(|r| WithTimeline::deserialize(&r.line.result).ok()?.timeline)
                .last()?;
            Some(Panel {
                title: format!(
                    "{m}: {} calls, 1 coupon of {}, c=128",
                    grouped(c.requests as f64, 0),
                    grouped(c.stock as f64, 0)
                ),
                timeline,
            })
        })
        .collect()
}

/// `doc` with the lines between its markers replaced by `tables`, as they
/// are: a marker line is an HTML block of its own, so the tables render as
/// Markdown without blank lines around them. None when a marker is
/// missing, or the end comes first.
fn splice_between(
    doc: &str,
    (begin_marker, end_marker): (&str, &str),
    tables: &str,
) -> Option<String> {
    let lines: Vec<&str> = doc.split_inclusive('\n').collect();
    let begin = lines.iter().position(|l| l.trim() == begin_marker)?;
    let end = begin
        + 1
        + lines[begin + 1..]
            .iter()
            .position(|l| l.trim() == end_marker)?;
    let mut out: String = lines[..=begin].concat();
    out.push_str(tables.trim_end_matches('\n'));
    out.push('\n');
    out.push_str(&lines[end..].concat());
    Some(out)
}

/// Writes the tables into the document between its markers; a missing
/// document or marker is a note, not an error: the results are written
/// anyway.
fn write_doc(doc: &Path, markers: (&str, &str), tables: &str) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(doc) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "note: {} does not exist; the tables are not written into it",
                doc.display()
            );
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", doc.display())),
    };
    match splice_between(&text, markers, tables) {
        Some(new) => {
            std::fs::write(doc, new).with_context(|| format!("writing {}", doc.display()))?;
            eprintln!("wrote the tables into {}", doc.display());
        }
        None => eprintln!(
            "note: {} has no {} line followed by a {} line; the tables are not written into it",
            doc.display(),
            markers.0,
            markers.1
        ),
    }
    Ok(())
}

/// What `results.json` holds: the table's figures, the timelines to plot,
/// and every line the runs printed.
#[derive(Serialize)]
struct Results<'a> {
    date: &'a str,
    machine: &'a str,
    config: &'a Config,
    figures: &'a [Figure],
    crowd: &'a [CrowdRow],
    timelines: &'a [Panel],
    runs: Vec<&'a Line<Value>>,
}

pub fn report(args: &ReportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let runs = Runs::parse(&text).with_context(|| args.input.display().to_string())?;
    let mut figures = figures(&runs, &args.config)?;
    let date = Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    if let Some(path) = &args.reference {
        match guard::Reference::load(path)? {
            Some(reference) => {
                let rows = reference.check(&figures);
                for w in guard::warnings(&rows) {
                    eprintln!("{w}");
                }
                figures.extend(rows);
            }
            None if !args.save_reference => eprintln!(
                "note: {} does not exist: no regression guard (--save-reference writes it)",
                path.display()
            ),
            None => {}
        }
        if args.save_reference {
            // The rows above checked this run against the reference it replaces.
            for f in figures
                .iter_mut()
                .filter(|f| f.figure.starts_with(guard::GUARD))
            {
                if let Some(text) = &mut f.ceiling_text {
                    text.push_str(", replaced by this run");
                }
            }
            let measured = format!("{date}, medians of {} run(s)", runs.runs());
            match guard::Reference::of(&figures, measured) {
                Some(r) => {
                    r.save(path)?;
                    eprintln!("wrote the reference {}", path.display());
                }
                None => eprintln!("note: no accept step measured; the reference is not written"),
            }
        }
    }
    let crowd = crowd_rows(&runs)?;
    let mut md = markdown(&figures, &args.config, runs.runs(), &date);
    md.push_str(&crowd_markdown(&crowd, &runs, &args.config));
    let panels = panels(&runs, &args.config);
    std::fs::create_dir_all(&args.out_dir)?;
    std::fs::write(args.out_dir.join("results.md"), &md)?;
    let results = Results {
        date: &date,
        machine: &args.config.machine,
        config: &args.config,
        figures: &figures,
        crowd: &crowd,
        timelines: &panels,
        runs: runs.steps.iter().map(|r| &r.line).collect(),
    };
    std::fs::write(
        args.out_dir.join("results.json"),
        serde_json::to_vec_pretty(&results)?,
    )?;
    if let Some(svg) = &args.plot {
        if let Some(dir) = svg.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        plot::draw(&panels, svg)?;
    }
    write_doc(&args.doc, (DOC_BEGIN, DOC_END), &md)?;
    if let Some(readme) = &args.readme {
        let summary = summary_markdown(&figures, runs.runs(), &date);
        write_doc(readme, (SUMMARY_BEGIN, SUMMARY_END), &summary)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::runs::median;
    use super::text::{num, ratio_text};
    use super::*;
    use crate::figures::{EnqueueFigures, SaleFigures};
    use crate::stats::Latency;

    fn config() -> Config {
        Config {
            machine: "test machine".into(),
            batch: 500,
            requests: 20_000,
            users: 10_000,
            stock: 2_000,
            coupons: 20,
            rate: 5_000,
            small: 2_000,
            cores: Some(2),
            before: Some("main (abc1234)".into()),
        }
    }

    /// A sale's line as `loadgen sale` prints it.
    fn sale(run: u32, mode: &str, kind: &str, accepted_per_second: f64, ok: bool) -> String {
        let figures = SaleFigures {
            accepted: 2_000,
            accepted_per_second,
            sold_out_per_second: Some(30_000.0),
            send_seconds: 1.5,
            last_result_seconds: Some(1.0),
            latency_accepted: Latency {
                count: 2_000,
                p50_ms: 4.0,
                p99_ms: 9.0 + f64::from(run),
                p999_ms: 20.0,
                max_ms: 30.0,
            },
            request_to_result_db: Some(Latency {
                p50_ms: 3.0,
                p99_ms: 40.0,
                ..Latency::default()
            }),
            ok,
            audit: Some(crate::figures::AuditFigures {
                violations: if ok {
                    vec![]
                } else {
                    vec!["coupon 7: issued 2001 of 2000".into()]
                },
                ..Default::default()
            }),
            ..SaleFigures::default()
        };
        encoded(run, mode, kind, figures)
    }

    fn line(run: u32, mode: &str, kind: &str, result: Value) -> String {
        serde_json::to_string(&serde_json::json!({
            "run": run, "mode": mode, "kind": kind, "result": result
        }))
        .unwrap()
    }

    /// Three runs of the Redis mode: run 2's sale broke an invariant, run
    /// 3's backlog drain printed no figures.
    fn fixture() -> String {
        let mut lines = vec![];
        for run in 1..=3 {
            let r = f64::from(run);
            lines.push(sale(run, "any", "bare-http", 30_000.0 + 1_000.0 * r, true));
            lines.push(line(
                run,
                "any",
                "insert",
                serde_json::json!({ "rows": 20000, "batch": 500, "seconds": 0.4,
                    "perSecond": 50_000.0 * r, "ok": true }),
            ));
            lines.push(enqueue_line(run, None));
            // Accepted req/s 10,000, 99,999 (the failed run) and 14,400.
            let acc = [10_000.0, 99_999.0, 14_400.0][run as usize - 1];
            lines.push(sale(run, "redis", "sale", acc, run != 2));
            lines.push(line(
                run,
                "redis",
                "cpu",
                serde_json::json!({ "ok": true,
                    "before": { "api": 1.0, "worker": 0.0, "redis": 0.0, "mariadb": 0.0,
                        "broker": 0.0, "loadgen": 1.0, "wall": 100.0 },
                    "after": { "api": 3.0, "worker": 0.01, "redis": 0.5, "mariadb": 1.0,
                        "broker": 0.0, "loadgen": 3.5, "wall": 100.0 + 3.0 * r } }),
            ));
            lines.push(sale(run, "redis", "rate", 5_000.0, true));
            if run == 3 {
                lines.push(line(
                    run,
                    "redis",
                    "backlog",
                    serde_json::json!({ "ok": false, "error": "backlog not drained after 300s" }),
                ));
            } else {
                lines.push(line(
                    run,
                    "redis",
                    "backlog",
                    serde_json::json!({ "results": 2000, "resultsPerSecond": 20_000.0 * r,
                        "processedSpanSeconds": 0.1, "lastBatch": 500, "observedSeconds": 0.2,
                        "ok": true, "audit": { "issued": 2000, "byStatus": {}, "violations": [] } }),
                ));
            }
            for (kind, rps) in [("batch-1", 1_000.0), ("batch-500", 19_990.0)] {
                lines.push(line(
                    run,
                    "redis",
                    kind,
                    serde_json::json!({ "results": 2000, "resultsPerSecond": rps,
                        "processedSpanSeconds": 1.0, "lastBatch": 1, "observedSeconds": 1.0,
                        "ok": true, "audit": { "issued": 200, "byStatus": {}, "violations": [] } }),
                ));
            }
            lines.push(line(
                run,
                "redis",
                "rss",
                serde_json::json!({ "ok": true, "apiKb": 102_400 + 10_240 * run,
                    "apiKbClosedLoop": 30_720, "workerKb": 15_360 }),
            ));
        }
        lines.join("\n") + "\n"
    }

    fn find<'a>(figures: &'a [Figure], mode: &str, starts: &str) -> &'a Figure {
        figures
            .iter()
            .find(|f| f.mode == mode && f.figure.starts_with(starts))
            .unwrap_or_else(|| panic!("no figure {mode} {starts}"))
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median([]), None);
    }

    #[test]
    fn medians_leave_failed_runs_out_and_mark_them() {
        let runs = Runs::parse(&fixture()).unwrap();
        let figures = figures(&runs, &config()).unwrap();

        let bare = find(&figures, "any", "bare HTTP ceiling");
        assert_eq!(bare.value, Some(32_000.0));
        assert_eq!(bare.note, "");
        assert_eq!(find(&figures, "any", "bulk insert").value, Some(100_000.0));

        // The failed run's 99,999 is not in the median of 10,000 and 14,400,
        // and the bare HTTP ceiling is the median of its own runs.
        let acc = find(&figures, "redis", "accepted req/s (coupon open)");
        assert_eq!(acc.value, Some(12_200.0));
        assert_eq!(acc.ceiling, Some(32_000.0));
        assert_eq!(acc.ratio, Some(12_200.0 / 32_000.0));
        assert_eq!(acc.met, Some(false));
        assert_eq!(acc.note, "FAILED 1/3");

        // p99 of the successful runs 1 and 3: 10 and 12.
        let issue = find(&figures, "redis", "issue call");
        assert_eq!(issue.latency, Some(vec![Some(4.0), Some(11.0), Some(20.0)]));
        assert_eq!(issue.met, Some(false));

        let drain = find(&figures, "redis", "one worker's backlog drain");
        assert_eq!(drain.value, Some(30_000.0));
        assert_eq!(drain.ratio, Some(0.3));
        assert_eq!(drain.met, Some(false));
        assert_eq!(drain.note, "FAILED 1/3");

        let batch = find(&figures, "redis", "BATCH_SIZE=500");
        assert_eq!(batch.ratio, Some(19.99));
        assert_eq!(batch.met, Some(false));
        assert_eq!(batch.note, "");

        let rate = find(&figures, "redis", "request-to-result");
        assert_eq!(rate.value, Some(40.0));
        assert_eq!(rate.met, Some(true));

        let rss = find(&figures, "redis", "peak RSS of the api, whole run");
        assert_eq!(rss.value, Some(120.0));
        assert_eq!(rss.met, Some(false));

        let cpu = find(&figures, "redis", "sale: CPU seconds");
        assert_eq!(
            cpu.text.as_deref(),
            Some("api 2.0, redis 0.5, mariadb 1.0, loadgen 2.5; 6.0 in all")
        );
        assert_eq!(
            cpu.ceiling_text.as_deref(),
            Some("12.0 (2 cores × 6.0 s wall)")
        );

        // sale, rate, backlog, batch-1 and batch-500 in three runs.
        let audit = find(&figures, "redis", "invariant audit");
        assert_eq!(audit.text.as_deref(), Some("13 of 15"));
        assert_eq!(audit.met, Some(false));
        assert_eq!(
            audit.note,
            "sale run 2: coupon 7: issued 2001 of 2000 backlog run 3: backlog not drained after 300s"
        );
        assert!(!figures.iter().any(|f| f.mode == "kafka"));
    }

    /// The insert over two connections sits beside the one-connection
    /// ceiling, and only in runs that measured it.
    #[test]
    fn the_insert_over_two_connections_is_divided_by_one_connections() {
        let before = figures(&Runs::parse(&fixture()).unwrap(), &config()).unwrap();
        assert!(!before.iter().any(|f| f.figure.contains("2 connections")));

        let mut lines = fixture();
        for run in 1..=3 {
            lines += &line(
                run,
                "any",
                "insert-2",
                serde_json::json!({ "rows": 20000, "batch": 500, "connections": 2,
                    "seconds": 0.3, "perSecond": 60_000.0 * f64::from(run), "ok": true }),
            );
            lines.push('\n');
        }
        let figures = figures(&Runs::parse(&lines).unwrap(), &config()).unwrap();
        let two = find(&figures, "any", "the same insert over 2 connections");
        assert_eq!(two.value, Some(120_000.0));
        assert_eq!(two.ceiling, Some(100_000.0));
        assert_eq!(two.ratio, Some(1.2));
        assert_eq!(two.note, "");
    }

    #[test]
    fn the_table_shows_values_ceilings_ratios_and_failures() {
        let runs = Runs::parse(&fixture()).unwrap();
        let figures = figures(&runs, &config()).unwrap();
        let md = markdown(&figures, &config(), runs.runs(), "2026-01-01 00:00 UTC");
        let row = |starts: &str| {
            md.lines()
                .find(|l| l.contains(starts))
                .unwrap_or_else(|| panic!("no row {starts} in\n{md}"))
                .to_owned()
        };
        assert!(md.starts_with(
            "Benchmark of 2026-01-01 00:00 UTC, test machine; medians of 3 run(s). Workload: \
             20,000 calls from 10,000 users on one coupon of 2,000 (and on 20 coupons), c=128;"
        ));
        assert_eq!(
            row("accepted req/s (coupon open)"),
            "| redis | accepted req/s (coupon open) ÷ bare HTTP FAILED 1/3 | 12,200 | \
             32,000 (bare HTTP) | 0.38 | ≥ 0.6 | **no** |"
        );
        assert_eq!(
            row("bare HTTP ceiling"),
            "|  | bare HTTP ceiling: 202/s at c=128 | 32,000 | p50/p99/p99.9 4.0 ms / 11.0 ms / \
             20.0 ms |  |  |  |"
        );
        assert_eq!(
            row("issue call"),
            "| redis | issue call p50 / p99 / p99.9 at c=128 (202s) | 4.0 ms / 11.0 ms / 20.0 ms \
             | bare HTTP 4.0 ms / 11.0 ms / 20.0 ms |  | ≤ 10 / ≤ 25 ms (p99 / p99.9) | **no** |"
        );
        assert_eq!(
            row("BATCH_SIZE=500"),
            "| redis | BATCH_SIZE=500 ÷ BATCH_SIZE=1 (same backlog) | 19,990 | 1,000 \
             (BATCH_SIZE=1) | 20× | ≥ 20× | **no** |"
        );
        assert_eq!(
            row("request-to-result"),
            "| redis | request-to-result p50 / p99 at 5,000 req/s offered | 3.0 ms / 40.0 ms | \
             achieved 0 req/s; issue call p99 11.0 ms; result over HTTP (1 in 200, 10 ms polls) \
             0.0 ms / 0.0 ms |  | p99 ≤ 100 ms | yes |"
        );
        assert_eq!(
            row("peak RSS of a worker"),
            "| redis | peak RSS of a worker | 15 MB |  |  | ≤ 100 MB | yes |"
        );
        assert_eq!(
            row("sale: calls sent in"),
            "| redis | sale: calls sent in | 1.50 s |  |  |  |  |"
        );
        assert!(row("invariant audit").contains("| 13 of 15 |"));
    }

    #[test]
    fn a_step_without_successful_runs_has_no_value() {
        let jsonl = line(
            1,
            "redis",
            "sale",
            serde_json::json!({ "ok": false, "error": "results not in after 300s" }),
        );
        let runs = Runs::parse(&jsonl).unwrap();
        let figures = figures(&runs, &config()).unwrap();
        let acc = find(&figures, "redis", "accepted req/s (coupon open)");
        assert_eq!((acc.value, acc.ratio, acc.met), (None, None, None));
        assert_eq!(acc.note, "FAILED 1/1");
        let md = markdown(&figures, &config(), runs.runs(), "now");
        assert!(
            md.contains("| redis | accepted req/s (coupon open) ÷ bare HTTP FAILED 1/1 | n/a |")
        );
        let audit = find(&figures, "redis", "invariant audit");
        assert_eq!(audit.note, "sale run 1: results not in after 300s");
    }

    #[test]
    fn numbers_are_grouped_and_rounded() {
        assert_eq!(grouped(1_234_567.4, 0), "1,234,567");
        assert_eq!(grouped(999.96, 1), "1,000.0");
        assert_eq!(grouped(12.0, 2), "12.00");
        assert_eq!(num(Some(99.94), "ms"), "99.9 ms");
        assert_eq!(num(Some(126.4), "ms"), "126 ms");
        assert_eq!(num(None, "ms"), "n/a");
        assert_eq!(ratio_text(Some(0.3949)), "0.39");
        assert_eq!(ratio_text(Some(26.2)), "26×");
    }

    fn splice_doc(doc: &str, tables: &str) -> Option<String> {
        splice_between(doc, (DOC_BEGIN, DOC_END), tables)
    }

    #[test]
    fn the_tables_replace_what_is_between_the_markers() {
        let doc = "# Performance\n\nintro\n<!-- bench:begin -->\nold table\n\nmore\n\
                   <!-- bench:end -->\n\nafter\n";
        let new = splice_doc(doc, "| a |\n|---|\n").unwrap();
        assert_eq!(
            new,
            "# Performance\n\nintro\n<!-- bench:begin -->\n| a |\n|---|\n\
             <!-- bench:end -->\n\nafter\n"
        );
        // Again: the same document.
        assert_eq!(splice_doc(&new, "| a |\n|---|\n").unwrap(), new);
        assert_eq!(splice_doc("no markers\n", "x"), None);
        assert_eq!(
            splice_doc("<!-- bench:end -->\n<!-- bench:begin -->\n", "x"),
            None
        );
    }

    /// A step's figures as a line of `results.jsonl`.
    fn encoded<T: Serialize>(run: u32, mode: &str, kind: &str, result: T) -> String {
        serde_json::to_string(&Line {
            run,
            mode: mode.into(),
            kind: kind.into(),
            result,
        })
        .unwrap()
    }

    /// The Redis enqueue step's line, with the client's CPU per event when
    /// given.
    fn enqueue_line(run: u32, cpu_us_per_event: Option<f64>) -> String {
        let figures = EnqueueFigures {
            requests: 20_000,
            concurrency: 128,
            seconds: 0.5,
            per_second: 40_000.0,
            latency: Latency {
                count: 1,
                p50_ms: 2.0,
                p99_ms: 8.0,
                p999_ms: 20.0,
                max_ms: 20.0,
            },
            cpu_us_per_event,
            ok: true,
            ..EnqueueFigures::default()
        };
        encoded(run, "redis", "enqueue", figures)
    }

    /// A line of a step that measured a server's CPU per accepted request.
    fn with_cpu(run: u32, mode: &str, kind: &str, per_second: f64, us: f64) -> String {
        let figures = SaleFigures {
            accepted: 20_000,
            accepted_per_second: per_second,
            cpu_seconds: Some(us * 20_000.0 / 1e6),
            cpu_us_per_accepted: Some(us),
            ok: true,
            ..SaleFigures::default()
        };
        encoded(run, mode, kind, figures)
    }

    /// A line of a step that measured every process's CPU over its calls.
    fn with_machine(run: u32, mode: &str, kind: &str, send: f64, cpu: &[(&str, f64)]) -> String {
        let figures = SaleFigures {
            accepted: 20_000,
            accepted_per_second: 20_000.0 / send,
            send_seconds: send,
            machine_cpu: cpu.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
            ok: true,
            ..SaleFigures::default()
        };
        encoded(run, mode, kind, figures)
    }

    #[test]
    fn the_front_doors_time_per_call_is_taken_apart_beside_the_bare_servers() {
        let base: Vec<String> = fixture()
            .lines()
            .filter(|l| !l.contains("\"bare-http\"") && !l.contains("\"accept\""))
            .map(String::from)
            .collect();
        let mut lines = base.clone();
        for run in 1..=3 {
            let r = f64::from(run);
            // 20,000 calls in 0.5 s on 2 cores: 50 µs of the cores each.
            let bare = [("server", 0.3), ("loadgen", 0.5), ("redis", 0.001)];
            lines.push(with_machine(run, "any", "bare-http", 0.5, &bare));
            // 1.0, 1.1 and 1.2 s: 100, 110 and 120 µs, 70 of them CPU.
            let api = [("server", 0.6), ("loadgen", 0.6), ("redis", 0.2)];
            lines.push(with_machine(run, "redis", "accept", 0.9 + 0.1 * r, &api));
        }
        let runs = Runs::parse(&(lines.join("\n") + "\n")).unwrap();
        let taken_apart = figures(&runs, &config()).unwrap();
        let f = find(
            &taken_apart,
            "redis",
            "front door: the cores' time per accepted request",
        );
        assert!((f.value.unwrap() - 110.0).abs() < 1e-9, "{f:?}");
        assert!((f.ratio.unwrap() - 2.2).abs() < 1e-9, "{f:?}");
        assert_eq!(
            f.text.as_deref(),
            Some("api 30.0, redis 10.0, loadgen 30.0, rest 40.0; 110.0 µs in all")
        );
        assert_eq!(
            f.ceiling_text.as_deref(),
            Some("server 15.0, loadgen 25.0, rest 10.0; 50.0 µs in all")
        );

        // Steps that measured the server alone have no such row.
        let mut lines = base;
        for run in 1..=3 {
            lines.push(with_cpu(run, "any", "bare-http", 32_000.0, 10.0));
            lines.push(with_cpu(run, "redis", "accept", 16_000.0, 25.0));
        }
        let runs = Runs::parse(&(lines.join("\n") + "\n")).unwrap();
        let alone = figures(&runs, &config()).unwrap();
        assert!(!alone
            .iter()
            .any(|f| f.figure.starts_with("front door: the cores")));
    }

    #[test]
    fn the_apis_cpu_per_request_is_set_beside_the_bare_servers_and_the_readme_gets_the_goals() {
        let mut lines: Vec<String> = fixture()
            .lines()
            .filter(|l| !l.contains("\"bare-http\"") && !l.contains("\"enqueue\""))
            .map(String::from)
            .collect();
        for run in 1..=3 {
            let r = f64::from(run);
            lines.push(with_cpu(run, "any", "bare-http", 32_000.0, 10.0 + r));
            lines.push(with_cpu(run, "redis", "accept", 16_000.0, 25.0 + r));
            lines.push(with_cpu(run, "redis", "accept-before", 14_000.0, 30.0 + r));
            lines.push(enqueue_line(run, Some(5.0 + r)));
        }
        let runs = Runs::parse(&(lines.join("\n") + "\n")).unwrap();
        let figures = figures(&runs, &config()).unwrap();

        let bare = find(&figures, "any", "bare HTTP ceiling: its CPU");
        assert_eq!(bare.value, Some(12.0));
        let rate = find(&figures, "redis", "front door, no worker running");
        assert_eq!(rate.ratio, Some(0.5));
        assert_eq!(rate.met, Some(false));
        let cpu = find(&figures, "redis", figure::API_CPU);
        assert_eq!(cpu.value, Some(27.0));
        assert_eq!(cpu.ratio, Some(27.0 / 12.0));
        assert_eq!(cpu.target.as_deref(), Some("≤ 2.0×"));
        assert_eq!(cpu.met, Some(false));
        // Beside the baseline's api in the same run.
        let vs = find(
            &figures,
            "redis",
            "api CPU per accepted request, this build",
        );
        assert_eq!(vs.ceiling, Some(32.0));
        assert_eq!(vs.ratio, Some(27.0 / 32.0));
        // Beside the sum of its two parts, each measured bare.
        let parts = find(&figures, "redis", "api CPU per accepted request ÷ (bare");
        assert_eq!(parts.ceiling, Some(12.0 + 7.0));
        assert_eq!(parts.ratio, Some(27.0 / 19.0));
        let md = markdown(&figures, &config(), 3, "today");
        assert!(
            md.contains("| 27.0 µs | 12.0 µs (bare HTTP) | 2.25 | ≤ 2.0× | **no** |"),
            "{md}"
        );
        // The sale's CPU per accepted request, per process: api 2 s over
        // 2,000 accepted.
        let per = find(&figures, "redis", "sale: CPU µs per accepted request");
        assert!(
            per.text.as_deref().unwrap().starts_with("api 1000, "),
            "{per:?}"
        );

        // The README's summary: the headline figures only.
        let summary = summary_markdown(&figures, 3, "today");
        assert!(summary.contains(figure::API_CPU));
        assert!(summary.contains("front door, no worker running"));
        assert!(summary.contains("one worker's backlog drain"));
        assert!(!summary.contains("bulk insert ceiling"));
        assert!(!summary.contains("sale: CPU µs per accepted"));
        assert!(!summary.contains("request-to-result"));
    }

    #[test]
    fn the_front_doors_p99_and_the_sold_out_step_are_set_beside_the_bare_server() {
        let latency = |p99_ms: f64| Latency {
            count: 20_000,
            p50_ms: 3.0,
            p99_ms,
            p999_ms: 30.0,
            max_ms: 40.0,
        };
        let mut lines: Vec<String> = fixture().lines().map(String::from).collect();
        for run in 1..=3 {
            let r = f64::from(run);
            let accept = SaleFigures {
                accepted: 20_000,
                accepted_per_second: 20_000.0,
                cpu_us_per_accepted: Some(20.0),
                latency_accepted: latency(18.0 + r),
                ok: true,
                ..SaleFigures::default()
            };
            lines.push(encoded(run, "redis", "accept", accept));
            // Run 3 got one answer that was not a 409.
            let sold_out = SaleFigures {
                sent: 20_000,
                sold_out: if run == 3 { 19_999 } else { 20_000 },
                answers_per_second: 28_000.0 + 1_000.0 * r,
                sold_out_per_second: Some(40_000.0),
                ok: true,
                ..SaleFigures::default()
            };
            lines.push(encoded(run, "redis", "sold-out", sold_out));
        }
        let runs = Runs::parse(&(lines.join("\n") + "\n")).unwrap();
        let figures = figures(&runs, &config()).unwrap();

        // The bare server's p99 is 10, 11 and 12 ms (the fixture's sales).
        let tail = find(&figures, "redis", "front door p99");
        assert_eq!(tail.value, Some(20.0));
        assert_eq!(tail.ceiling, Some(11.0));
        assert_eq!(tail.met, Some(false), "20 / 11 is over 1.5");
        // Every answer counts, from the first call, as the bare server's.
        let idle = find(&figures, "redis", "sold-out coupon, nothing queued");
        assert_eq!(idle.value, Some(30_000.0));
        assert_eq!(idle.ceiling, Some(32_000.0));
        assert_eq!(idle.met, Some(false));
        assert!(idle.note.contains("NOT EVERY ANSWER A 409"), "{idle:?}");
        let summary = summary_markdown(&figures, 3, "today");
        assert!(summary.contains("front door p99"));
        assert!(summary.contains("sold-out coupon, nothing queued"));
    }

    /// A crowd's line as `loadgen crowd` prints it: the baseline polls
    /// (every click queued, a SELECT per look-up), this build holds.
    fn crowd(run: u32, kind: &str, ok: bool) -> String {
        let before = kind == "crowd-before";
        let r = f64::from(run);
        let figures = crate::figures::CrowdFigures {
            users: 10_000,
            clicks_per_user: 5,
            stock: 2_000,
            concurrency: 128,
            waiters: 1_000,
            wait_ms: 5_000,
            clicks: 50_000,
            accepted: if before { 30_000 } else { 9_000 },
            repeats: if before { 0 } else { 21_000 },
            sold_out: 20_000,
            queue_entries_per_user: if before { 3.0 } else { 0.9 },
            queue_entries_per_waiting_user: if before { 3.33 } else { 1.0 },
            result_rows_per_user: if before { 3.0 } else { 0.9 },
            selects_per_user: if before { 4.0 + r } else { 0.1 },
            inserts_per_user: 0.01,
            statements_per_user: if before { 4.01 + r } else { 0.11 },
            latency_click: Latency {
                count: 50_000,
                p50_ms: 4.0,
                p99_ms: 10.0 * r,
                p999_ms: 30.0,
                max_ms: 40.0,
            },
            last_knows_seconds: if before { 9.0 } else { 4.5 },
            knows: Latency {
                p50_ms: 2_000.0,
                p99_ms: 4_000.0,
                ..Latency::default()
            },
            users_accepted: 9_000,
            lookups: if before { 40_000 } else { 9_500 },
            lookups_per_waiting_user: if before { 4.44 } else { 1.06 },
            lookups_early: if before { 31_000 } else { 0 },
            ok,
            audit: Some(crate::figures::AuditFigures {
                violations: if ok {
                    vec![]
                } else {
                    vec!["coupon 9: 2 results without an accepted request".into()]
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        encoded(run, "redis", kind, figures)
    }

    #[test]
    fn the_crowd_table_sets_the_baseline_beside_this_build() {
        // Three runs; the baseline's run 3 broke an invariant.
        let jsonl: Vec<String> = (1..=3)
            .flat_map(|run| {
                [
                    crowd(run, "crowd", true),
                    crowd(run, "crowd-before", run != 3),
                ]
            })
            .collect();
        let runs = Runs::parse(&jsonl.join("\n")).unwrap();
        let rows = crowd_rows(&runs).unwrap();
        let row = |starts: &str| {
            rows.iter()
                .find(|r| r.figure.starts_with(starts))
                .unwrap_or_else(|| panic!("no row {starts}"))
        };
        // The baseline's SELECTs per user: runs 1 and 2 (5 and 6), not 3.
        let selects = row("MySQL SELECTs per user");
        assert_eq!((selects.before, selects.after), (Some(5.5), Some(0.1)));
        assert_eq!(
            (selects.before_text.as_str(), selects.after_text.as_str()),
            ("5.50", "0.10")
        );
        assert_eq!(row("result rows per user").goal, "≤ 1.00");
        let entries = row("queue entries per user who got a 202");
        assert_eq!(
            (entries.before_text.as_str(), entries.after_text.as_str()),
            ("3.33", "1.00")
        );
        assert_eq!(row("200 repeat answers").after_text, "21,000");
        assert_eq!(row("click p50 / p99").after_text, "4.0 ms / 20.0 ms");
        assert_eq!(row("click p50 / p99").before_text, "4.0 ms / 15.0 ms");
        assert_eq!(row("first click to the last user").before_text, "9.00 s");
        let passed = row("runs passed");
        assert_eq!(passed.after_text, "3 of 3");
        assert_eq!(
            passed.before_text,
            "2 of 3; run 3: coupon 9: 2 results without an accepted request"
        );

        let md = crowd_markdown(&rows, &runs, &config());
        assert!(md.contains(
            "10,000 users click 5 times each on one coupon of 2,000 (all clicks shuffled, \
             c=128); every user with a `202` asks for the result of that first one until told, \
             from the moment the `202` came, while the crowd goes on clicking (`waitMs=5,000`"
        ));
        assert!(
            md.contains("| queue | figure | before: main (abc1234) | after: this build | goal |")
        );
        assert!(
            md.contains("| redis | MySQL statements per user (SELECT + INSERT) | 5.51 | 0.11 |  |")
        );
        assert!(md.contains("| redis | look-ups answered 202 at once (not held) | 31,000 | 0 |  |"));
        // This build's crowd counts in the main table's audit.
        let figures = figures(&runs, &config()).unwrap();
        let audit = find(&figures, "redis", "invariant audit");
        assert_eq!(audit.text.as_deref(), Some("3 of 3"));
    }

    #[test]
    fn without_crowd_steps_there_is_no_crowd_table_and_without_a_baseline_it_says_so() {
        let runs = Runs::parse(&fixture()).unwrap();
        let rows = crowd_rows(&runs).unwrap();
        assert!(rows.is_empty());
        assert_eq!(crowd_markdown(&rows, &runs, &config()), "");

        let runs = Runs::parse(&crowd(1, "crowd", true)).unwrap();
        let rows = crowd_rows(&runs).unwrap();
        let c = Config {
            before: None,
            ..config()
        };
        let md = crowd_markdown(&rows, &runs, &c);
        assert!(md.contains("| before (not run: `scripts/bench.sh --before REF`) | after"));
        assert!(md.contains("| redis | result rows per user | n/a | 0.90 | ≤ 1.00 |"));
        assert!(md.contains(
            "| redis | runs passed (invariant audit, nothing refused) | n/a | 1 of 1 | all |"
        ));
    }

    #[test]
    fn a_line_that_is_not_json_is_named() {
        let err = Runs::parse("\n{\"run\":1}\n").err().unwrap();
        assert!(format!("{err:#}").starts_with("line 2"));
    }
}
