//! `[services.audit]`: audit's own settings (beside the supervision keys).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::service::{ServiceSettings, SettingProblem};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// How long entries are kept (`"365days"`); `0` or `""` keeps them
    /// forever. The oldest are purged whole, keeping the chain verifiable.
    #[serde(
        deserialize_with = "forever_or_duration",
        serialize_with = "duration_text"
    )]
    pub retention: Option<Duration>,
    /// How often entries past the retention (and expired idempotency keys)
    /// are purged.
    #[serde(with = "humantime_serde")]
    pub purge_every: Duration,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            retention: None,
            purge_every: Duration::from_secs(60 * 60),
        }
    }
}

impl ServiceSettings for AuditSettings {
    fn check(&self) -> Vec<SettingProblem> {
        if self.purge_every.is_zero() {
            vec![SettingProblem::new("purge_every", "must be longer than 0")]
        } else {
            Vec::new()
        }
    }
}

/// `""` and `"0"` (or 0) are "forever"; anything else a humantime duration.
fn forever_or_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Number(0) => Ok(None),
        Raw::Number(n) => Err(serde::de::Error::custom(format!(
            "{n} has no unit: write it as a duration, e.g. \"365days\""
        ))),
        Raw::Text(text) if text.trim().is_empty() => Ok(None),
        Raw::Text(text) => {
            let duration = humantime_serde::re::humantime::parse_duration(text.trim())
                .map_err(|e| serde::de::Error::custom(format!("`{text}`: {e}")))?;
            Ok((!duration.is_zero()).then_some(duration))
        }
    }
}

fn duration_text<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => {
            s.serialize_str(&humantime_serde::re::humantime::format_duration(*d).to_string())
        }
        None => s.serialize_str("0"),
    }
}
