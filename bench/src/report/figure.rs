//! Every figure of the tables: the median over the runs, its ceiling from
//! the same runs, their ratio and the target.

use serde::Serialize;

use super::runs::{median, percentiles, Recorded, Runs};
use super::text::{grouped, num};
use super::Config;
use crate::figures::{
    CpuFigures, CpuSnapshot, DrainFigures, EnqueueFigures, InsertFigures, RssFigures, SaleFigures,
};

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
    /// One of the few figures the README shows.
    #[serde(skip)]
    pub headline: bool,
}

impl Figure {
    pub(super) fn new(
        mode: &str,
        figure: impl Into<String>,
        value: Option<f64>,
        unit: &str,
    ) -> Self {
        Self {
            mode: mode.into(),
            figure: figure.into(),
            value,
            unit: unit.into(),
            ..Self::default()
        }
    }

    pub(super) fn ceiling(mut self, ceiling: Option<f64>, name: &str) -> Self {
        self.ceiling = ceiling;
        self.ceiling_name = name.into();
        self.ratio = match (self.value, ceiling) {
            (Some(v), Some(c)) if c != 0.0 => Some(v / c),
            _ => None,
        };
        self
    }

    /// The target, and whether the value (and ratio) meet it.
    pub(super) fn target(
        mut self,
        target: &str,
        met: impl FnOnce(f64, Option<f64>) -> bool,
    ) -> Self {
        self.target = Some(target.into());
        self.met = self.value.map(|v| met(v, self.ratio));
        self
    }

    /// `FAILED bad/n` when some run of the step failed.
    pub(super) fn failed(mut self, (bad, n): (usize, usize)) -> Self {
        if bad > 0 {
            self.add_note(format!("FAILED {bad}/{n}"));
        }
        self
    }

    /// Shown in the README too.
    pub(crate) fn headline(mut self) -> Self {
        self.headline = true;
        self
    }

    pub(super) fn latency(mut self, latency: &[Option<f64>]) -> Self {
        self.latency = Some(latency.to_vec());
        self
    }

    pub(super) fn add_note(&mut self, note: String) {
        if !self.note.is_empty() {
            self.note.push(' ');
        }
        self.note.push_str(&note);
    }
}

pub(super) fn at_least(min: f64) -> impl FnOnce(f64, Option<f64>) -> bool {
    move |_, ratio| ratio.is_some_and(|r| r >= min)
}

pub(super) fn at_most(max: f64) -> impl FnOnce(f64, Option<f64>) -> bool {
    move |value, _| value <= max
}

/// Met when the ratio to the ceiling is at most `max` (`at_most` compares
/// the value itself).
pub(super) fn ratio_at_most(max: f64) -> impl FnOnce(f64, Option<f64>) -> bool {
    move |_, ratio| ratio.is_some_and(|r| r <= max)
}

/// Sold-out answers per second beside the bare server's rate.
fn sold_out_figure(
    mode: &str,
    figure: impl Into<String>,
    value: Option<f64>,
    bare: Option<f64>,
) -> Figure {
    Figure::new(mode, figure, value, " req/s").ceiling(bare, "bare HTTP")
}

/// The steps whose runs are audited (`batch-N` is added); the baseline's
/// `crowd-before` is counted in the crowd table only.
pub(super) const AUDITED: [&str; 8] = [
    "sale",
    "sale-20",
    "sold-out",
    "rate",
    "rate-poll50",
    "backlog",
    "batch-1",
    "crowd",
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
    let bare_cpu = median(bare_runs.iter().filter_map(|s| s.cpu_us_per_accepted));
    let bare_share = MachineShare::of(&bare_runs, c.cores());
    out.push(
        Figure::new("any", "bare HTTP ceiling: 202/s at c=128", bare, " req/s")
            .failed(runs.failed("any", "bare-http"))
            .latency(&bare_lat),
    );
    out.push(Figure::new(
        "any",
        "bare HTTP ceiling: its CPU per answer (user + system)",
        bare_cpu,
        "µs",
    ));
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
    // Whether the results' table takes rows faster from two connections
    // than from one: what batches decided side by side could gain at most.
    if runs.has("any", "insert-2") {
        let two = runs.ok::<InsertFigures>("any", "insert-2")?;
        out.push(
            Figure::new(
                "any",
                "the same insert over 2 connections side by side: result rows/s ÷ one connection's",
                median(two.iter().map(|i| i.per_second)),
                " rows/s",
            )
            .ceiling(insert, "bulk insert")
            .failed(runs.failed("any", "insert-2")),
        );
    }
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

        let enq_cpu = median(enqueues.iter().filter_map(|e| e.cpu_us_per_event));
        out.push(
            Figure::new(
                m,
                format!("ceiling: {enq_name}, the client's CPU per event (load generator)"),
                enq_cpu,
                "µs",
            )
            .failed(runs.failed(m, "enqueue")),
        );
        out.extend(accept_figures(
            runs,
            m,
            (bare, bare_cpu, bare_lat[1]),
            (enq, enq_cpu),
            enq_name,
            (bare_share.as_ref(), c.cores()),
        )?);

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
            sold_out_figure(
                m,
                "sold-out phase answers/s (409) ÷ bare HTTP",
                median(sales.iter().filter_map(|s| s.sold_out_per_second)),
                bare,
            )
            .target("≥ 0.8", at_least(0.8))
            .failed(runs.failed(m, "sale"))
            .latency(&percentiles(&sales, |s| Some(&s.latency_sold_out)))
            .headline(),
        );
        // A coupon sold out before the first call, the worker idle: every
        // answer a 409 (from the api's memory once it has read the coupon's
        // repeat gate), with nothing queued anywhere
        // (the services still run beside it). Its rate counts every answer
        // from the first call, as the bare server's does.
        if runs.has(m, "sold-out") {
            let idle: Vec<SaleFigures> = runs.ok(m, "sold-out")?;
            let mut row = sold_out_figure(
                m,
                "sold-out coupon, nothing queued, worker idle: answers/s (409) ÷ bare HTTP",
                median(idle.iter().map(|s| s.answers_per_second)),
                bare,
            )
            .target("≥ 0.95", at_least(0.95))
            .failed(runs.failed(m, "sold-out"))
            .latency(&percentiles(&idle, |s| Some(&s.latency_sold_out)))
            .headline();
            if idle.iter().any(|s| s.sold_out != s.sent) {
                row.add_note("NOT EVERY ANSWER A 409".into());
            }
            out.push(row);
        }
        out.push(Figure::new(
            m,
            format!("sale: accepted of {requests} calls"),
            median(sales.iter().map(|s| s.accepted as f64)),
            "",
        ));
        out.push(Figure::new(
            m,
            format!("sale: repeat answers (200, nothing queued) of {requests} calls"),
            median(sales.iter().map(|s| s.repeats as f64)),
            "",
        ));
        let cpus: Vec<CpuFigures> = runs.ok(m, "cpu")?;
        out.extend(cpu_figure(m, &cpus, c.cores()));
        out.extend(cpu_per_request_figure(
            m,
            &cpus,
            median(sales.iter().map(|s| s.accepted as f64)),
        ));
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
        out.push(sold_out_figure(
            m,
            format!("{} coupons: sold-out answers/s ÷ bare HTTP", c.coupons),
            median(spread.iter().filter_map(|s| s.sold_out_per_second)),
            bare,
        ));
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
        .ceiling(insert, "bulk insert")
        .headline();
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
        // (figure, value, shown in the README)
        for (figure, value, headline) in [
            (
                "peak RSS of the api after the c=128 sales",
                mb(|r| r.api_kb_closed_loop),
                false,
            ),
            (
                "peak RSS of the api, whole run (with the rate step and the backlog fills)",
                mb(|r| r.api_kb),
                true,
            ),
            ("peak RSS of a worker", mb(|r| r.worker_kb), true),
        ] {
            let mut f = Figure::new(m, figure, value, "MB").target("≤ 100 MB", at_most(100.0));
            f.headline = headline;
            out.push(f);
        }

        out.push(audit_figure(runs, m, &batch_n).headline());
    }
    Ok(out)
}

/// The figure of the api's CPU per accepted request (the `accept` step).
pub const API_CPU: &str = "api CPU per accepted request (same calls) ÷ bare server's per answer";

/// The budget of the api's CPU per accepted request, as a multiple of the
/// bare server's per answer: Kafka's producer does more per message than a
/// Redis script call.
pub fn cpu_budget(mode: &str) -> f64 {
    if mode == "redis" {
        2.0
    } else {
        3.0
    }
}

/// The `accept` step (every call a new user's, no worker running): the
/// front door's rate beside its ceiling, and the api's CPU per accepted
/// request beside the bare server's per answer.
fn accept_figures(
    runs: &Runs,
    mode: &str,
    (bare, bare_cpu, bare_p99): (Option<f64>, Option<f64>, Option<f64>),
    (enq, enq_cpu): (Option<f64>, Option<f64>),
    enq_name: &str,
    (bare_share, cores): (Option<&MachineShare>, usize),
) -> anyhow::Result<Vec<Figure>> {
    if !runs.has(mode, "accept") {
        return Ok(vec![]);
    }
    let accepts: Vec<SaleFigures> = runs.ok(mode, "accept")?;
    let failed = runs.failed(mode, "accept");
    let (ceiling, name) = if mode == "redis" {
        (bare, "bare HTTP")
    } else {
        (enq, enq_name)
    };
    let latency = percentiles(&accepts, |s| Some(&s.latency_accepted));
    let rate = Figure::new(
        mode,
        format!("front door, no worker running, every call a new user: accepted req/s ÷ {name}"),
        median(accepts.iter().map(|s| s.accepted_per_second)),
        " req/s",
    )
    .ceiling(ceiling, name)
    .target("≥ 0.6", at_least(0.6))
    .failed(failed)
    .latency(&latency)
    .headline();
    let budget = cpu_budget(mode);
    let mut cpu = Figure::new(
        mode,
        API_CPU,
        median(accepts.iter().filter_map(|s| s.cpu_us_per_accepted)),
        "µs",
    )
    .ceiling(bare_cpu, "bare HTTP")
    .target(&format!("≤ {budget:.1}×"), ratio_at_most(budget))
    .failed(failed)
    .headline();
    cpu.ceiling_text = bare_cpu.map(|b| format!("{b:.1} µs (bare HTTP)"));
    // The api's two parts, each measured bare: answering HTTP, and the
    // client side of the enqueue. In Kafka mode the api also runs the
    // repeat gate's claim script, which neither part holds.
    let parts = bare_cpu.zip(enq_cpu).map(|(b, e)| b + e);
    let mut sum = Figure::new(
        mode,
        "api CPU per accepted request ÷ (bare server's per answer + enqueue client's per event)",
        cpu.value,
        "µs",
    )
    .ceiling(parts, "bare parts")
    .failed(failed);
    sum.ceiling_text = bare_cpu
        .zip(enq_cpu)
        .map(|(b, e)| format!("{:.1} µs ({b:.1} bare HTTP + {e:.1} enqueue client)", b + e));
    let mut out = vec![rate, cpu, sum];
    if let Some(share) = MachineShare::of(&accepts, cores) {
        // The front door's rate beside the bare server's, taken apart: this
        // ratio is the reciprocal of the rate's against bare HTTP (both come
        // from the calls' wall time; in Kafka mode the rate's own goal is
        // against the bare producer), and it says which process, or the
        // time the measured processes left to idle cores or to anything
        // else running, makes up the difference.
        let mut f = Figure::new(
            mode,
            format!(
                "front door: the cores' time per accepted request ({cores} cores × the calls' wall ÷ 202s), by process, the rest idle or other processes' ÷ bare HTTP's per answer"
            ),
            Some(share.whole),
            "µs",
        )
        .ceiling(bare_share.map(|b| b.whole), "bare HTTP")
        .failed(failed);
        f.text = Some(share.text("api"));
        f.ceiling_text = bare_share.map(|b| b.text("server"));
        out.push(f);
    }
    if mode == "redis" {
        // The same calls' p99 beside the bare server's: what the door adds
        // to a call's wait with no worker on the cores.
        let mut tail = Figure::new(
            mode,
            "front door p99, no worker running: issue call (202s) ÷ bare HTTP's p99",
            latency[1],
            "ms",
        )
        .ceiling(bare_p99, "bare HTTP")
        .target("≤ 1.5×", ratio_at_most(1.5))
        .failed(failed)
        .headline();
        tail.ceiling_text = bare_p99.map(|b| format!("{} (bare HTTP)", num(Some(b), "ms")));
        out.push(tail);
    }
    if runs.has(mode, "accept-before") {
        // The baseline's api (`--before REF`), the same calls in the same run.
        let before: Vec<SaleFigures> = runs.ok(mode, "accept-before")?;
        let before_cpu = median(before.iter().filter_map(|s| s.cpu_us_per_accepted));
        let mut vs = Figure::new(
            mode,
            "api CPU per accepted request, this build ÷ the baseline's (--before)",
            out[1].value,
            "µs",
        )
        .ceiling(before_cpu, "baseline")
        .failed(runs.failed(mode, "accept-before"));
        vs.ceiling_text = before_cpu.map(|b| format!("{b:.1} µs (baseline)"));
        out.push(vs);
    }
    Ok(out)
}

/// Where the machine's time per accepted call went in a step with
/// `--machine-pid`: every measured process's CPU µs per call, the rest
/// (cores idle, or running processes not measured), and the whole (cores ×
/// the calls' wall time ÷ accepted calls); each the median over the runs on
/// its own.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct MachineShare {
    /// By process, the step's server (`server`) first.
    pub parts: Vec<(String, f64)>,
    pub rest: f64,
    pub whole: f64,
}

impl MachineShare {
    pub(super) fn of(runs: &[SaleFigures], cores: usize) -> Option<Self> {
        let measured: Vec<&SaleFigures> = runs
            .iter()
            .filter(|s| !s.machine_cpu.is_empty() && s.accepted > 0)
            .collect();
        if measured.is_empty() {
            return None;
        }
        let per_call = |s: &SaleFigures, seconds: f64| seconds * 1e6 / s.accepted as f64;
        let whole_of = |s: &SaleFigures| per_call(s, s.send_seconds * cores as f64);
        let mut names: Vec<&String> = measured.iter().flat_map(|s| s.machine_cpu.keys()).collect();
        names.sort_by_key(|n| (n.as_str() != "server", n.as_str() == "loadgen", *n));
        names.dedup();
        let parts = names
            .into_iter()
            .map(|n| {
                // Over the runs that could read it (a process left out of
                // a run is not counted there as 0).
                let of = |s: &&SaleFigures| Some(per_call(s, *s.machine_cpu.get(n)?));
                (
                    n.clone(),
                    median(measured.iter().filter_map(of)).unwrap_or(0.0),
                )
            })
            .collect();
        let rest = |s: &&SaleFigures| whole_of(s) - per_call(s, s.machine_cpu.values().sum());
        Some(Self {
            parts,
            rest: median(measured.iter().map(rest)).unwrap_or(0.0),
            whole: median(measured.iter().map(|s| whole_of(s))).unwrap_or(0.0),
        })
    }

    /// `api 28.3, redis 5.1, loadgen 24.0, rest 22.0; 79.7 µs in all`, the
    /// server named `server`; parts under 0.1 µs left out.
    pub(super) fn text(&self, server: &str) -> String {
        let mut words: Vec<String> = self
            .parts
            .iter()
            .filter(|(_, us)| *us >= 0.1)
            .map(|(n, us)| {
                let n = if n == "server" { server } else { n };
                format!("{n} {us:.1}")
            })
            .collect();
        words.push(format!("rest {:.1}", self.rest));
        format!("{}; {:.1} µs in all", words.join(", "), self.whole)
    }
}

/// CPU per accepted request of every process during the sale: the medians
/// of the CPU seconds over the median accepted count.
fn cpu_per_request_figure(
    mode: &str,
    cpus: &[CpuFigures],
    accepted: Option<f64>,
) -> Option<Figure> {
    let accepted = accepted.filter(|a| *a > 0.0)?;
    if cpus.is_empty() {
        return None;
    }
    let parts: Vec<String> = CpuSnapshot::PROCESSES
        .into_iter()
        .map(|p| {
            let s = median(
                cpus.iter()
                    .map(|c| c.after.seconds(p) - c.before.seconds(p)),
            );
            format!("{p} {:.0}", s.unwrap_or(0.0) * 1e6 / accepted)
        })
        .collect();
    let mut f = Figure::new(
        mode,
        "sale: CPU µs per accepted request, per process (sold-out answers and repeats included)",
        None,
        "µs",
    );
    f.text = Some(parts.join(", "));
    Some(f)
}

/// CPU seconds of every process during the sale (medians of after −
/// before), beside what the cores could give in the same wall time.
pub(super) fn cpu_figure(mode: &str, cpus: &[CpuFigures], cores: usize) -> Option<Figure> {
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
pub(super) fn audit_figure(runs: &Runs, mode: &str, batch_n: &str) -> Figure {
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
