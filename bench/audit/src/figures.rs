//! Figures: nearest-rank percentiles of measured latencies, quantiles of a
//! Prometheus histogram between two scrapes (as `histogram_quantile` over
//! a range computes them), counters summed over their labels, and a
//! process's resident memory from `/proc`.

use std::time::Duration;

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

/// The value of a sample line whose name is `name` and whose labels
/// contain every one of `labels` (`key="value"`).
fn samples<'a>(
    text: &'a str,
    name: &'a str,
    labels: &'a [&'a str],
) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?;
        let (labelled, value) = rest.rsplit_once(' ')?;
        if !(labelled.is_empty() || labelled.starts_with('{')) {
            return None; // a longer metric name sharing the prefix
        }
        if !labels.iter().all(|l| labelled.contains(l)) {
            return None;
        }
        Some((labelled, value.parse().ok()?))
    })
}

/// A counter summed over every series carrying `labels`.
pub fn counter_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    samples(text, name, labels).map(|(_, v)| v).sum()
}

/// A histogram's cumulative bucket counts by upper bound (`+Inf` last).
fn buckets(text: &str, name: &str, labels: &[&str]) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut found: Vec<(f64, f64)> = samples(text, &bucket, labels)
        .filter_map(|(labelled, count)| {
            let le = labelled.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((bound, count))
        })
        .collect();
    found.sort_by(|a, b| a.0.total_cmp(&b.0));
    found
}

/// The `q` quantile of what a histogram recorded between the scrapes
/// `before` and `after`, interpolated linearly inside its bucket (as
/// Prometheus' `histogram_quantile` does); `None` if nothing was recorded.
pub fn histogram_quantile(
    before: &str,
    after: &str,
    name: &str,
    labels: &[&str],
    q: f64,
) -> Option<(f64, u64)> {
    let earlier = buckets(before, name, labels);
    let later = buckets(after, name, labels);
    let delta: Vec<(f64, f64)> = later
        .iter()
        .map(|&(bound, count)| {
            let was = earlier
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0.0, |(_, c)| *c);
            (bound, count - was)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in &delta {
        if count >= rank {
            if bound.is_infinite() {
                return Some((lower.0, total as u64)); // past the largest bound
            }
            let inside = count - lower.1;
            let fraction = if inside > 0.0 {
                (rank - lower.1) / inside
            } else {
                1.0
            };
            return Some((lower.0 + (bound - lower.0) * fraction, total as u64));
        }
        lower = (bound, count);
    }
    None
}

/// A process's resident set (`VmRSS`) in bytes; `None` once it is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "lag_bucket{subscriber=\"a\",le=\"0.1\"} 10\n\
        lag_bucket{subscriber=\"a\",le=\"1\"} 10\n\
        lag_bucket{subscriber=\"a\",le=\"+Inf\"} 10\n";
    const AFTER: &str = "lag_bucket{subscriber=\"a\",le=\"0.1\"} 60\n\
        lag_bucket{subscriber=\"a\",le=\"1\"} 110\n\
        lag_bucket{subscriber=\"a\",le=\"+Inf\"} 110\n\
        lag_bucket{subscriber=\"b\",le=\"+Inf\"} 5\n";

    #[test]
    fn a_quantile_counts_only_what_was_recorded_between_the_scrapes() {
        // 100 new observations: 50 up to 0.1 s, 50 in (0.1, 1].
        let (p50, n) =
            histogram_quantile(BEFORE, AFTER, "lag", &["subscriber=\"a\""], 0.5).expect("recorded");
        assert_eq!(n, 100);
        assert!((p50 - 0.1).abs() < 1e-9, "{p50}");
        let (p99, _) = histogram_quantile(BEFORE, AFTER, "lag", &["subscriber=\"a\""], 0.99)
            .expect("recorded");
        assert!((p99 - (0.1 + 0.9 * 0.98)).abs() < 1e-9, "{p99}");
    }

    #[test]
    fn nothing_recorded_has_no_quantile() {
        assert!(histogram_quantile(BEFORE, BEFORE, "lag", &["subscriber=\"a\""], 0.99).is_none());
    }

    #[test]
    fn counters_sum_over_their_series_and_skip_longer_names() {
        let text = "x_total{t=\"a\"} 2\nx_total{t=\"b\"} 3\nx_total_more 7\n";
        assert_eq!(counter_sum(text, "x_total", &[]), 5.0);
        assert_eq!(counter_sum(text, "x_total", &["t=\"b\""]), 3.0);
    }

    #[test]
    fn nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.99), Some(99.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
