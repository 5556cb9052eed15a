//! CPU time of a process, read from `/proc/PID/stat`: what a server spent on
//! the calls, the figure that does not move with the machine's speed the way
//! requests per second do.

use anyhow::Context;

/// User + system CPU seconds of process `pid` (all its threads) so far.
pub fn seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    ticks(&stat)
        .map(|t| t as f64 / clock_ticks_per_second())
        .with_context(|| format!("{path} has no utime and stime"))
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command
/// name (field 2, in parentheses) may hold spaces, so fields are counted
/// from its closing parenthesis.
fn ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_are_counted_after_the_command_name() {
        let stat = "4242 (tokio runtime) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 56 0 0 20 0 9 0";
        assert_eq!(ticks(stat), Some(1290));
        assert_eq!(ticks("4242 (x"), None);
    }

    #[test]
    fn this_process_has_spent_some_cpu() {
        let s = seconds(std::process::id()).unwrap();
        assert!(s >= 0.0);
        assert!(seconds(u32::MAX).is_err());
    }
}
