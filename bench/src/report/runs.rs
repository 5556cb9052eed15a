//! The lines of a benchmark, grouped by step, and their medians.

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::MODES;
use crate::figures::{Line, Status};
use crate::stats::Latency;

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

    pub(super) fn of<'a>(
        &'a self,
        mode: &'a str,
        kind: &'a str,
    ) -> impl Iterator<Item = &'a Recorded> {
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

    pub(super) fn has(&self, mode: &str, kind: &str) -> bool {
        self.of(mode, kind).next().is_some()
    }

    pub(super) fn modes(&self) -> Vec<&'static str> {
        MODES
            .into_iter()
            .filter(|m| self.steps.iter().any(|r| r.line.mode == *m))
            .collect()
    }

    pub(super) fn runs(&self) -> u32 {
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

pub(super) fn percentiles<T>(runs: &[T], of: impl Fn(&T) -> Option<&Latency>) -> Percentiles {
    [
        median(runs.iter().filter_map(&of).map(|l| l.p50_ms)),
        median(runs.iter().filter_map(&of).map(|l| l.p99_ms)),
        median(runs.iter().filter_map(&of).map(|l| l.p999_ms)),
    ]
}
