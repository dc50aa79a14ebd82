//! This process's stable name among replicas: the name of its consumer in
//! each Redis Streams group, so that a restarted process is recognised as
//! the one that held its pending entries and takes them back at once.
//!
//! Configured as `instance_id`; when empty it is the host name and a short
//! hash of the data directory, which is stable across restarts of one
//! container or one service unit, and differs between two processes on one
//! host as long as each has its own data directory (as it must).

use std::path::Path;

use sha2::{Digest, Sha256};

/// This process's instance id as a shared resource
/// ([`crate::service::Resources`]): what services that lease rows to
/// themselves (the notification senders) name the holder by, so a
/// restarted process takes back what it held at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceId(pub String);

/// The configured id, or one derived from the host name and `data_dir`.
pub fn instance_id(configured: &str, data_dir: &Path) -> String {
    if !configured.trim().is_empty() {
        return configured.trim().to_owned();
    }
    let host = host_name().unwrap_or_else(|| "stageworks".to_owned());
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let digest = Sha256::digest(dir.to_string_lossy().as_bytes());
    format!("{host}-{}", &hex::encode(digest)[..8])
}

fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_id_wins() {
        assert_eq!(instance_id(" replica-1 ", Path::new("/tmp")), "replica-1");
    }

    #[test]
    fn derived_ids_are_stable_per_directory_and_differ_between_directories() {
        let a = instance_id("", Path::new("/srv/a"));
        assert_eq!(a, instance_id("", Path::new("/srv/a")), "stable");
        assert_ne!(a, instance_id("", Path::new("/srv/b")), "one per data dir");
    }
}
