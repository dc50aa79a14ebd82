//! The notifications API as the bench calls it: sign in as the admin the
//! script created, make the bulk templates, `POST /send` and
//! `POST /send-bulk` bodies for each channel, and the batch counts.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A delivery channel the bench loads, with the sink it delivers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Email,
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }

    /// The bulk scenarios' template of this channel.
    pub fn template(self) -> &'static str {
        match self {
            Channel::Email => "notify-bench-email",
            Channel::Webhook => "notify-bench-webhook",
        }
    }
}

/// The public API with the admin's bearer token.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    url: String,
    token: String,
    /// Where webhooks go: the in-process receiver's base URL.
    hook: String,
}

/// What one accepted `POST /send` told the client.
pub struct Accepted {
    pub id: String,
    /// The notification's `created_at`, stamped by the server at commit.
    pub created_at: Option<OffsetDateTime>,
}

/// One request as the client saw it.
pub struct Sent {
    pub started: Instant,
    pub answered: Instant,
    pub accepted: Option<Accepted>,
}

impl Sent {
    pub fn took(&self) -> Duration {
        self.answered - self.started
    }
}

impl Api {
    /// Signs in as `email` (an admin made with `stageworks user create --admin`).
    pub async fn sign_in(url: &str, hook: &str, email: &str, password: &str) -> Result<Self> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(1024)
            .build()?;
        let login = client
            .post(format!("{url}/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .context("POST /api/v1/auth/login")?;
        if login.status() != 200 {
            bail!("login as {email}: {}", login.status());
        }
        let login: Value = login.json().await.context("the login answer")?;
        let token = login["access_token"]
            .as_str()
            .context("no access token in the login answer")?
            .to_owned();
        Ok(Self {
            client,
            url: url.to_owned(),
            token,
            hook: hook.to_owned(),
        })
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/api/v1/notifications{path}", self.url))
            .bearer_auth(&self.token)
    }

    /// Creates the bulk template of `channel` (409, it exists: fine).
    pub async fn ensure_template(&self, channel: Channel) -> Result<()> {
        let body = match channel {
            Channel::Email => json!({
                "name": channel.template(), "channel": "email",
                "subject": "Bench {{n}}", "body": "Hello {{name}}, this is message {{n}}.",
            }),
            Channel::Webhook => json!({
                "name": channel.template(), "channel": "webhook",
                "body": "{\"name\": \"{{name}}\", \"n\": {{n}}}",
            }),
        };
        let answer = self.post("/templates").json(&body).send().await?;
        match answer.status().as_u16() {
            201 | 409 => Ok(()),
            status => bail!(
                "POST /templates {}: {status} {}",
                channel.template(),
                answer.text().await.unwrap_or_default()
            ),
        }
    }

    /// A distinct recipient per message (a recipient's notifications go one
    /// at a time, oldest first, so one address would serialise them).
    fn recipient(&self, channel: Channel, tag: &str) -> String {
        match channel {
            Channel::Email => format!("bench-{tag}@example.com"),
            Channel::Webhook => format!("{}/hook/{tag}", self.hook),
        }
    }

    /// `POST /send` with an inline body to a recipient made from `tag`.
    pub async fn send(&self, channel: Channel, tag: &str) -> Sent {
        let to = self.recipient(channel, tag);
        let body = match channel {
            Channel::Email => json!({
                "channel": "email", "to": to, "subject": "Bench", "body": format!("Message {tag}."),
            }),
            Channel::Webhook => json!({
                "channel": "webhook", "to": to, "body": json!({"tag": tag}).to_string(),
            }),
        };
        let started = Instant::now();
        let accepted = match self.post("/send").json(&body).send().await {
            Ok(answer) if answer.status() == 202 => answer.json::<Value>().await.ok(),
            _ => None,
        };
        Sent {
            started,
            answered: Instant::now(),
            accepted: accepted.and_then(|v| parse_accepted(&v)),
        }
    }

    /// `POST /send-bulk` of `size` recipients with the channel's template;
    /// the batch id.
    pub async fn send_bulk(&self, channel: Channel, prefix: &str, size: usize) -> Result<String> {
        let recipients: Vec<Value> = (0..size)
            .map(|i| json!({"to": self.recipient(channel, &format!("{prefix}-{i}")), "data": {"n": i}}))
            .collect();
        let body = json!({
            "channel": channel.as_str(), "template": channel.template(),
            "data": {"name": "bench"}, "recipients": recipients,
        });
        let answer = self.post("/send-bulk").json(&body).send().await?;
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        if status != 202 {
            bail!("POST /send-bulk of {size}: {status} {text}");
        }
        let accepted: Value = serde_json::from_str(&text).context("the send-bulk answer")?;
        if accepted["accepted"].as_u64() != Some(size as u64) {
            bail!(
                "POST /send-bulk of {size} accepted {}",
                accepted["accepted"]
            );
        }
        accepted["batch_id"]
            .as_str()
            .map(str::to_owned)
            .context("no batch_id in the send-bulk answer")
    }

    /// `GET /batches/{id}`.
    pub async fn batch(&self, id: &str) -> Result<Value> {
        let answer = self
            .client
            .get(format!("{}/api/v1/notifications/batches/{id}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await?;
        if answer.status() != 200 {
            bail!("GET /batches/{id}: {}", answer.status());
        }
        Ok(answer.json().await?)
    }
}

fn parse_accepted(notification: &Value) -> Option<Accepted> {
    Some(Accepted {
        id: notification["id"].as_str()?.to_owned(),
        created_at: notification["created_at"]
            .as_str()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok()),
    })
}
