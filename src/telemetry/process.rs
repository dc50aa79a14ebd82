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
        }
    }
}
