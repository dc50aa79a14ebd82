//! Figures: nearest-rank percentiles of latencies, and CPU use read from
//! `/proc` (the server's threads by name and id, and the bench's own
//! process, which hosts the sinks) — what tells whether a figure is bound
//! by the cores, by one thread (SQLite's writer connection) or by neither.

use std::collections::HashMap;
use std::fs;
use std::time::{Duration, Instant};

/// `p` (0..=1) of sorted milliseconds, nearest rank; `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Milliseconds, sorted.
pub fn sorted_ms(durations: impl IntoIterator<Item = Duration>) -> Vec<f64> {
    let mut ms: Vec<f64> = durations
        .into_iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

/// Clock ticks a second of `/proc/*/stat`'s times (USER_HZ: 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU ticks spent so far: per thread of the server (by id, with its
/// name), and the whole bench process.
pub struct CpuSnapshot {
    at: Instant,
    threads: HashMap<u32, (String, u64)>,
    own: u64,
    /// The whole machine's busy ticks (all cores), from `/proc/stat`.
    machine: u64,
}

/// Busy ticks of all cores: user, nice, system, irq, softirq, steal.
fn machine_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or_default();
    let fields: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| fields.get(i))
        .sum()
}

/// utime + stime and the name, from a `stat` file.
fn ticks_of(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15 (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

impl CpuSnapshot {
    pub fn take(server_pid: Option<u32>) -> Self {
        let mut threads = HashMap::new();
        if let Some(pid) = server_pid {
            if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
                for task in tasks.flatten() {
                    let tid = task.file_name().to_string_lossy().parse().unwrap_or(0);
                    if let Some(t) = fs::read_to_string(task.path().join("stat"))
                        .ok()
                        .and_then(|s| ticks_of(&s))
                    {
                        threads.insert(tid, t);
                    }
                }
            }
        }
        let own = fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| ticks_of(&s))
            .map_or(0, |(_, t)| t);
        Self {
            at: Instant::now(),
            threads,
            own,
            machine: machine_ticks(),
        }
    }

    /// Since `earlier`: the server's CPU % (100 = one core), its busiest
    /// threads, and the bench's own CPU %.
    pub fn since(&self, earlier: &CpuSnapshot) -> CpuUse {
        let secs = (self.at - earlier.at).as_secs_f64().max(1e-9);
        let pct = |ticks: u64| ticks as f64 / TICKS / secs * 100.0;
        let mut busy: Vec<(String, f64)> = self
            .threads
            .iter()
            .map(|(tid, (name, t))| {
                let before = earlier.threads.get(tid).map_or(0, |(_, b)| *b);
                (format!("{name}/{tid}"), pct(t.saturating_sub(before)))
            })
            .collect();
        busy.sort_by(|a, b| b.1.total_cmp(&a.1));
        CpuUse {
            server: busy.iter().map(|(_, p)| p).sum(),
            busiest: busy.into_iter().take(3).collect(),
            bench: pct(self.own.saturating_sub(earlier.own)),
            machine: pct(self.machine.saturating_sub(earlier.machine)),
        }
    }
}

pub struct CpuUse {
    pub server: f64,
    pub busiest: Vec<(String, f64)>,
    pub bench: f64,
    /// Every process's, out of 100 × the cores.
    pub machine: f64,
}

impl CpuUse {
    pub fn describe(&self) -> String {
        let threads: Vec<String> = self
            .busiest
            .iter()
            .map(|(name, p)| format!("{name} {p:.0}%"))
            .collect();
        format!(
            "server {:.0}% (busiest threads: {}), bench+sinks {:.0}%, machine {:.0}% of {}",
            self.server,
            threads.join(", "),
            self.bench,
            self.machine,
            100 * std::thread::available_parallelism().map_or(1, |n| n.get())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn reads_a_stat_line() {
        let line = "42 (sqlx-sqlite-w) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        assert_eq!(ticks_of(line), Some(("sqlx-sqlite-w".into(), 300)));
    }
}
