//! `loadgen report`: turns the lines of `results.jsonl` (one per step and
//! run, printed by the other subcommands) into `results.json` and
//! `results.md`: the median of every figure over the runs, beside the
//! ceiling measured in the same run, their ratio and the target; a step that
//! failed in any run is marked FAILED. The tables also go into the document
//! given by `--doc`, between its `bench` markers, and the last sale's
//! timeline of every mode into the SVG given by `--plot`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::figures::{
    CpuFigures, CpuSnapshot, DrainFigures, EnqueueFigures, InsertFigures, Line, RssFigures,
    SaleFigures, Status, Timeline,
};
use crate::plot::{self, Panel};
use crate::stats::Latency;

/// The document's lines that enclose the tables.
pub const DOC_BEGIN: &str = "<!-- bench:begin -->";
pub const DOC_END: &str = "<!-- bench:end -->";

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
}

impl Config {
    fn cores(&self) -> usize {
        self.cores
            .or_else(|| std::thread::available_parallelism().ok().map(Into::into))
            .unwrap_or(1)
    }
}

/// One line of `results.jsonl`: its figures as printed, and what it says
/// about success.
pub struct Recorded {
    pub line: Line<Value>,
    pub status: Status,
}

/// Every line of a benchmark.
pub struct Runs {
    pub steps: Vec<Recorded>,
}

impl Runs {
    pub fn parse(jsonl: &str) -> anyhow::Result<Self> {
        let mut steps = vec![];
        for (i, text) in jsonl.lines().enumerate() {
            if text.trim().is_empty() {
                continue;
            }
            let line: Line<Value> =
                serde_json::from_str(text).with_context(|| format!("line {}", i + 1))?;
            let status = Status::deserialize(&line.result)
                .with_context(|| format!("line {}: ok, error or audit", i + 1))?;
            steps.push(Recorded { line, status });
        }
        Ok(Self { steps })
    }

    fn of<'a>(&'a self, mode: &'a str, kind: &'a str) -> impl Iterator<Item = &'a Recorded> {
        self.steps
            .iter()
            .filter(move |r| r.line.mode == mode && r.line.kind == kind)
    }

    /// The figures of the step's successful runs.
    pub fn ok<T: DeserializeOwned>(&self, mode: &str, kind: &str) -> anyhow::Result<Vec<T>> {
        self.of(mode, kind)
            .filter(|r| r.status.ok)
            .map(|r| {
                T::deserialize(&r.line.result)
                    .with_context(|| format!("the figures of {mode} {kind}, run {}", r.line.run))
            })
            .collect()
    }

    /// (failed runs, runs) of a step.
    pub fn failed(&self, mode: &str, kind: &str) -> (usize, usize) {
        self.of(mode, kind).fold((0, 0), |(bad, n), r| {
            (bad + usize::from(!r.status.ok), n + 1)
        })
    }

    fn has(&self, mode: &str, kind: &str) -> bool {
        self.of(mode, kind).next().is_some()
    }

    fn modes(&self) -> Vec<&'static str> {
        MODES
            .into_iter()
            .filter(|m| self.steps.iter().any(|r| r.line.mode == *m))
            .collect()
    }

    fn runs(&self) -> u32 {
        self.steps.iter().map(|r| r.line.run).max().unwrap_or(0)
    }
}

/// The median; the mean of the middle two of an even count; none of none.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Medians of p50, p99 and p99.9 (ms).
type Percentiles = [Option<f64>; 3];

fn percentiles<T>(runs: &[T], of: impl Fn(&T) -> Option<&Latency>) -> Percentiles {
    [
        median(runs.iter().filter_map(&of).map(|l| l.p50_ms)),
        median(runs.iter().filter_map(&of).map(|l| l.p99_ms)),
        median(runs.iter().filter_map(&of).map(|l| l.p999_ms)),
    ]
}

/// One row of the table.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figure {
    pub mode: String,
    pub figure: String,
    pub value: Option<f64>,
    /// `ms`, `MB` and `s` are printed with the value; other units (` req/s`)
    /// are said by the figure's name.
    pub unit: String,
    pub ceiling: Option<f64>,
    pub ceiling_name: String,
    /// value ÷ ceiling.
    pub ratio: Option<f64>,
    pub target: Option<String>,
    /// Whether the target was met; none without a target or a value.
    pub met: Option<bool>,
    /// FAILED runs, and why.
    pub note: String,
    /// p50 / p99 / p99.9 (ms) of the step, or p50 / p99.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Vec<Option<f64>>>,
    /// The bare HTTP ceiling's p50 / p99 / p99.9.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling_latency: Option<Vec<Option<f64>>>,
    /// Request-to-result p50 / p99 over HTTP (a sample of the calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_latency: Option<Vec<Option<f64>>>,
    /// The issue call's p50 / p99 / p99.9 during the rate step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue_latency: Option<Vec<Option<f64>>>,
    /// Answers per second achieved at the offered rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub achieved: Option<f64>,
    /// The value in words, when a number does not say it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The ceiling in words, when a number does not say it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling_text: Option<String>,
}

impl Figure {
    fn new(mode: &str, figure: impl Into<String>, value: Option<f64>, unit: &str) -> Self {
        Self {
            mode: mode.into(),
            figure: figure.into(),
            value,
            unit: unit.into(),
            ..Self::default()
        }
    }

    fn ceiling(mut self, ceiling: Option<f64>, name: &str) -> Self {
        self.ceiling = ceiling;
        self.ceiling_name = name.into();
        self.ratio = match (self.value, ceiling) {
            (Some(v), Some(c)) if c != 0.0 => Some(v / c),
            _ => None,
        };
        self
    }

    /// The target, and whether the value (and ratio) meet it.
    fn target(mut self, target: &str, met: impl FnOnce(f64, Option<f64>) -> bool) -> Self {
        self.target = Some(target.into());
        self.met = self.value.map(|v| met(v, self.ratio));
        self
    }

    /// `FAILED bad/n` when some run of the step failed.
    fn failed(mut self, (bad, n): (usize, usize)) -> Self {
        if bad > 0 {
            self.add_note(format!("FAILED {bad}/{n}"));
        }
        self
    }

    fn latency(mut self, latency: &[Option<f64>]) -> Self {
        self.latency = Some(latency.to_vec());
        self
    }

    fn add_note(&mut self, note: String) {
        if !self.note.is_empty() {
            self.note.push(' ');
        }
        self.note.push_str(&note);
    }
}

fn at_least(min: f64) -> impl FnOnce(f64, Option<f64>) -> bool {
    move |_, ratio| ratio.is_some_and(|r| r >= min)
}

fn at_most(max: f64) -> impl FnOnce(f64, Option<f64>) -> bool {
    move |value, _| value <= max
}

/// The steps whose runs are audited (`batch-N` is added).
const AUDITED: [&str; 6] = [
    "sale",
    "sale-20",
    "rate",
    "rate-poll50",
    "backlog",
    "batch-1",
];

/// Every row of the table, in order.
pub fn figures(runs: &Runs, c: &Config) -> anyhow::Result<Vec<Figure>> {
    let mut out = vec![];
    let bare_runs: Vec<SaleFigures> = runs.ok("any", "bare-http")?;
    let bare = median(bare_runs.iter().map(|s| s.accepted_per_second));
    let bare_lat = percentiles(&bare_runs, |s| Some(&s.latency_accepted));
    let insert = median(
        runs.ok::<InsertFigures>("any", "insert")?
            .iter()
            .map(|i| i.per_second),
    );
    out.push(
        Figure::new("any", "bare HTTP ceiling: 202/s at c=128", bare, " req/s")
            .failed(runs.failed("any", "bare-http"))
            .latency(&bare_lat),
    );
    out.push(
        Figure::new(
            "any",
            format!(
                "bulk insert ceiling: result rows/s ({} per INSERT)",
                c.batch
            ),
            insert,
            " rows/s",
        )
        .failed(runs.failed("any", "insert")),
    );
    let batch_n = format!("batch-{}", c.batch);
    let requests = grouped(c.requests as f64, 0);
    for m in runs.modes() {
        let redis = m == "redis";
        let enqueues: Vec<EnqueueFigures> = runs.ok(m, "enqueue")?;
        let enq = median(enqueues.iter().map(|e| e.per_second));
        let enq_name = if redis {
            "Redis enqueue script alone"
        } else {
            "bare rdkafka producer"
        };
        out.push(
            Figure::new(
                m,
                format!("ceiling: {enq_name}, events/s at c=128"),
                enq,
                " ev/s",
            )
            .failed(runs.failed(m, "enqueue"))
            .latency(&percentiles(&enqueues, |e| Some(&e.latency))),
        );

        let sales: Vec<SaleFigures> = runs.ok(m, "sale")?;
        let acc = median(sales.iter().map(|s| s.accepted_per_second));
        if redis {
            out.push(
                Figure::new(m, "accepted req/s (coupon open) ÷ bare HTTP", acc, " req/s")
                    .ceiling(bare, "bare HTTP")
                    .target("≥ 0.6", at_least(0.6))
                    .failed(runs.failed(m, "sale")),
            );
            out.push(
                Figure::new(m, "accepted req/s ÷ enqueue alone", acc, " req/s")
                    .ceiling(enq, enq_name),
            );
        } else {
            out.push(
                Figure::new(
                    m,
                    "accepted req/s (coupon open) ÷ bare producer",
                    acc,
                    " req/s",
                )
                .ceiling(enq, enq_name)
                .target("≥ 0.8", at_least(0.8))
                .failed(runs.failed(m, "sale")),
            );
            out.push(
                Figure::new(m, "accepted req/s ÷ bare HTTP", acc, " req/s")
                    .ceiling(bare, "bare HTTP"),
            );
        }

        // The same calls with no worker running (the backlog fill): the
        // accept path without the worker and MariaDB taking their share of
        // the cores.
        let fills: Vec<SaleFigures> = runs.ok(m, "backlog-fill")?;
        let (fill_ceiling, fill_name, fill_short) = if redis {
            (bare, "bare HTTP", "bare HTTP")
        } else {
            (enq, enq_name, "bare producer")
        };
        out.push(
            Figure::new(
                m,
                format!("accepted req/s with no worker running (backlog fill) ÷ {fill_short}"),
                median(fills.iter().map(|s| s.accepted_per_second)),
                " req/s",
            )
            .ceiling(fill_ceiling, fill_name)
            .failed(runs.failed(m, "backlog-fill"))
            .latency(&percentiles(&fills, |s| Some(&s.latency_accepted))),
        );

        let t = percentiles(&sales, |s| Some(&s.latency_accepted));
        let mut issue = if redis {
            Figure::new(
                m,
                "issue call p50 / p99 / p99.9 at c=128 (202s)",
                t[1],
                "ms",
            )
            .target(
                "≤ 10 / ≤ 25 ms (p99 / p99.9)",
                |_, _| matches!(t, [_, Some(p99), Some(p999)] if p99 <= 10.0 && p999 <= 25.0),
            )
        } else {
            Figure::new(
                m,
                "issue call p50 / p99 / p99.9 at c=128 (202s)",
                t[1],
                "ms",
            )
            .target("p99 ≤ 50 ms", at_most(50.0))
        };
        if t.contains(&None) {
            issue.met = None;
        }
        issue.latency = Some(t.to_vec());
        issue.ceiling_latency = Some(bare_lat.to_vec());
        out.push(issue);

        out.push(
            Figure::new(
                m,
                "sold-out phase answers/s (409) ÷ bare HTTP",
                median(sales.iter().filter_map(|s| s.sold_out_per_second)),
                " req/s",
            )
            .ceiling(bare, "bare HTTP")
            .target("≥ 0.8", at_least(0.8))
            .failed(runs.failed(m, "sale"))
            .latency(&percentiles(&sales, |s| Some(&s.latency_sold_out))),
        );
        out.push(Figure::new(
            m,
            format!("sale: accepted of {requests} calls"),
            median(sales.iter().map(|s| s.accepted as f64)),
            "",
        ));
        out.extend(cpu_figure(m, &runs.ok(m, "cpu")?, c.cores()));
        out.push(Figure::new(
            m,
            "sale: calls sent in",
            median(sales.iter().map(|s| s.send_seconds)),
            "s",
        ));
        out.push(Figure::new(
            m,
            "sale: first call to last result processed (MySQL processed_at)",
            median(sales.iter().filter_map(|s| s.last_result_seconds)),
            "s",
        ));

        let spread: Vec<SaleFigures> = runs.ok(m, "sale-20")?;
        out.push(
            Figure::new(
                m,
                format!("{} coupons: accepted req/s ÷ bare HTTP", c.coupons),
                median(spread.iter().map(|s| s.accepted_per_second)),
                " req/s",
            )
            .ceiling(bare, "bare HTTP")
            .failed(runs.failed(m, "sale-20"))
            .latency(&percentiles(&spread, |s| Some(&s.latency_accepted))),
        );
        out.push(
            Figure::new(
                m,
                format!("{} coupons: sold-out answers/s ÷ bare HTTP", c.coupons),
                median(spread.iter().filter_map(|s| s.sold_out_per_second)),
                " req/s",
            )
            .ceiling(bare, "bare HTTP"),
        );
        out.push(Figure::new(
            m,
            format!("{} coupons: first call to last result processed", c.coupons),
            median(spread.iter().filter_map(|s| s.last_result_seconds)),
            "s",
        ));

        for (kind, label) in [
            ("rate", ""),
            ("rate-poll50", " (extra: POLL_INTERVAL_MS=50)"),
        ] {
            if !runs.has(m, kind) {
                continue;
            }
            let rates: Vec<SaleFigures> = runs.ok(m, kind)?;
            let db = percentiles(&rates, |s| s.request_to_result_db.as_ref());
            let http = percentiles(&rates, |s| Some(&s.request_to_result_http));
            let mut f = Figure::new(
                m,
                format!(
                    "request-to-result p50 / p99 at {} req/s offered{label}",
                    grouped(c.rate as f64, 0)
                ),
                db[1],
                "ms",
            )
            .target("p99 ≤ 100 ms", at_most(100.0))
            .failed(runs.failed(m, kind))
            .latency(&db[..2]);
            f.http_latency = Some(http[..2].to_vec());
            f.issue_latency = Some(percentiles(&rates, |s| Some(&s.latency_accepted)).to_vec());
            f.achieved = median(rates.iter().map(|s| s.answers_per_second));
            out.push(f);
        }

        let drain = |kind: &str| -> anyhow::Result<Option<f64>> {
            Ok(median(
                runs.ok::<DrainFigures>(m, kind)?
                    .iter()
                    .map(|d| d.results_per_second),
            ))
        };
        let backlog = Figure::new(
            m,
            format!("one worker's backlog drain ({requests} queued), results/s ÷ insert ceiling"),
            drain("backlog")?,
            " res/s",
        )
        .ceiling(insert, "bulk insert");
        let backlog = if redis {
            backlog.target("≥ 40,000 res/s", |v, _| v >= 40_000.0)
        } else {
            backlog
        };
        out.push(backlog.failed(runs.failed(m, "backlog")));
        let one = drain("batch-1")?;
        out.push(
            Figure::new(
                m,
                format!(
                    "BATCH_SIZE=1 drain ({} queued), results/s",
                    grouped(c.small as f64, 0)
                ),
                one,
                " res/s",
            )
            .failed(runs.failed(m, "batch-1")),
        );
        out.push(
            Figure::new(
                m,
                format!("BATCH_SIZE={} ÷ BATCH_SIZE=1 (same backlog)", c.batch),
                drain(&batch_n)?,
                " res/s",
            )
            .ceiling(one, "BATCH_SIZE=1")
            .target("≥ 20×", at_least(20.0))
            .failed(runs.failed(m, &batch_n)),
        );

        let rss: Vec<RssFigures> = runs.ok(m, "rss")?;
        let mb = |kb: fn(&RssFigures) -> u64| {
            median(rss.iter().map(|r| kb(r) as f64)).map(|kb| kb / 1024.0)
        };
        for (figure, value) in [
            (
                "peak RSS of the api after the c=128 sales",
                mb(|r| r.api_kb_closed_loop),
            ),
            (
                "peak RSS of the api, whole run (with the rate step and the backlog fills)",
                mb(|r| r.api_kb),
            ),
            ("peak RSS of a worker", mb(|r| r.worker_kb)),
        ] {
            out.push(Figure::new(m, figure, value, "MB").target("≤ 100 MB", at_most(100.0)));
        }

        out.push(audit_figure(runs, m, &batch_n));
    }
    Ok(out)
}

/// CPU seconds of every process during the sale (medians of after −
/// before), beside what the cores could give in the same wall time.
fn cpu_figure(mode: &str, cpus: &[CpuFigures], cores: usize) -> Option<Figure> {
    if cpus.is_empty() {
        return None;
    }
    let spent = |of: &dyn Fn(&CpuSnapshot) -> f64| {
        median(cpus.iter().map(|c| of(&c.after) - of(&c.before))).unwrap_or(0.0)
    };
    let wall = spent(&|s| s.wall);
    let per_process: Vec<(&str, f64)> = CpuSnapshot::PROCESSES
        .into_iter()
        .map(|p| (p, spent(&|s| s.seconds(p))))
        .collect();
    // Processes that hardly ran are left out of the words, not of the sum.
    let parts: Vec<String> = per_process
        .iter()
        .filter(|(_, s)| *s > 0.05)
        .map(|(p, s)| format!("{p} {s:.1}"))
        .collect();
    let total: f64 = per_process.iter().map(|(_, s)| s).sum();
    let ceiling = wall * cores as f64;
    let mut f = Figure::new(
        mode,
        "sale: CPU seconds per process (user + system) during the step",
        Some(ceiling),
        "s",
    );
    f.text = Some(format!("{}; {total:.1} in all", parts.join(", ")));
    f.ceiling_text = Some(format!("{ceiling:.1} ({cores} cores × {wall:.1} s wall)"));
    Some(f)
}

/// How many audited steps passed, and what broke in the others.
fn audit_figure(runs: &Runs, mode: &str, batch_n: &str) -> Figure {
    let audited: Vec<&Recorded> = runs
        .steps
        .iter()
        .filter(|r| {
            r.line.mode == mode
                && (AUDITED.contains(&r.line.kind.as_str()) || r.line.kind == batch_n)
        })
        .collect();
    let bad: Vec<&&Recorded> = audited.iter().filter(|r| !r.status.ok).collect();
    let passed = audited.len() - bad.len();
    let mut f = Figure::new(
        mode,
        "invariant audit: steps passed",
        Some(passed as f64),
        &format!(" of {}", audited.len()),
    )
    .target("all", |_, _| bad.is_empty());
    f.text = Some(format!("{passed} of {}", audited.len()));
    for r in bad {
        let violations = r
            .status
            .audit
            .as_ref()
            .map(|a| &a.violations[..a.violations.len().min(3)])
            .unwrap_or_default();
        let why = if violations.is_empty() {
            r.status
                .error
                .clone()
                .unwrap_or_else(|| "refused requests".into())
        } else {
            violations.join("; ")
        };
        f.add_note(format!("{} run {}: {why}", r.line.kind, r.line.run));
    }
    f
}

/// `v` with `decimals` decimals and thousands separated by commas.
pub fn grouped(v: f64, decimals: usize) -> String {
    let digits = format!("{:.*}", decimals, v.abs());
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits.as_str(), None),
    };
    let mut out = String::new();
    if v < 0.0 {
        out.push('-');
    }
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// A number for the table: milliseconds with one decimal below 100, seconds
/// with two, megabytes and counts whole.
fn num(v: Option<f64>, unit: &str) -> String {
    let Some(v) = v else {
        return "n/a".into();
    };
    match unit {
        "ms" if v < 100.0 => format!("{} ms", grouped(v, 1)),
        "ms" => format!("{} ms", grouped(v, 0)),
        "MB" => format!("{} MB", grouped(v, 0)),
        "s" => format!("{} s", grouped(v, 2)),
        _ => format!("{}{unit}", grouped(v, 0)),
    }
}

fn latency_text(latency: &[Option<f64>]) -> String {
    latency
        .iter()
        .map(|v| num(*v, "ms"))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn value_text(f: &Figure) -> String {
    if let Some(text) = &f.text {
        return text.clone();
    }
    match &f.latency {
        Some(latency) if f.unit == "ms" => latency_text(latency),
        _ if ["ms", "MB", "s"].contains(&f.unit.as_str()) => num(f.value, &f.unit),
        _ => num(f.value, ""),
    }
}

fn ceiling_text(f: &Figure) -> String {
    if let Some(text) = &f.ceiling_text {
        return text.clone();
    }
    if let Some(bare) = &f.ceiling_latency {
        return format!("bare HTTP {}", latency_text(bare));
    }
    if let Some(http) = &f.http_latency {
        let issue_p99 = f.issue_latency.as_ref().and_then(|l| l[1]);
        return format!(
            "achieved {} req/s; issue call p99 {}; result over HTTP (1 in 200, 10 ms polls) {}",
            num(f.achieved, ""),
            num(issue_p99, "ms"),
            latency_text(http)
        );
    }
    match (f.ceiling, &f.latency) {
        (Some(c), _) => format!("{} ({})", num(Some(c), ""), f.ceiling_name),
        (None, Some(latency)) if f.unit != "ms" => {
            format!("p50/p99/p99.9 {}", latency_text(latency))
        }
        (None, _) => String::new(),
    }
}

fn ratio_text(ratio: Option<f64>) -> String {
    match ratio {
        None => String::new(),
        Some(r) if r < 10.0 => format!("{r:.2}"),
        Some(r) => format!("{}×", grouped(r, 0)),
    }
}

/// A table cell: a `|` in the text would end it.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// `results.md`: what ran where, then the table.
pub fn markdown(figures: &[Figure], c: &Config, runs: u32, date: &str) -> String {
    let mut md = format!(
        "Benchmark of {date}, {}; medians of {runs} run(s). Workload: {} calls from {} users \
         on one coupon of {} (and on {} coupons), c=128; api, worker, MariaDB, Redis, broker \
         and load generator share the machine.\n\n\
         | queue | figure | value | ceiling (same run) | ratio | target | met |\n\
         |---|---|---|---|---|---|---|\n",
        c.machine,
        grouped(c.requests as f64, 0),
        grouped(c.users as f64, 0),
        grouped(c.stock as f64, 0),
        c.coupons,
    );
    for f in figures {
        let mode = if f.mode == "any" { "" } else { f.mode.as_str() };
        let figure = if f.note.is_empty() {
            f.figure.clone()
        } else {
            format!("{} {}", f.figure, f.note)
        };
        let met = match f.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        md.push_str(&format!(
            "| {mode} | {} | {} | {} | {} | {} | {met} |\n",
            cell(&figure),
            cell(&value_text(f)),
            cell(&ceiling_text(f)),
            ratio_text(f.ratio),
            f.target.as_deref().unwrap_or(""),
        ));
    }
    md
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
pub fn splice(doc: &str, tables: &str) -> Option<String> {
    let lines: Vec<&str> = doc.split_inclusive('\n').collect();
    let begin = lines.iter().position(|l| l.trim() == DOC_BEGIN)?;
    let end = begin
        + 1
        + lines[begin + 1..]
            .iter()
            .position(|l| l.trim() == DOC_END)?;
    let mut out: String = lines[..=begin].concat();
    out.push_str(tables.trim_end_matches('\n'));
    out.push('\n');
    out.push_str(&lines[end..].concat());
    Some(out)
}

/// Writes the tables into the document between its markers; a missing
/// document or marker is a note, not an error: the results are written
/// anyway.
fn write_doc(doc: &Path, tables: &str) -> anyhow::Result<()> {
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
    match splice(&text, tables) {
        Some(new) => {
            std::fs::write(doc, new).with_context(|| format!("writing {}", doc.display()))?;
            eprintln!("wrote the tables into {}", doc.display());
        }
        None => eprintln!(
            "note: {} has no {DOC_BEGIN} line followed by a {DOC_END} line; the tables are \
             not written into it",
            doc.display()
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
    timelines: &'a [Panel],
    runs: Vec<&'a Line<Value>>,
}

pub fn report(args: &ReportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let runs = Runs::parse(&text).with_context(|| args.input.display().to_string())?;
    let figures = figures(&runs, &args.config)?;
    let date = Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let md = markdown(&figures, &args.config, runs.runs(), &date);
    let panels = panels(&runs, &args.config);
    std::fs::create_dir_all(&args.out_dir)?;
    std::fs::write(args.out_dir.join("results.md"), &md)?;
    let results = Results {
        date: &date,
        machine: &args.config.machine,
        config: &args.config,
        figures: &figures,
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
    write_doc(&args.doc, &md)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    fn latency(p50: f64, p99: f64, p999: f64) -> Value {
        serde_json::json!({ "count": 1, "p50Ms": p50, "p99Ms": p99, "p999Ms": p999, "maxMs": p999 })
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
        serde_json::to_string(&Line {
            run,
            mode: mode.into(),
            kind: kind.into(),
            result: figures,
        })
        .unwrap()
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
            lines.push(line(
                run,
                "redis",
                "enqueue",
                serde_json::json!({ "requests": 20000, "concurrency": 128, "failed": 0,
                    "seconds": 0.5, "perSecond": 40_000.0, "latency": latency(2.0, 8.0, 20.0),
                    "ok": true }),
            ));
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

    #[test]
    fn the_tables_replace_what_is_between_the_markers() {
        let doc = "# Performance\n\nintro\n<!-- bench:begin -->\nold table\n\nmore\n\
                   <!-- bench:end -->\n\nafter\n";
        let new = splice(doc, "| a |\n|---|\n").unwrap();
        assert_eq!(
            new,
            "# Performance\n\nintro\n<!-- bench:begin -->\n| a |\n|---|\n\
             <!-- bench:end -->\n\nafter\n"
        );
        // Again: the same document.
        assert_eq!(splice(&new, "| a |\n|---|\n").unwrap(), new);
        assert_eq!(splice("no markers\n", "x"), None);
        assert_eq!(
            splice("<!-- bench:end -->\n<!-- bench:begin -->\n", "x"),
            None
        );
    }

    #[test]
    fn a_line_that_is_not_json_is_named() {
        let err = Runs::parse("\n{\"run\":1}\n").err().unwrap();
        assert!(format!("{err:#}").starts_with("line 2"));
    }
}
