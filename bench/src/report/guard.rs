//! The regression guard: the api's CPU per accepted request, as a multiple
//! of the bare server's CPU per answer in the same run, against a stored
//! reference (`bench/reference.json`). A multiple, not microseconds: it
//! moves little with the machine's speed, and the bare server is measured
//! in every run.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::figure::{Figure, API_CPU};

/// The name of the guard's rows.
pub const GUARD: &str =
    "regression guard: api CPU per accepted request ÷ bare server's, against bench/reference.json";

/// How far over the reference the multiple may go before the guard warns.
pub const TOLERANCE: f64 = 0.15;

/// What `--save-reference` writes and the guard reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    /// When and where the reference was measured, in words.
    pub measured: String,
    /// Per queue mode: the api's CPU per accepted request ÷ the bare
    /// server's per answer.
    pub ratio: BTreeMap<String, f64>,
    /// Per queue mode: the api's CPU per accepted request (µs), for the
    /// reader; the guard compares the ratios.
    pub api_us: BTreeMap<String, f64>,
}

impl Reference {
    pub fn load(path: &Path) -> anyhow::Result<Option<Self>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("reading {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// This run's multiples, from its figures; none when no mode has one.
    pub fn of(figures: &[Figure], measured: String) -> Option<Self> {
        let mut ratio = BTreeMap::new();
        let mut api_us = BTreeMap::new();
        for f in figures.iter().filter(|f| f.figure == API_CPU) {
            if let (Some(r), Some(us)) = (f.ratio, f.value) {
                ratio.insert(f.mode.clone(), r);
                api_us.insert(f.mode.clone(), us);
            }
        }
        (!ratio.is_empty()).then_some(Self {
            measured,
            ratio,
            api_us,
        })
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// One row per mode that both this run and the reference measured: this
    /// run's multiple beside the reference's, met while at most
    /// [`TOLERANCE`] over it.
    pub fn check(&self, figures: &[Figure]) -> Vec<Figure> {
        figures
            .iter()
            .filter(|f| f.figure == API_CPU)
            .filter_map(|f| {
                let reference = *self.ratio.get(&f.mode)?;
                let mut row = Figure::new(&f.mode, GUARD, f.ratio, "×")
                    .ceiling(Some(reference), "reference")
                    .target(&format!("≤ +{:.0} %", TOLERANCE * 100.0), |_, r| {
                        r.is_some_and(|r| r <= 1.0 + TOLERANCE)
                    });
                row.text = f.ratio.map(|r| format!("{r:.2}×"));
                row.ceiling_text = Some(format!("{reference:.2}× ({})", self.measured));
                Some(row.headline())
            })
            .collect()
    }
}

/// Warnings for the rows of [`Reference::check`] that are over the limit.
pub fn warnings(rows: &[Figure]) -> Vec<String> {
    rows.iter()
        .filter(|r| r.met == Some(false))
        .map(|r| {
            format!(
                "warning: {} mode: the api's CPU per accepted request is {} the bare server's \
                 per answer, {:+.0} % against the reference {}",
                r.mode,
                r.text.as_deref().unwrap_or("n/a"),
                (r.ratio.unwrap_or(1.0) - 1.0) * 100.0,
                r.ceiling_text.as_deref().unwrap_or(""),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_cpu(mode: &str, us: f64, bare: f64) -> Figure {
        Figure::new(mode, API_CPU, Some(us), "µs").ceiling(Some(bare), "bare HTTP")
    }

    #[test]
    fn a_multiple_over_the_reference_by_more_than_the_tolerance_warns() {
        let run = vec![api_cpu("redis", 30.0, 12.0), api_cpu("kafka", 80.0, 12.0)];
        let reference = Reference::of(&run, "test".into()).unwrap();
        assert_eq!(reference.ratio["redis"], 2.5);

        // Slower machine, same multiple: no warning.
        let same = vec![api_cpu("redis", 45.0, 18.0), api_cpu("kafka", 120.0, 18.0)];
        let rows = reference.check(&same);
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.met == Some(true)));
        assert!(warnings(&rows).is_empty());

        // Redis 20 % over (3.0× against 2.5×), Kafka 10 % over.
        let worse = vec![api_cpu("redis", 36.0, 12.0), api_cpu("kafka", 88.0, 12.0)];
        let rows = reference.check(&worse);
        let w = warnings(&rows);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("redis mode") && w[0].contains("+20 %"),
            "{}",
            w[0]
        );
    }

    #[test]
    fn a_reference_round_trips_and_a_missing_one_is_none() {
        let dir = std::env::temp_dir().join(format!("loadgen-guard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("reference.json");
        assert!(Reference::load(&path).unwrap().is_none());
        let r = Reference::of(&[api_cpu("redis", 30.0, 12.0)], "test".into()).unwrap();
        r.save(&path).unwrap();
        let back = Reference::load(&path).unwrap().unwrap();
        assert_eq!(back.ratio, r.ratio);
        assert!(Reference::of(&[], "test".into()).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
