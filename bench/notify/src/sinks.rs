//! The two sinks the server delivers to, hosted in the bench's process:
//! testkit's SMTP sink (on the port the script gave the server) and its
//! HTTP receiver for webhooks. Arrivals are read back by notification id —
//! the email's `Message-ID: <id@host>`, the webhook's `idempotency-key` —
//! each with the instant it arrived.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use testkit::{Receiver, SmtpSink};

use crate::api::Channel;

pub struct Sinks {
    smtp: SmtpSink,
    hook: Receiver,
}

/// Where a sink's count stood when a scenario began.
#[derive(Clone, Copy)]
pub struct Mark(usize);

impl Sinks {
    pub async fn start(smtp_port: u16) -> Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], smtp_port));
        let smtp = SmtpSink::start_on(addr)
            .await
            .with_context(|| format!("SMTP sink on {addr}"))?;
        let hook = Receiver::start().await.context("webhook receiver")?;
        Ok(Self { smtp, hook })
    }

    /// The webhook receiver's base URL.
    pub fn hook_url(&self) -> String {
        self.hook.url("")
    }

    pub fn count(&self, channel: Channel) -> usize {
        match channel {
            Channel::Email => self.smtp.count(),
            Channel::Webhook => self.hook.count(),
        }
    }

    /// Waits (up to `within`) for the `welcome` email `user.registered`
    /// sends the admin the script made, so that no scenario counts it; its
    /// first attempt may fail, sent before the sink listened.
    pub async fn wait_for_welcome(&self, within: Duration) -> usize {
        self.wait_for(Channel::Email, Mark(0), 1, within).await
    }

    pub fn mark(&self, channel: Channel) -> Mark {
        Mark(self.count(channel))
    }

    /// Waits until `expected` arrived since `mark`, or `within` passed
    /// with nothing new for `idle`; answers how many arrived.
    pub async fn wait_for(
        &self,
        channel: Channel,
        mark: Mark,
        expected: usize,
        idle: Duration,
    ) -> usize {
        let mut last = (self.count(channel), Instant::now());
        loop {
            let now = self.count(channel);
            if now - mark.0 >= expected {
                return now - mark.0;
            }
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > idle {
                return now - mark.0;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every arrival since `mark`: (notification id, when), in arrival order.
    pub fn arrivals(&self, channel: Channel, mark: Mark) -> Vec<(String, Instant)> {
        match channel {
            Channel::Email => self
                .smtp
                .mails()
                .into_iter()
                .skip(mark.0)
                .map(|m| (message_id(m.header("Message-ID")), m.at))
                .collect(),
            Channel::Webhook => self
                .hook
                .received()
                .into_iter()
                .skip(mark.0)
                .map(|r| {
                    let key = r.headers.get("idempotency-key");
                    let id = key.and_then(|k| k.to_str().ok()).unwrap_or_default();
                    (id.to_owned(), r.at)
                })
                .collect(),
        }
    }
}

/// `<id@host>` → `id`.
fn message_id(header: Option<String>) -> String {
    let header = header.unwrap_or_default();
    let inner = header.trim().trim_start_matches('<').trim_end_matches('>');
    inner.split('@').next().unwrap_or_default().to_owned()
}

/// Arrivals by id: the first arrival of each, and how many ids came more
/// than once.
pub fn first_arrivals(arrivals: &[(String, Instant)]) -> (HashMap<&str, Instant>, usize) {
    let mut first = HashMap::with_capacity(arrivals.len());
    let mut duplicates = 0;
    for (id, at) in arrivals {
        if first.insert(id.as_str(), *at).is_some() {
            duplicates += 1;
        }
    }
    (first, duplicates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_is_the_local_part() {
        let id = message_id(Some("<0190-ab@stageworks.local>".into()));
        assert_eq!(id, "0190-ab");
        assert_eq!(message_id(None), "");
    }
}
