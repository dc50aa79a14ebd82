//! Process and system figures for `/health` and `/metrics`, read from `/proc`
//! (Linux), and the process's descriptor limit (`getrlimit`, Unix).
//! Elsewhere they read as absent rather than failing.

/// The 1, 5 and 15 minute load averages.
pub fn load_avg() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// Resident set size in bytes.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Open file descriptors.
pub fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// CPU time (user + system) the process has used, in seconds.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields = stat_fields(&stat)?;
    // utime and stime: fields 14 and 15, the 12th and 13th after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks()?)
}

/// When the process started, in seconds since the Unix epoch.
pub fn start_time_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // starttime: field 22, in clock ticks after boot.
    let started: u64 = stat_fields(&stat)?.get(19)?.parse().ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(boot as f64 + started as f64 / clock_ticks()?)
}

/// The fields of `/proc/self/stat` after the command name (which may hold
/// spaces and parentheses, so it is skipped up to its last `)`): the first
/// is field 3, the state.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    Some(after_name.split_whitespace().collect())
}

fn clock_ticks() -> Option<f64> {
    #[cfg(unix)]
    {
        Some(rustix::param::clock_ticks_per_second() as f64).filter(|&t| t > 0.0)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The process collector's families in the text format, named as
/// Prometheus' client libraries name them. Written here rather than through
/// the `metrics` facade because `process_cpu_seconds_total` is a counter
/// of fractional seconds, which the facade's integer counters cannot hold.
pub fn exposition() -> String {
    let mut text = String::new();
    let mut family = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(value) = value {
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
            ));
        }
    };
    family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds",
        cpu_seconds(),
    );
    family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch in seconds",
        start_time_seconds(),
    );
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes",
        rss_bytes().map(|b| b as f64),
    );
    family(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors",
        open_fds().map(|n| n as f64),
    );
    family(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors",
        descriptor_limit()
            .filter(|&l| l != u64::MAX)
            .map(|l| l as f64),
    );
    text
}

/// The soft limit on open file descriptors (`RLIMIT_NOFILE`): what
/// `accept` runs into ("too many open files"). `Some(u64::MAX)` when
/// unlimited; `None` where there is no such limit to read.
pub fn descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        Some(limit.current.unwrap_or(u64::MAX))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn figures_are_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(super::rss_bytes().unwrap() > 0);
            assert!(super::open_fds().unwrap() > 0);
            assert!(super::load_avg().is_some());
            assert!(super::descriptor_limit().is_some_and(|limit| limit > 3));
            assert!(super::cpu_seconds().is_some_and(|s| s >= 0.0));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            let started = super::start_time_seconds().unwrap();
            assert!(
                started <= now + 1.0 && started > now - 86_400.0,
                "{started} vs {now}"
            );
        }
    }
}
