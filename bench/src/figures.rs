//! The figures every measuring subcommand prints, and the line of
//! `results.jsonl` that carries them: typed once here, written by the
//! subcommands and read back by `loadgen report`.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::stats::Latency;

/// Figures a subcommand prints; `ok` is false when the run failed (an
/// invariant broke, or requests were refused).
pub trait Figures: Serialize {
    fn ok(&self) -> bool;
}

/// Which step of which run a line belongs to. Given to a measuring
/// subcommand, its figures are printed wrapped in a line of `results.jsonl`.
/// The three go together; they are not `required` so that a subcommand can
/// flatten an `Option<Step>` (clap would otherwise ask for them always).
#[derive(Debug, Clone, clap::Args)]
pub struct Step {
    /// Run number (1, 2, ...).
    #[arg(long, required = false, requires_all = ["mode", "kind"])]
    pub run: u32,
    /// Queue mode of the step (`redis`, `kafka`), or `any` for a ceiling
    /// that does not depend on it.
    #[arg(long, required = false, requires_all = ["run", "kind"])]
    pub mode: String,
    /// The step (`sale`, `sale-20`, `rate`, `backlog`, `enqueue`, ...).
    #[arg(long, required = false, requires_all = ["run", "mode"])]
    pub kind: String,
}

/// One line of `results.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Line<R> {
    pub run: u32,
    pub mode: String,
    pub kind: String,
    pub result: R,
}

impl<R> Line<R> {
    pub fn new(step: &Step, result: R) -> Self {
        Self {
            run: step.run,
            mode: step.mode.clone(),
            kind: step.kind.clone(),
            result,
        }
    }
}

/// What every line says about success, whatever printed it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default)]
    pub ok: bool,
    pub error: Option<String>,
    pub audit: Option<AuditFigures>,
}

/// A step that printed no figures: the reason.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failed {
    pub ok: bool,
    pub error: String,
}

impl Failed {
    pub fn new(error: String) -> Self {
        Self { ok: false, error }
    }
}

impl Figures for Failed {
    fn ok(&self) -> bool {
        false
    }
}

/// The invariant audit of a sale's coupons (`common::audit`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditFigures {
    pub issued: i64,
    pub by_status: BTreeMap<String, usize>,
    /// Broken invariants, prefixed with the coupon id; empty when the sale
    /// is correct.
    pub violations: Vec<String>,
}

/// Events per second in fixed buckets since the first call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub bucket_seconds: f64,
    #[serde(default)]
    pub accepted: Vec<f64>,
    #[serde(default)]
    pub sold_out: Vec<f64>,
    /// Results written per second (MySQL `processed_at`); none without a
    /// database.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processed: Vec<f64>,
}

/// `loadgen sale`: the HTTP load, and for a sale against the api, its
/// results and audit. Fields a bare or backlog run does not measure are
/// `null`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SaleFigures {
    pub sent: usize,
    pub accepted: usize,
    /// `200` repeat answers: the user's pending or winning request, nothing
    /// queued (0 from an api without the repeat gate).
    #[serde(default)]
    pub repeats: usize,
    pub sold_out: usize,
    pub failed: usize,
    pub send_seconds: f64,
    /// Until the first `409`, or the whole send when none came.
    pub open_phase_seconds: f64,
    /// `202`s per second while the coupon was open.
    pub accepted_per_second: f64,
    /// From the last `202` (after the first `409`) to the end of the send.
    pub sold_out_phase_seconds: Option<f64>,
    pub sold_out_per_second: Option<f64>,
    pub answers_per_second: f64,
    pub latency_accepted: Latency,
    pub latency_sold_out: Latency,
    /// Open loop, sampled calls: until the result was readable over HTTP.
    pub request_to_result_http: Latency,
    pub timeline: Timeline,
    pub coupons: Vec<i64>,
    pub requests: usize,
    pub users: usize,
    pub offered_rate: Option<f64>,
    pub concurrency: usize,
    /// From the first call until every accepted request had its result.
    pub drain_seconds: Option<f64>,
    pub end_to_end_per_second: Option<f64>,
    /// From the first call to the last result's `processed_at`.
    pub last_result_seconds: Option<f64>,
    /// `processed_at − requested_at` of every result.
    pub request_to_result_db: Option<Latency>,
    /// CPU seconds of the process given by `--cpu-pid` over the calls.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
    /// The same in µs per `202`.
    #[serde(default)]
    pub cpu_us_per_accepted: Option<f64>,
    /// CPU seconds over the calls (`send_seconds`) of every process that
    /// shares the machine and was measured: `server` (`--cpu-pid`),
    /// `loadgen` (this process), and each `--machine-pid`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub machine_cpu: BTreeMap<String, f64>,
    pub ok: bool,
    pub audit: Option<AuditFigures>,
}

impl Figures for SaleFigures {
    fn ok(&self) -> bool {
        self.ok
    }
}

/// `loadgen crowd`: users clicking again and again on one coupon, then
/// waiting for their results; what the door let through to the queue and
/// to MySQL, per user.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrowdFigures {
    pub coupon: i64,
    pub stock: i64,
    /// Distinct users that clicked.
    pub users: usize,
    pub clicks_per_user: usize,
    pub concurrency: usize,
    /// Result look-ups in flight at most during the waiting.
    pub waiters: usize,
    /// The `waitMs` of every look-up.
    pub wait_ms: u64,
    /// Whether users started waiting once every click was answered, rather
    /// than at their first `202`.
    #[serde(default)]
    pub wait_after_clicks: bool,
    /// Issue calls sent: users × clicks.
    pub clicks: usize,
    /// `202`: queued.
    pub accepted: usize,
    /// `200` repeat answers: nothing queued.
    pub repeats: usize,
    /// `409 SOLD_OUT`.
    pub sold_out: usize,
    /// Anything else, or no answer: refused.
    pub other: usize,
    /// Users with at least one `202`: those who wait for the result of
    /// their first.
    pub users_accepted: usize,
    /// Accepted ÷ users.
    pub queue_entries_per_user: f64,
    /// Accepted ÷ users with a `202` (1.00 when the door queues a user
    /// once).
    #[serde(default)]
    pub queue_entries_per_waiting_user: f64,
    /// Rows of `coupon_issue_result` for the coupon.
    pub result_rows: usize,
    /// Result rows ÷ users (goal 1.00: at most one per user).
    pub result_rows_per_user: f64,
    /// Server-wide `Com_select` and `Com_insert` deltas (`SHOW GLOBAL
    /// STATUS`) over the clicks and the waiting, the benchmark's own
    /// queries left out.
    pub com_select: u64,
    pub com_insert: u64,
    pub selects_per_user: f64,
    pub inserts_per_user: f64,
    /// (SELECTs + INSERTs) ÷ users.
    pub statements_per_user: f64,
    /// Every click, whatever its answer.
    pub latency_click: Latency,
    /// Clicks sent in.
    pub click_seconds: f64,
    /// From the first click until the last waiting user's look-up answered
    /// `200`.
    pub last_knows_seconds: f64,
    /// From the first click until each waiting user's look-up answered
    /// `200`.
    pub knows: Latency,
    /// `GET /api/coupons/issue-requests/{id}` calls made.
    pub lookups: usize,
    /// Of them, answered `202` PENDING.
    pub lookups_pending: usize,
    /// Of those, answered before half of `waitMs`: an api that did not hold
    /// the call (the client then waited a second before asking again).
    pub lookups_early: usize,
    /// Look-ups that failed (no answer, or neither `200` nor `202`); asked
    /// again after a second.
    pub lookup_errors: usize,
    /// Look-ups ÷ users who waited.
    pub lookups_per_waiting_user: f64,
    pub ok: bool,
    pub audit: Option<AuditFigures>,
}

impl Figures for CrowdFigures {
    fn ok(&self) -> bool {
        self.ok
    }
}

/// `loadgen drain`: one worker through a backlog.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainFigures {
    pub results: usize,
    /// (results − last batch) ÷ (last − first `processed_at`).
    pub results_per_second: f64,
    pub processed_span_seconds: f64,
    pub last_batch: usize,
    pub observed_seconds: f64,
    pub ok: bool,
    pub audit: AuditFigures,
}

impl Figures for DrainFigures {
    fn ok(&self) -> bool {
        self.ok
    }
}

/// `loadgen enqueue`: the enqueue step alone.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnqueueFigures {
    pub requests: usize,
    pub concurrency: usize,
    pub failed: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub latency: Latency,
    /// The load generator's own CPU time per event sent: what the client
    /// side of an enqueue costs (for Kafka, librdkafka's threads included).
    #[serde(default)]
    pub cpu_us_per_event: Option<f64>,
    pub ok: bool,
}

impl Figures for EnqueueFigures {
    fn ok(&self) -> bool {
        self.ok
    }
}

/// `loadgen insert`: bulk INSERTs of result rows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InsertFigures {
    pub rows: usize,
    pub batch: usize,
    /// Connections inserting side by side (absent in lines from before
    /// there was a choice: one).
    #[serde(default = "one")]
    pub connections: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub ok: bool,
}

fn one() -> usize {
    1
}

impl Figures for InsertFigures {
    fn ok(&self) -> bool {
        self.ok
    }
}

/// CPU seconds (user + system) so far of the processes that share the
/// machine during a sale, and the wall clock (Unix seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuSnapshot {
    pub api: f64,
    pub worker: f64,
    pub redis: f64,
    pub mariadb: f64,
    pub broker: f64,
    /// The load generator: the children of the benchmark's shell.
    pub loadgen: f64,
    pub wall: f64,
}

impl CpuSnapshot {
    /// The processes, in the order the report lists them.
    pub const PROCESSES: [&'static str; 6] =
        ["api", "worker", "redis", "mariadb", "broker", "loadgen"];

    /// CPU seconds of one of [`Self::PROCESSES`].
    pub fn seconds(&self, process: &str) -> f64 {
        match process {
            "api" => self.api,
            "worker" => self.worker,
            "redis" => self.redis,
            "mariadb" => self.mariadb,
            "broker" => self.broker,
            "loadgen" => self.loadgen,
            _ => 0.0,
        }
    }
}

/// `api=2.5 worker=0.1 redis=0.2 mariadb=0.8 broker=0 loadgen=2.7
/// wall=1764239460.5`, as the benchmark script measures it from `/proc`;
/// every name once.
impl FromStr for CpuSnapshot {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut snapshot = Self::default();
        let mut seen = Vec::new();
        for word in s.split_whitespace() {
            let (name, value) = word
                .split_once('=')
                .ok_or_else(|| format!("{word:?} is not NAME=SECONDS"))?;
            let value: f64 = value
                .parse()
                .map_err(|_| format!("{word:?}: {value:?} is not a number"))?;
            let field = match name {
                "api" => &mut snapshot.api,
                "worker" => &mut snapshot.worker,
                "redis" => &mut snapshot.redis,
                "mariadb" => &mut snapshot.mariadb,
                "broker" => &mut snapshot.broker,
                "loadgen" => &mut snapshot.loadgen,
                "wall" => &mut snapshot.wall,
                _ => return Err(format!("unknown process {name:?}")),
            };
            if seen.contains(&name) {
                return Err(format!("{name} given twice"));
            }
            seen.push(name);
            *field = value;
        }
        if seen.len() < 7 {
            return Err(
                "every one of api, worker, redis, mariadb, broker, loadgen and wall is needed"
                    .into(),
            );
        }
        Ok(snapshot)
    }
}

/// CPU seconds before and after a sale.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuFigures {
    pub ok: bool,
    pub before: CpuSnapshot,
    pub after: CpuSnapshot,
}

impl Figures for CpuFigures {
    fn ok(&self) -> bool {
        self.ok
    }
}

/// Peak RSS (`VmHWM`) in kB.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RssFigures {
    pub ok: bool,
    /// The api at the end of the mode's steps.
    pub api_kb: u64,
    /// The api after the closed-loop sales only.
    pub api_kb_closed_loop: u64,
    /// The highest of the mode's workers.
    pub worker_kb: u64,
}

impl Figures for RssFigures {
    fn ok(&self) -> bool {
        self.ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_snapshot_needs_every_process_once() {
        let s: CpuSnapshot =
            "api=2.5 worker=0.10 redis=0.2 mariadb=0.8 broker=0 loadgen=2.7 wall=1764239460.25"
                .parse()
                .unwrap();
        assert_eq!(s.api, 2.5);
        assert_eq!(s.seconds("loadgen"), 2.7);
        assert_eq!(s.wall, 1_764_239_460.25);
        assert!("api=1 worker=1".parse::<CpuSnapshot>().is_err());
        assert!(
            "api=1 api=2 worker=1 redis=1 mariadb=1 broker=1 loadgen=1 wall=1"
                .parse::<CpuSnapshot>()
                .is_err()
        );
        assert!("api=x worker=1 redis=1 mariadb=1 broker=1 loadgen=1 wall=1"
            .parse::<CpuSnapshot>()
            .is_err());
    }
}
