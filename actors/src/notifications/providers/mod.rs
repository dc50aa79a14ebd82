//! PLACEHOLDER until the providers branch is merged: the interface only.

use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
    Push,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 4] = [Channel::Email, Channel::Sms, Channel::Push, Channel::Webhook];
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::Webhook => "webhook",
        }
    }
}

impl std::str::FromStr for Channel {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s).ok_or(())
    }
}

pub struct PushKeys {
    pub p256dh: String,
    pub auth: String,
}

pub struct Delivery<'a> {
    pub id: uuid::Uuid,
    pub to: &'a str,
    pub subject: Option<&'a str>,
    pub body: &'a str,
    pub html: Option<&'a str>,
    pub push: Option<&'a PushKeys>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Retryable(String),
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Gone(String),
}

pub trait Provider: Send + Sync + 'static {
    fn channel(&self) -> Channel;
    fn send<'a>(
        &'a self,
        delivery: &'a Delivery<'a>,
    ) -> futures::future::BoxFuture<'a, Result<(), SendError>>;
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvidersSettings {
    pub webhook: Option<WebhookSettings>,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct WebhookSettings {
    pub secret: String,
    pub per_second: u32,
    pub required: bool,
}

impl ProvidersSettings {
    pub fn build(&self) -> Result<Vec<Arc<dyn Provider>>, Vec<String>> {
        Ok(Vec::new())
    }
}
