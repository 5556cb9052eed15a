//! The crowd table: every figure of the `crowd` step of this build beside
//! the same of the baseline build (`crowd-before`, `bench.sh --before
//! REF`), medians of the successful runs.

use serde::Serialize;

use super::runs::{median, percentiles, Runs};
use super::text::{cell, grouped, latency_text, num};
use super::Config;
use crate::figures::CrowdFigures;
use crate::stats::Latency;

/// The steps: this build, and the baseline.
pub const AFTER: &str = "crowd";
pub const BEFORE: &str = "crowd-before";

/// One row: a figure of the baseline beside the same of this build.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CrowdRow {
    pub mode: String,
    pub figure: String,
    pub before: Option<f64>,
    pub after: Option<f64>,
    /// The values as the table prints them.
    pub before_text: String,
    pub after_text: String,
    pub goal: String,
}

/// How a figure is printed.
#[derive(Clone, Copy)]
enum Shown {
    Count,
    /// Two decimals: a figure per user.
    PerUser,
    Seconds,
}

type Of = fn(&CrowdFigures) -> f64;

/// The figures, in the order of the table: name, goal, value, how shown.
const FIGURES: [(&str, &str, Of, Shown); 16] = [
    ("clicks", "", |f| f.clicks as f64, Shown::Count),
    (
        "202 accepted (queued)",
        "",
        |f| f.accepted as f64,
        Shown::Count,
    ),
    (
        "200 repeat answers (nothing queued)",
        "",
        |f| f.repeats as f64,
        Shown::Count,
    ),
    ("409 sold out", "", |f| f.sold_out as f64, Shown::Count),
    (
        "other answers (refused)",
        "0",
        |f| f.other as f64,
        Shown::Count,
    ),
    (
        "queue entries per user (202s ÷ users)",
        "≤ 1.00",
        |f| f.queue_entries_per_user,
        Shown::PerUser,
    ),
    (
        "queue entries per user who got a 202",
        "1.00",
        |f| f.queue_entries_per_waiting_user,
        Shown::PerUser,
    ),
    (
        "result rows per user",
        "≤ 1.00",
        |f| f.result_rows_per_user,
        Shown::PerUser,
    ),
    (
        "MySQL SELECTs per user (Com_select)",
        "",
        |f| f.selects_per_user,
        Shown::PerUser,
    ),
    (
        "MySQL INSERTs per user (Com_insert)",
        "",
        |f| f.inserts_per_user,
        Shown::PerUser,
    ),
    (
        "MySQL statements per user (SELECT + INSERT)",
        "",
        |f| f.statements_per_user,
        Shown::PerUser,
    ),
    (
        "first click to the last user knowing the result",
        "",
        |f| f.last_knows_seconds,
        Shown::Seconds,
    ),
    (
        "users who waited (a 202)",
        "",
        |f| f.users_accepted as f64,
        Shown::Count,
    ),
    (
        "result look-ups made",
        "",
        |f| f.lookups as f64,
        Shown::Count,
    ),
    (
        "result look-ups per waiting user",
        "",
        |f| f.lookups_per_waiting_user,
        Shown::PerUser,
    ),
    (
        "look-ups answered 202 at once (not held)",
        "",
        |f| f.lookups_early as f64,
        Shown::Count,
    ),
];

type LatencyOf = fn(&CrowdFigures) -> Option<&Latency>;

fn click(f: &CrowdFigures) -> Option<&Latency> {
    Some(&f.latency_click)
}

fn knows(f: &CrowdFigures) -> Option<&Latency> {
    Some(&f.knows)
}

fn text(v: Option<f64>, shown: Shown) -> String {
    match (v, shown) {
        (Some(v), Shown::PerUser) => grouped(v, 2),
        (v, Shown::Seconds) => num(v, "s"),
        (v, _) => num(v, ""),
    }
}

/// The rows of every mode that ran a crowd step, this build's or the
/// baseline's.
pub fn crowd_rows(runs: &Runs) -> anyhow::Result<Vec<CrowdRow>> {
    let mut out = vec![];
    for m in runs.modes() {
        if !runs.has(m, AFTER) && !runs.has(m, BEFORE) {
            continue;
        }
        let before: Vec<CrowdFigures> = runs.ok(m, BEFORE)?;
        let after: Vec<CrowdFigures> = runs.ok(m, AFTER)?;
        let row = |figure: &str, goal: &str| CrowdRow {
            mode: m.into(),
            figure: figure.into(),
            goal: goal.into(),
            ..CrowdRow::default()
        };
        for (figure, goal, of, shown) in FIGURES {
            let (b, a) = (median(before.iter().map(of)), median(after.iter().map(of)));
            out.push(CrowdRow {
                before: b,
                after: a,
                before_text: text(b, shown),
                after_text: text(a, shown),
                ..row(figure, goal)
            });
        }
        for (figure, latency) in [
            ("click p50 / p99", click as LatencyOf),
            (
                "user knowing the result, p50 / p99 after the first click",
                knows,
            ),
        ] {
            let (b, a) = (percentiles(&before, latency), percentiles(&after, latency));
            out.push(CrowdRow {
                before: b[1],
                after: a[1],
                before_text: latency_text(&b[..2]),
                after_text: latency_text(&a[..2]),
                ..row(figure, "")
            });
        }
        let passed = |kind: &str| {
            let (bad, n) = runs.failed(m, kind);
            if n == 0 {
                return (None, "n/a".to_owned());
            }
            let mut t = format!("{} of {n}", n - bad);
            for r in runs.of(m, kind).filter(|r| !r.status.ok) {
                let why = r
                    .status
                    .audit
                    .as_ref()
                    .and_then(|a| a.violations.first().cloned())
                    .or_else(|| r.status.error.clone())
                    .unwrap_or_else(|| "refused requests".into());
                t.push_str(&format!("; run {}: {why}", r.line.run));
            }
            (Some((n - bad) as f64), t)
        };
        let ((before, before_text), (after, after_text)) = (passed(BEFORE), passed(AFTER));
        out.push(CrowdRow {
            before,
            after,
            before_text,
            after_text,
            ..row("runs passed (invariant audit, nothing refused)", "all")
        });
    }
    Ok(out)
}

/// The crowd table, with what was run; empty without crowd rows.
pub fn crowd_markdown(rows: &[CrowdRow], runs: &Runs, c: &Config) -> String {
    if rows.is_empty() {
        return String::new();
    }
    // The workload as the steps printed it: every run of them is the same.
    let workload = runs
        .steps
        .iter()
        .filter(|r| r.line.kind == AFTER || r.line.kind == BEFORE)
        .find_map(|r| serde_json::from_value::<CrowdFigures>(r.line.result.clone()).ok());
    let mut md = String::from("\n### Crowd: the door before and after\n\n");
    if let Some(w) = workload {
        md.push_str(&format!(
            "{} users click {} times each on one coupon of {} (all clicks shuffled, c={}); \
             every user with a `202` asks for the result of that first one until told, {} \
             (`waitMs={}`, at most {} look-ups in flight; a `202` back before half of that \
             means an api that does not hold the call, and the client pauses 1 s). MySQL \
             statements are the server's `Com_select` and `Com_insert` over the whole phase, \
             clicks and waiting, per user. ",
            grouped(w.users as f64, 0),
            w.clicks_per_user,
            grouped(w.stock as f64, 0),
            w.concurrency,
            if w.wait_after_clicks {
                "once every click is answered"
            } else {
                "from the moment the `202` came, while the crowd goes on clicking"
            },
            grouped(w.wait_ms as f64, 0),
            grouped(w.waiters as f64, 0),
        ));
    }
    let before = match &c.before {
        Some(label) => format!("before: {label}"),
        None => "before (not run: `scripts/bench.sh --before REF`)".into(),
    };
    md.push_str(&format!(
        "Medians of the runs that passed.\n\n\
         | queue | figure | {} | after: this build | goal |\n|---|---|---|---|---|\n",
        cell(&before)
    ));
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.mode,
            cell(&r.figure),
            cell(&r.before_text),
            cell(&r.after_text),
            r.goal
        ));
    }
    md
}
