//! The tables as markdown.

use super::figure::Figure;
use super::Config;

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
pub(super) fn num(v: Option<f64>, unit: &str) -> String {
    let Some(v) = v else {
        return "n/a".into();
    };
    match unit {
        "ms" if v < 100.0 => format!("{} ms", grouped(v, 1)),
        "ms" => format!("{} ms", grouped(v, 0)),
        "MB" => format!("{} MB", grouped(v, 0)),
        "s" => format!("{} s", grouped(v, 2)),
        "µs" => format!("{} µs", grouped(v, 1)),
        _ => format!("{}{unit}", grouped(v, 0)),
    }
}

pub(super) fn latency_text(latency: &[Option<f64>]) -> String {
    latency
        .iter()
        .map(|v| num(*v, "ms"))
        .collect::<Vec<_>>()
        .join(" / ")
}

pub(super) fn value_text(f: &Figure) -> String {
    if let Some(text) = &f.text {
        return text.clone();
    }
    match &f.latency {
        Some(latency) if f.unit == "ms" => latency_text(latency),
        _ if ["ms", "MB", "s", "µs"].contains(&f.unit.as_str()) => num(f.value, &f.unit),
        _ => num(f.value, ""),
    }
}

pub(super) fn ceiling_text(f: &Figure) -> String {
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

pub(super) fn ratio_text(ratio: Option<f64>) -> String {
    match ratio {
        None => String::new(),
        Some(r) if r < 10.0 => format!("{r:.2}"),
        Some(r) => format!("{}×", grouped(r, 0)),
    }
}

/// A table cell: a `|` in the text would end it.
pub(super) fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The README's summary: the headline figures, with their ceilings and
/// goals.
pub fn summary_markdown(figures: &[Figure], runs: u32, date: &str) -> String {
    let mut md = format!(
        "Benchmark of {date}, medians of {runs} run(s); every figure beside its ceiling from \
         the same run ([all figures](docs/performance.md#latest-run)).\n\n\
         | queue | figure | value | ceiling (same run) | ratio | goal | met |\n\
         |---|---|---|---|---|---|---|\n"
    );
    for f in figures.iter().filter(|f| f.headline) {
        md.push_str(&row(f));
    }
    md
}

/// One row of a table.
fn row(f: &Figure) -> String {
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
    format!(
        "| {mode} | {} | {} | {} | {} | {} | {met} |\n",
        cell(&figure),
        cell(&value_text(f)),
        cell(&ceiling_text(f)),
        ratio_text(f.ratio),
        f.target.as_deref().unwrap_or(""),
    )
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
        md.push_str(&row(f));
    }
    md
}
