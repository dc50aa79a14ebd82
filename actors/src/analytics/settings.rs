//! `[services.analytics]`: the schedules of the scheduled jobs (cron syntax,
//! in UTC, with an optional leading seconds field) and how long hourly rows
//! are kept.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::service::{ServiceSettings, SettingProblem};

/// A cron schedule, parsed when the configuration is read: a pattern croner
/// refuses is a configuration error naming its key, never a job that
/// silently never runs.
#[derive(Clone, Debug)]
pub struct Schedule {
    pattern: String,
    cron: croner::Cron,
}

impl Schedule {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let cron = croner::Cron::from_str(pattern).map_err(|e| e.to_string())?;
        Ok(Self {
            pattern: pattern.to_owned(),
            cron,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// The first tick strictly after `after`, in unix seconds (`None`: the
    /// pattern never matches again).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let start = chrono::DateTime::<chrono::Utc>::from_timestamp(after, 0)?;
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|t| t.timestamp())
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.pattern)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pattern = String::deserialize(d)?;
        Schedule::parse(&pattern).map_err(|e| {
            serde::de::Error::custom(format!("`{pattern}` is not a cron schedule: {e}"))
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsSettings {
    /// Closes the hour that ended (its distinct active users).
    pub hourly_close: Schedule,
    /// Rolls the day that ended up from its hours (and its distinct active users).
    pub daily_rollup: Schedule,
    /// Deletes hourly rows past `hourly_retention`.
    pub purge: Schedule,
    /// How long hourly counters and activity are kept (whole days are
    /// deleted); daily ones are kept.
    #[serde(with = "humantime_serde")]
    pub hourly_retention: Duration,
    /// How long one run of a job may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub job_timeout: Duration,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        // Constant patterns croner accepts (checked by the test below).
        let schedule = |p: &str| Schedule::parse(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        Self {
            hourly_close: schedule("0 * * * *"),
            daily_rollup: schedule("5 0 * * *"),
            purge: schedule("10 0 * * *"),
            hourly_retention: Duration::from_secs(7 * 24 * 60 * 60),
            job_timeout: Duration::from_secs(60),
        }
    }
}

/// The shortest retention: the daily roll-up re-sums yesterday from its
/// hours, which must still be there.
const MIN_RETENTION: Duration = Duration::from_secs(2 * 24 * 60 * 60);

impl ServiceSettings for AnalyticsSettings {
    fn check(&self) -> Vec<SettingProblem> {
        let mut problems = Vec::new();
        if self.hourly_retention < MIN_RETENTION {
            problems.push(SettingProblem::new(
                "hourly_retention",
                "must be at least 2 days (the daily roll-up reads yesterday's hours)",
            ));
        }
        if self.job_timeout.is_zero() {
            problems.push(SettingProblem::new("job_timeout", "must be more than 0"));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_parse_and_check() {
        let settings = AnalyticsSettings::default();
        assert!(settings.check().is_empty());
        assert_eq!(settings.daily_rollup.as_str(), "5 0 * * *");
    }

    #[test]
    fn a_short_retention_and_a_bad_pattern_are_refused_naming_their_key() {
        let settings = AnalyticsSettings {
            hourly_retention: Duration::from_secs(24 * 60 * 60),
            ..AnalyticsSettings::default()
        };
        let keys: Vec<_> = settings.check().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["hourly_retention"]);
        let bad: Result<AnalyticsSettings, _> =
            serde_json::from_value(serde_json::json!({"purge": "every hour"}));
        let err = bad.expect_err("refused").to_string();
        assert!(err.contains("`every hour` is not a cron schedule"), "{err}");
    }

    #[test]
    fn a_schedule_finds_its_next_tick_in_utc_and_takes_seconds() {
        let daily = Schedule::parse("5 0 * * *").expect("parses");
        // 2026-01-01T12:00:00Z → 2026-01-02T00:05:00Z
        assert_eq!(daily.next_after(1_767_268_800), Some(1_767_312_300));
        let every_two = Schedule::parse("*/2 * * * * *").expect("parses");
        assert_eq!(every_two.next_after(1_767_268_800), Some(1_767_268_802));
        assert!(Schedule::parse("61 * * * *").is_err());
    }
}
