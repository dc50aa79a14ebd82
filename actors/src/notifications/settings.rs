//! `[services.notifications]`: the queue's retry policy, the event →
//! template mapping and the providers (`[services.notifications.email]`,
//! `.sms`, `.push`, `.webhook`; a channel whose provider is not configured
//! answers 422 on `channel`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::providers::{
    ProvidersSettings, PushSettings, SmsSettings, SmtpSettings, WebhookSettings,
};
use crate::service::{ServiceSettings, SettingProblem};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsSettings {
    /// Attempts before a notification is dead.
    pub max_attempts: u32,
    /// The first retry's delay; each next one doubles, with jitter.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// The longest delay between two attempts.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// How long a sender holds a notification it claimed: one whose sender
    /// died (a crash mid-send) is taken again after it. More than each
    /// configured provider's `timeout` + 1s: a send starts only while that
    /// much of the lease is left.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Sends in flight at once, per channel.
    pub senders: usize,
    /// How often the queue is looked at when nothing woke the senders
    /// (retries coming due, other replicas' rows).
    #[serde(with = "humantime_serde")]
    pub poll_every: Duration,
    /// Topic → template: the events that send a notification to the user
    /// they name (`user.registered` → `welcome`).
    pub events: BTreeMap<String, String>,
    /// Email over SMTP (`[services.notifications.email]`).
    pub email: Option<SmtpSettings>,
    /// SMS through a Twilio-compatible HTTP API.
    pub sms: Option<SmsSettings>,
    /// Web Push (RFC 8030, 8291, 8292).
    pub push: Option<PushSettings>,
    /// HTTP POSTs signed with HMAC-SHA256.
    pub webhook: Option<WebhookSettings>,
}

impl Default for NotificationsSettings {
    fn default() -> Self {
        let events = [
            ("user.registered", "welcome"),
            ("invoice.created", "invoice_created"),
            ("invoice.paid", "invoice_paid"),
        ];
        Self {
            max_attempts: 5,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(10 * 60),
            lease: Duration::from_secs(60),
            senders: 4,
            poll_every: Duration::from_secs(1),
            events: events
                .into_iter()
                .map(|(topic, template)| (topic.to_owned(), template.to_owned()))
                .collect(),
            email: None,
            sms: None,
            push: None,
            webhook: None,
        }
    }
}

impl NotificationsSettings {
    /// The providers' sections, as the providers read them.
    pub fn providers(&self) -> ProvidersSettings {
        ProvidersSettings {
            email: self.email.clone(),
            sms: self.sms.clone(),
            push: self.push.clone(),
            webhook: self.webhook.clone(),
        }
    }
}

impl NotificationsSettings {
    /// Sends a second at most for `channel`'s provider (0: unlimited).
    pub fn per_second(&self, channel: super::model::Channel) -> u32 {
        self.providers().common(channel).map_or(0, |c| c.per_second)
    }

    /// How long a call to `channel`'s provider may take: a send may take
    /// the provider's own timeout; the call waits a little more.
    pub fn provider_call_timeout(&self, channel: super::model::Channel) -> Duration {
        self.provider_timeout(channel) + Duration::from_secs(1)
    }

    /// Whether `/ready` checks `channel`'s provider (`required = true`).
    pub fn is_required(&self, channel: super::model::Channel) -> bool {
        self.providers().common(channel).is_some_and(|c| c.required)
    }

    /// How long one send through `channel`'s provider may take.
    pub fn provider_timeout(&self, channel: super::model::Channel) -> Duration {
        self.providers()
            .common(channel)
            .map_or(Duration::from_secs(10), |c| c.timeout)
    }
}

impl ServiceSettings for NotificationsSettings {
    /// Passwords, tokens, secrets and keys as `********`.
    fn masked(&self) -> Self {
        let shown = self.providers().masked();
        Self {
            email: shown.email,
            sms: shown.sms,
            push: shown.push,
            webhook: shown.webhook,
            ..self.clone()
        }
    }

    fn check(&self) -> Vec<SettingProblem> {
        let mut problems = Vec::new();
        if self.max_attempts == 0 {
            problems.push(SettingProblem::new("max_attempts", "must be at least 1"));
        }
        if self.retry_base.is_zero() || self.retry_max < self.retry_base {
            problems.push(SettingProblem::new(
                "retry_max",
                "must be at least retry_base, which must be more than 0",
            ));
        }
        if self.lease < Duration::from_secs(1) {
            problems.push(SettingProblem::new("lease", "must be at least 1s"));
        }
        for channel in super::model::Channel::ALL {
            let configured = self.providers().common(channel).is_some();
            if configured && self.lease <= self.provider_call_timeout(channel) {
                problems.push(SettingProblem::new(
                    "lease",
                    format!(
                        "must be more than {channel}.timeout + 1s (a send must end within the lease it holds)",
                        channel = channel.as_str()
                    ),
                ));
            }
        }
        if self.senders == 0 {
            problems.push(SettingProblem::new("senders", "must be at least 1"));
        }
        if self.poll_every.is_zero() {
            problems.push(SettingProblem::new("poll_every", "must be more than 0"));
        }
        for (topic, template) in &self.events {
            if crate::events::Topic::parse(topic).is_err() {
                problems.push(SettingProblem::new(
                    format!("events.{topic}"),
                    "is not a topic name",
                ));
            }
            if super::model::TemplateName::parse(template).is_err() {
                problems.push(SettingProblem::new(
                    format!("events.{topic}"),
                    "must name a template ([a-z0-9][a-z0-9_.-]{0,63})",
                ));
            }
        }
        problems.extend(self.providers().problems());
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_config_never_shows_a_provider_secret() {
        let settings = NotificationsSettings {
            webhook: Some(WebhookSettings {
                secret: "a-webhook-secret-of-many-bytes".into(),
                ..WebhookSettings::default()
            }),
            ..NotificationsSettings::default()
        };
        let shown = format!("{:?}", crate::service::settings::shown(&settings));
        assert!(!shown.contains("a-webhook-secret"), "{shown}");
        assert!(shown.contains("********"), "{shown}");
    }

    #[test]
    fn bad_settings_name_their_keys() {
        let mut settings = NotificationsSettings {
            max_attempts: 0,
            ..NotificationsSettings::default()
        };
        settings
            .events
            .insert("Not A Topic".into(), "welcome".into());
        let keys: Vec<String> = settings
            .check()
            .into_iter()
            .map(|p| p.key.into_owned())
            .collect();
        assert!(keys.contains(&"max_attempts".to_owned()), "{keys:?}");
        assert!(keys.contains(&"events.Not A Topic".to_owned()), "{keys:?}");
    }

    #[test]
    fn a_lease_must_outlast_a_send() {
        let with_lease = |lease: u64| NotificationsSettings {
            lease: Duration::from_secs(lease),
            webhook: Some(WebhookSettings {
                secret: "a-webhook-secret-of-many-bytes".into(),
                timeout: Duration::from_secs(10),
                ..WebhookSettings::default()
            }),
            ..NotificationsSettings::default()
        };
        let refused = with_lease(11).check();
        assert!(
            refused
                .iter()
                .any(|p| p.key == "lease" && p.message.contains("webhook.timeout")),
            "{refused:?}"
        );
        assert!(
            with_lease(12).check().is_empty(),
            "{:?}",
            with_lease(12).check()
        );
        // No provider, no send to outlast.
        let none = NotificationsSettings {
            lease: Duration::from_secs(1),
            ..NotificationsSettings::default()
        };
        assert!(none.check().is_empty(), "{:?}", none.check());
    }
}
