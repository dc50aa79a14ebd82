//! The admin page's charts: a sampler task reads the process's figures every
//! `admin.history_every` and appends one value per series to ring buffers
//! of `admin.history_samples` (720 × 5 s: one hour). Memory is bounded:
//! at most [`MAX_SERIES`] series of `history_samples` `f32`s, plus one
//! `i64` timestamp per sample (docs/DESIGN.md, "Admin page").
//!
//! Series (`metric`, `label`): per route (`GET /api/v1/orders/{id}`):
//! `http_requests_per_second`, `http_errors_per_second` (5xx),
//! `http_p99_ms` (over the interval, from the latency histogram's buckets);
//! per service: `service_messages_per_second`, `service_queue_wait_ms`,
//! `service_queue_depth`; per subscriber: `event_lag_seconds`,
//! `event_pending`; and `process_rss_bytes`. A value not known at a sample
//! (a series that appeared later, a figure that could not be read) is NaN,
//! `null` in the JSON.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use supervision::Tree;
use time::OffsetDateTime;
use tokio::sync::watch;

use actors::events::EventBus;

use super::prometheus::{self, RouteTotals};
use crate::telemetry::process;

/// The most series kept: routes, services and subscribers are fixed sets,
/// so this is a guard, not a limit met in practice.
pub const MAX_SERIES: usize = 512;

/// A series' identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub metric: &'static str,
    pub label: String,
}

/// The rings: one timestamp per sample, one value per series and sample
/// (all rings as long as `timestamps`).
pub struct History {
    every: Duration,
    capacity: usize,
    rings: Mutex<Rings>,
}

#[derive(Default)]
struct Rings {
    timestamps: VecDeque<i64>,
    series: BTreeMap<SeriesKey, VecDeque<f32>>,
}

/// What `/admin/history` answers.
#[derive(Serialize)]
pub struct HistoryView {
    pub every_seconds: f64,
    pub capacity: usize,
    pub samples: usize,
    /// Unix milliseconds of each sample, oldest first.
    pub timestamps: Vec<i64>,
    pub series: Vec<SeriesView>,
}

#[derive(Serialize)]
pub struct SeriesView {
    pub metric: &'static str,
    pub label: String,
    pub values: Vec<Option<f32>>,
}

impl History {
    pub fn new(every: Duration, capacity: usize) -> Self {
        Self {
            every,
            capacity: capacity.max(2),
            rings: Mutex::new(Rings::default()),
        }
    }

    pub fn every(&self) -> Duration {
        self.every
    }

    /// Appends one sample (dropping the oldest past the capacity).
    pub fn push(&self, at: OffsetDateTime, values: Vec<(SeriesKey, f64)>) {
        let mut rings = self.rings.lock().unwrap_or_else(PoisonError::into_inner);
        let before = rings.timestamps.len();
        rings
            .timestamps
            .push_back((at.unix_timestamp_nanos() / 1_000_000) as i64);
        let mut values: HashMap<SeriesKey, f64> = values.into_iter().collect();
        for (key, ring) in rings.series.iter_mut() {
            ring.push_back(values.remove(key).map_or(f32::NAN, |v| v as f32));
        }
        for (key, value) in values {
            if rings.series.len() >= MAX_SERIES {
                break;
            }
            let mut ring = VecDeque::with_capacity(self.capacity);
            ring.extend(std::iter::repeat_n(f32::NAN, before));
            ring.push_back(value as f32);
            rings.series.insert(key, ring);
        }
        while rings.timestamps.len() > self.capacity {
            rings.timestamps.pop_front();
            for ring in rings.series.values_mut() {
                ring.pop_front();
            }
        }
        // A series with nothing left in the window is gone.
        rings
            .series
            .retain(|_, ring| ring.iter().any(|v| !v.is_nan()));
    }

    pub fn view(&self) -> HistoryView {
        let rings = self.rings.lock().unwrap_or_else(PoisonError::into_inner);
        HistoryView {
            every_seconds: self.every.as_secs_f64(),
            capacity: self.capacity,
            samples: rings.timestamps.len(),
            timestamps: rings.timestamps.iter().copied().collect(),
            series: rings
                .series
                .iter()
                .map(|(key, ring)| SeriesView {
                    metric: key.metric,
                    label: key.label.clone(),
                    values: ring.iter().map(|v| (!v.is_nan()).then_some(*v)).collect(),
                })
                .collect(),
        }
    }
}

/// What the sampler reads.
pub struct Sources {
    pub tree: Tree,
    pub events: EventBus,
    pub metrics: PrometheusHandle,
}

/// The cumulative figures of the previous sample, for rates.
#[derive(Default)]
struct Previous {
    at: Option<Instant>,
    routes: BTreeMap<String, RouteTotals>,
    messages: HashMap<String, u64>,
}

/// Samples until `closed` turns true (or its sender is gone).
pub fn spawn_sampler(history: Arc<History>, sources: Sources, mut closed: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(history.every());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous = Previous::default();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = closed.wait_for(|closed| *closed) => break,
            }
            let values = sample(&sources, &mut previous).await;
            history.push(OffsetDateTime::now_utc(), values);
        }
    });
}

async fn sample(sources: &Sources, previous: &mut Previous) -> Vec<(SeriesKey, f64)> {
    let now = Instant::now();
    let elapsed = previous
        .at
        .map(|at| now.duration_since(at).as_secs_f64())
        .filter(|s| *s > 0.0);
    let mut values = Vec::new();
    let routes = prometheus::route_totals(&sources.metrics.render());
    if let Some(elapsed) = elapsed {
        route_values(&previous.routes, &routes, elapsed, &mut values);
    }
    let messages = service_values(&sources.tree, &previous.messages, elapsed, &mut values);
    event_values(&sources.events, &mut values).await;
    if let Some(rss) = process::rss_bytes() {
        values.push((key("process_rss_bytes", ""), rss as f64));
    }
    *previous = Previous {
        at: Some(now),
        routes,
        messages,
    };
    values
}

fn key(metric: &'static str, label: &str) -> SeriesKey {
    SeriesKey {
        metric,
        label: label.to_owned(),
    }
}

fn route_values(
    before: &BTreeMap<String, RouteTotals>,
    after: &BTreeMap<String, RouteTotals>,
    elapsed: f64,
    values: &mut Vec<(SeriesKey, f64)>,
) {
    let none = RouteTotals::default();
    for (route, now) in after {
        let then = before.get(route).unwrap_or(&none);
        let requests = (now.requests - then.requests).max(0.0);
        let errors = (now.errors - then.errors).max(0.0);
        values.push((key("http_requests_per_second", route), requests / elapsed));
        values.push((key("http_errors_per_second", route), errors / elapsed));
        if let Some(p99) = prometheus::quantile_between(&then.buckets, &now.buckets, 0.99) {
            values.push((key("http_p99_ms", route), p99 * 1000.0));
        }
    }
}

/// The services' figures; answers the cumulative message counts.
fn service_values(
    tree: &Tree,
    before: &HashMap<String, u64>,
    elapsed: Option<f64>,
    values: &mut Vec<(SeriesKey, f64)>,
) -> HashMap<String, u64> {
    let mut handled = HashMap::new();
    for service in tree.snapshot().children {
        if let (Some(elapsed), Some(then)) = (elapsed, before.get(&service.name)) {
            let delta = service.messages_handled.saturating_sub(*then) as f64;
            values.push((
                key("service_messages_per_second", &service.name),
                delta / elapsed,
            ));
        }
        if let Some(queue) = &service.queue {
            values.push((key("service_queue_wait_ms", &service.name), queue.wait_ms));
        }
        values.push((
            key("service_queue_depth", &service.name),
            service.mailbox_depth as f64,
        ));
        handled.insert(service.name, service.messages_handled);
    }
    handled
}

async fn event_values(events: &EventBus, values: &mut Vec<(SeriesKey, f64)>) {
    for subscriber in events.overview().await.subscribers {
        if let Some(lag) = subscriber.lag_seconds {
            values.push((key("event_lag_seconds", subscriber.name), lag));
        } else if subscriber.pending == Some(0) {
            values.push((key("event_lag_seconds", subscriber.name), 0.0));
        }
        if let Some(pending) = subscriber.pending {
            values.push((key("event_pending", subscriber.name), pending as f64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rings_stay_at_their_capacity() {
        let history = History::new(Duration::from_millis(10), 3);
        for i in 0..10 {
            let mut values = vec![(key("a", ""), i as f64)];
            if i >= 8 {
                values.push((key("b", "x"), 1.0));
            }
            history.push(OffsetDateTime::now_utc(), values);
        }
        let view = history.view();
        assert_eq!(view.samples, 3);
        assert_eq!(view.series.len(), 2);
        assert_eq!(view.series[0].values, vec![Some(7.0), Some(8.0), Some(9.0)]);
        assert_eq!(view.series[1].values, vec![None, Some(1.0), Some(1.0)]);
    }

    #[test]
    fn a_series_gone_from_the_window_is_dropped() {
        let history = History::new(Duration::from_millis(10), 2);
        history.push(OffsetDateTime::now_utc(), vec![(key("a", ""), 1.0)]);
        for _ in 0..2 {
            history.push(OffsetDateTime::now_utc(), vec![]);
        }
        assert!(history.view().series.is_empty());
    }
}
