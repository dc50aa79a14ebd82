//! Reads the per-route HTTP figures back from the Prometheus recorder's text
//! exposition (the recorder keeps no other public view of its values):
//! `http_requests_total` and `http_request_duration_seconds_bucket`, summed
//! over statuses per `METHOD route`. Parsed once per history sample.

use std::collections::BTreeMap;

/// One route's cumulative figures at one render.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteTotals {
    pub requests: f64,
    /// Answers with a 5xx status.
    pub errors: f64,
    /// Cumulative bucket counts by upper bound (`+Inf` as infinity), sorted.
    pub buckets: Vec<(f64, f64)>,
}

/// The routes' totals in `text`, keyed `METHOD route`.
pub fn route_totals(text: &str) -> BTreeMap<String, RouteTotals> {
    let mut routes: BTreeMap<String, RouteTotals> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("http_requests_total{") {
            if let Some((labels, value)) = split_sample(rest) {
                let Some(key) = route_key(&labels) else {
                    continue;
                };
                let totals = routes.entry(key).or_default();
                totals.requests += value;
                if label(&labels, "status").is_some_and(|s| s.starts_with('5')) {
                    totals.errors += value;
                }
            }
        } else if let Some(rest) = line.strip_prefix("http_request_duration_seconds_bucket{") {
            if let Some((labels, value)) = split_sample(rest) {
                let (Some(key), Some(le)) = (route_key(&labels), label(&labels, "le")) else {
                    continue;
                };
                let Some(bound) = parse_bound(le) else {
                    continue;
                };
                add_bucket(&mut routes.entry(key).or_default().buckets, bound, value);
            }
        }
    }
    routes
}

fn add_bucket(buckets: &mut Vec<(f64, f64)>, bound: f64, count: f64) {
    match buckets.binary_search_by(|(b, _)| b.total_cmp(&bound)) {
        Ok(i) => buckets[i].1 += count,
        Err(i) => buckets.insert(i, (bound, count)),
    }
}

fn parse_bound(le: &str) -> Option<f64> {
    match le {
        "+Inf" => Some(f64::INFINITY),
        other => other.parse().ok(),
    }
}

fn route_key(labels: &[(String, String)]) -> Option<String> {
    Some(format!(
        "{} {}",
        label(labels, "method")?,
        label(labels, "route")?
    ))
}

fn label<'a>(labels: &'a [(String, String)], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `a="x",b="y"} 12` (after the `{`): the labels and the value.
fn split_sample(rest: &str) -> Option<(Vec<(String, String)>, f64)> {
    let mut labels = Vec::new();
    let mut chars = rest.char_indices().peekable();
    loop {
        // A label name up to `=`, or the closing brace.
        let start = chars.peek()?.0;
        if rest[start..].starts_with('}') {
            let value = rest[start + 1..].split_whitespace().next()?.parse().ok()?;
            return Some((labels, value));
        }
        let eq = rest[start..].find("=\"")? + start;
        let name = rest[start..eq].trim_start_matches(',').to_owned();
        while chars.peek().is_some_and(|(i, _)| *i <= eq + 1) {
            chars.next();
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, '"') => break,
                (_, c) => value.push(c),
            }
        }
        if chars.peek().is_some_and(|(_, c)| *c == ',') {
            chars.next();
        }
        labels.push((name, value));
    }
}

/// The `q` quantile of what was observed between two readings of the same
/// cumulative buckets, interpolated within its bucket as Prometheus'
/// `histogram_quantile` does; `None` when nothing was observed.
pub fn quantile_between(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|&(bound, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0.0, |(_, c)| *c);
            (bound, (count - earlier).max(0.0))
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
                // Beyond the last finite bound: say that bound.
                return Some(lower.0);
            }
            let within = count - lower.1;
            let fraction = if within > 0.0 {
                (rank - lower.1) / within
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * fraction);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE http_requests_total counter
http_requests_total{method="GET",route="/api/v1/orders/{id}",status="200"} 90
http_requests_total{method="GET",route="/api/v1/orders/{id}",status="503"} 10
http_requests_total{method="POST",route="/api/v1/orders",status="201"} 5
http_request_duration_seconds_bucket{method="GET",route="/api/v1/orders/{id}",status="200",le="0.001"} 50
http_request_duration_seconds_bucket{method="GET",route="/api/v1/orders/{id}",status="200",le="0.01"} 90
http_request_duration_seconds_bucket{method="GET",route="/api/v1/orders/{id}",status="200",le="+Inf"} 90
http_request_duration_seconds_bucket{method="GET",route="/api/v1/orders/{id}",status="503",le="0.001"} 10
http_request_duration_seconds_bucket{method="GET",route="/api/v1/orders/{id}",status="503",le="0.01"} 10
http_request_duration_seconds_bucket{method="GET",route="/api/v1/orders/{id}",status="503",le="+Inf"} 10
"#;

    #[test]
    fn totals_are_summed_over_statuses() {
        let routes = route_totals(TEXT);
        let get = &routes["GET /api/v1/orders/{id}"];
        assert_eq!(get.requests, 100.0);
        assert_eq!(get.errors, 10.0);
        assert_eq!(
            get.buckets,
            vec![(0.001, 60.0), (0.01, 100.0), (f64::INFINITY, 100.0)]
        );
        assert_eq!(routes["POST /api/v1/orders"].requests, 5.0);
    }

    #[test]
    fn the_quantile_is_interpolated_over_the_interval() {
        let before = [(0.001, 10.0), (0.01, 10.0), (f64::INFINITY, 10.0)];
        let after = [(0.001, 60.0), (0.01, 110.0), (f64::INFINITY, 110.0)];
        // 100 new observations: 50 up to 1 ms, 50 in (1, 10] ms.
        let p99 = quantile_between(&before, &after, 0.99).unwrap();
        assert!((p99 - (0.001 + 0.009 * 0.98)).abs() < 1e-9, "{p99}");
        assert_eq!(quantile_between(&after, &after, 0.99), None);
    }

    #[test]
    fn escaped_label_values_are_read() {
        let (labels, value) = split_sample(r#"a="x\"y",b="z"} 3"#).unwrap();
        assert_eq!(labels[0], ("a".into(), "x\"y".into()));
        assert_eq!(labels[1], ("b".into(), "z".into()));
        assert_eq!(value, 3.0);
    }
}
