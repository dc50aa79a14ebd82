//! The parts of Stageworks' API the bench calls: signing in, orders, audit
//! entries, searches and the export, and the admin listener's
//! `/admin/events` and `/metrics`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// The public API as one caller (a bearer token), and the admin listener.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub url: String,
    pub admin: String,
    pub token: String,
}

/// A subscriber's backlog as `/admin/events` shows it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Backlog {
    pub pending: u64,
    pub lag_seconds: f64,
}

impl Api {
    pub fn client() -> Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(256)
            .build()?)
    }

    /// Signs in as an existing user (the admin the script created).
    pub async fn sign_in(
        client: &reqwest::Client,
        url: &str,
        admin: &str,
        email: &str,
        password: &str,
    ) -> Result<(Api, String)> {
        let login: Value = client
            .post(format!("{url}/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("login as {email}"))?
            .json()
            .await?;
        let token = login["access_token"]
            .as_str()
            .context("no access token in the login answer")?;
        let id = login["user"]["id"]
            .as_str()
            .context("no user id in the login answer")?;
        let api = Api {
            client: client.clone(),
            url: url.to_owned(),
            admin: admin.to_owned(),
            token: token.to_owned(),
        };
        Ok((api, id.to_owned()))
    }

    /// Registers a user (or finds it registered) and signs in.
    pub async fn user(
        client: &reqwest::Client,
        url: &str,
        admin: &str,
        email: &str,
    ) -> Result<(Api, String)> {
        let password = "audit-bench-password";
        let registered = client
            .post(format!("{url}/api/v1/auth/register"))
            .json(&json!({"email": email, "password": password, "name": "audit bench"}))
            .send()
            .await?;
        if !(registered.status() == 201 || registered.status() == 409) {
            bail!("register {email}: {}", registered.status());
        }
        Self::sign_in(client, url, admin, email, password).await
    }

    /// `POST /api/v1/orders`: true when accepted (201).
    pub async fn create_order(&self) -> bool {
        let created = self
            .client
            .post(format!("{}/api/v1/orders", self.url))
            .bearer_auth(&self.token)
            .json(&json!({"amount": 1999}))
            .send()
            .await;
        matches!(created, Ok(r) if r.status() == 201)
    }

    /// `POST /api/v1/audit` with the given request id: true when recorded (201).
    pub async fn post_entry(&self, request_id: &str, entry: &Value) -> Result<bool> {
        let posted = self
            .client
            .post(format!("{}/api/v1/audit", self.url))
            .bearer_auth(&self.token)
            .header("x-request-id", request_id)
            .json(entry)
            .send()
            .await?;
        Ok(posted.status() == 201)
    }

    /// One `GET /api/v1/audit/search?{query}`: how long it took and whether
    /// it answered 200 with at least one entry.
    pub async fn search(&self, query: &str) -> Result<(Duration, bool)> {
        let started = Instant::now();
        let answer = self
            .client
            .get(format!("{}/api/v1/audit/search?{query}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let ok = answer.status() == 200;
        let body: Value = answer.json().await.unwrap_or_default();
        let found = body["data"].as_array().is_some_and(|d| !d.is_empty());
        Ok((started.elapsed(), ok && found))
    }

    /// The number of audit entries (`pagination.total` of an unfiltered search).
    pub async fn audit_total(&self) -> Result<u64> {
        let page: Value = self
            .client
            .get(format!("{}/api/v1/audit/search?limit=1", self.url))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        page["pagination"]["total"]
            .as_u64()
            .context("no pagination total in an audit search")
    }

    /// `GET /api/v1/analytics/stats` (the default range: the last 30 days).
    pub async fn stats(&self) -> Result<Value> {
        Ok(self
            .client
            .get(format!("{}/api/v1/analytics/stats", self.url))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// The export, as it arrives.
    pub async fn export(&self) -> Result<reqwest::Response> {
        Ok(self
            .client
            .get(format!("{}/api/v1/audit/export.csv", self.url))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?)
    }

    /// A subscriber's pending events and lag, from `/admin/events`.
    pub async fn backlog(&self, subscriber: &str) -> Result<Backlog> {
        let overview: Value = self
            .client
            .get(format!("{}/admin/events", self.admin))
            .send()
            .await?
            .json()
            .await?;
        let found = overview["subscribers"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == subscriber))
            .with_context(|| format!("no {subscriber} subscriber in /admin/events"))?;
        Ok(Backlog {
            pending: found["pending"].as_u64().unwrap_or(0),
            lag_seconds: found["lag_seconds"].as_f64().unwrap_or(0.0),
        })
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        Ok(self
            .client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }
}
