//! CPU time of a process, read from `/proc/PID/stat`: what a server spent on
//! the calls, the figure that does not move with the machine's speed the way
//! requests per second do.

use std::collections::BTreeMap;
use std::str::FromStr;

use anyhow::Context;

/// User + system CPU seconds of process `pid` (all its threads) so far.
pub fn seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    ticks(&stat)
        .map(|t| t as f64 / clock_ticks_per_second())
        .with_context(|| format!("{path} has no utime and stime"))
}

/// A process whose CPU time a step measures beside the server's:
/// `NAME=PID` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPid {
    pub name: String,
    pub pid: u32,
}

impl FromStr for NamedPid {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, pid) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not NAME=PID"))?;
        let pid = pid
            .parse()
            .map_err(|_| format!("{s:?}: {pid:?} is not a process id"))?;
        if name.is_empty() {
            return Err(format!("{s:?} has no name"));
        }
        if RESERVED.contains(&name) {
            return Err(format!(
                "{s:?}: {name:?} is the name of the step's server or of this load generator"
            ));
        }
        Ok(Self {
            name: name.into(),
            pid,
        })
    }
}

/// Names a step gives itself: its server (`--cpu-pid`) and this process.
const RESERVED: [&str; 2] = ["server", "loadgen"];

/// The CPU seconds so far of every process of `named` that can be read,
/// and of this one (`loadgen`). One that cannot (it ended, or the pid is
/// wrong) is left out with a warning: the step's own figures do not
/// depend on it.
pub fn snapshot(named: &[NamedPid]) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for p in named {
        match seconds(p.pid) {
            Ok(s) => {
                out.insert(p.name.clone(), s);
            }
            Err(e) => eprintln!("warning: {} (pid {}) left out: {e:#}", p.name, p.pid),
        }
    }
    out.insert("loadgen".into(), seconds(std::process::id())?);
    Ok(out)
}

/// What each process spent between two snapshots; a process missing from
/// either is left out.
pub fn spent(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(name, a)| Some((name.clone(), a - before.get(name)?)))
        .collect()
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
    fn a_named_pid_is_name_equals_pid() {
        assert_eq!(
            "redis=42".parse::<NamedPid>(),
            Ok(NamedPid {
                name: "redis".into(),
                pid: 42
            })
        );
        assert!("redis".parse::<NamedPid>().is_err());
        assert!("redis=x".parse::<NamedPid>().is_err());
        assert!("=42".parse::<NamedPid>().is_err());
        assert!("server=42".parse::<NamedPid>().is_err());
        assert!("loadgen=42".parse::<NamedPid>().is_err());
    }

    #[test]
    fn a_snapshot_holds_every_process_named_and_the_load_generator() {
        let me = std::process::id();
        let named = [NamedPid {
            name: "server".into(),
            pid: me,
        }];
        let before = snapshot(&named).unwrap();
        assert_eq!(before.keys().collect::<Vec<_>>(), ["loadgen", "server"]);
        let after = snapshot(&named).unwrap();
        assert!(spent(&before, &after).values().all(|s| *s >= 0.0));
        // A process that cannot be read is left out, not an error.
        let gone = [NamedPid {
            name: "gone".into(),
            pid: u32::MAX,
        }];
        assert_eq!(
            snapshot(&gone).unwrap().keys().collect::<Vec<_>>(),
            ["loadgen"]
        );
    }

    #[test]
    fn this_process_has_spent_some_cpu() {
        let s = seconds(std::process::id()).unwrap();
        assert!(s >= 0.0);
        assert!(seconds(u32::MAX).is_err());
    }
}
