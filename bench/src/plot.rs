//! `loadgen plot`: accepted, sold-out and processed requests per second over
//! time, one panel per queue mode, as SVG.

use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::figures::Timeline;

#[derive(clap::Args)]
pub struct PlotArgs {
    /// The results.json of a bench run.
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
}

/// The part of a results.json this reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Results {
    timelines: Vec<Panel>,
}

/// One panel: a sale's timeline under its title.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Panel {
    pub title: String,
    #[serde(flatten)]
    pub timeline: Timeline,
}

pub fn plot(args: &PlotArgs) -> anyhow::Result<()> {
    let results: Results =
        serde_json::from_slice(&std::fs::read(&args.input).context("reading --input")?)?;
    draw(&results.timelines, &args.out)
}

/// Draws the panels one above the other into the SVG file `out`.
pub fn draw(panels: &[Panel], out: &Path) -> anyhow::Result<()> {
    let n = panels.len().max(1);
    let root = SVGBackend::new(out, (960, 320 * n as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    for (area, panel) in root.split_evenly((n, 1)).iter().zip(panels) {
        let t = &panel.timeline;
        let series = [
            ("accepted (202/s)", &t.accepted, BLUE),
            ("sold out (409/s)", &t.sold_out, RGBColor(230, 140, 0)),
            ("processed (results/s)", &t.processed, RGBColor(0, 150, 60)),
        ];
        let len = series.iter().map(|s| s.1.len()).max().unwrap_or(1).max(1);
        let x_max = len as f64 * t.bucket_seconds;
        let y_max = series
            .iter()
            .flat_map(|s| s.1.iter().copied())
            .fold(1.0, f64::max)
            * 1.35;
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the first request")
            .y_desc("per second")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()?;
        for (label, values, color) in series {
            let points = values
                .iter()
                .enumerate()
                .map(|(i, v)| ((i as f64 + 0.5) * t.bucket_seconds, *v));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
