//! The query-string parsers: audit's search filters and analytics' time
//! series (metric, grain, range). Neither may panic on any query; a refusal
//! names what was wrong.

#![no_main]

use libfuzzer_sys::fuzz_target;

/// A fixed "now" (2026-12-01T00:00:00Z) so a crash reproduces.
const NOW: i64 = 1_796_083_200;

fuzz_target!(|data: &[u8]| {
    let query: Vec<(String, String)> = form_urlencoded::parse(data)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if let Err(errors) = actors::audit::model::Filter::parse(&query) {
        assert!(!errors.is_empty(), "a refusal that names nothing");
    }
    if let Err(error) = actors::analytics::model::SeriesQuery::parse(&query, NOW) {
        assert!(
            !error.to_string().is_empty(),
            "a refusal that names nothing"
        );
    }
    for (key, value) in &query {
        let _ = actors::audit::model::ActionFilter::parse(value);
        let _ = actors::analytics::model::Metric::parse(key);
    }
});
