//! `[services.auth]`: auth's own settings (beside the supervision keys).
//! The token keys and lifetimes are not here: they are `[tokens]`, shared
//! with the front-end that verifies every request.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::kv::LimitSettings;
use crate::service::{Moved, ServiceSettings, SettingProblem};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Sign-in attempts allowed per email, from any address (guessing spread
    /// over many addresses): 5 per 15 minutes. Off with `rate_limit.enabled
    /// = false`, like every limit.
    pub email_limit: LimitSettings,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            email_limit: LimitSettings {
                requests: 5,
                per: Duration::from_secs(15 * 60),
            },
        }
    }
}

impl ServiceSettings for AuthSettings {
    fn check(&self) -> Vec<SettingProblem> {
        self.email_limit
            .problems()
            .into_iter()
            .map(|(key, message)| {
                let key = match key {
                    "requests" => "email_limit.requests",
                    _ => "email_limit.per",
                };
                SettingProblem::new(key, message)
            })
            .collect()
    }

    const MOVED: &'static [Moved] = &[Moved {
        from: "rate_limit.auth_email",
        to: "email_limit",
    }];
}
