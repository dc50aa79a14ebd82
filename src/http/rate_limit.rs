//! Rate limits at the edge: GCRA (the key-value store's `rate_limit`), per
//! client IP for every API route (a stricter limit for the auth group) and
//! per user for authenticated routes. State lives in the key-value store, so
//! replicas sharing Redis share their limits.
//!
//! A store that cannot answer (Redis down) lets the request through and
//! counts it in `rate_limit_errors_total`: limiting protects the API, and an
//! outage of its store must not take the whole API down with it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::HeaderMap;
use uuid::Uuid;

use actors::api::LimitGroup;
use actors::kv::{KvStore, RateDecision, RateLimit};
use actors::ServiceError;

use crate::config::RateLimitConfig;

pub struct RateLimiter {
    kv: Arc<dyn KvStore>,
    enabled: bool,
    trusted_proxy_hops: u32,
    api: RateLimit,
    auth: RateLimit,
    user: RateLimit,
}

impl RateLimiter {
    pub fn new(kv: Arc<dyn KvStore>, config: &RateLimitConfig) -> Self {
        Self {
            kv,
            enabled: config.enabled,
            trusted_proxy_hops: config.trusted_proxy_hops,
            api: config.api.rate_limit(),
            auth: config.auth.rate_limit(),
            user: config.user.rate_limit(),
        }
    }

    /// The client's address: the peer, or, behind `trusted_proxy_hops`
    /// proxies, the address the outermost of them saw (the N-th from the right
    /// of `x-forwarded-for`; anything further left is the client's to forge).
    pub fn client_ip(&self, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
        if self.trusted_proxy_hops == 0 {
            return peer.ip();
        }
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let hops = self.trusted_proxy_hops as usize;
        forwarded
            .len()
            .checked_sub(hops)
            .and_then(|i| forwarded.get(i))
            .and_then(|ip| ip.parse().ok())
            .unwrap_or_else(|| peer.ip())
    }

    /// Counts a request from `ip` against its route group's limit.
    pub async fn check_ip(
        &self,
        group: LimitGroup,
        ip: IpAddr,
    ) -> Result<Option<RateDecision>, ServiceError> {
        let (name, limit) = match group {
            LimitGroup::Api => ("api", self.api),
            LimitGroup::Auth => ("auth", self.auth),
        };
        self.check(&format!("rl:ip:{name}:{ip}"), limit).await
    }

    /// Counts a request from an authenticated user.
    pub async fn check_user(&self, user: Uuid) -> Result<Option<RateDecision>, ServiceError> {
        self.check(&format!("rl:user:{user}"), self.user).await
    }

    async fn check(
        &self,
        key: &str,
        limit: RateLimit,
    ) -> Result<Option<RateDecision>, ServiceError> {
        if !self.enabled {
            return Ok(None);
        }
        match self.kv.rate_limit(key, limit).await {
            Ok(decision) if decision.allowed => Ok(Some(decision)),
            Ok(decision) => Err(ServiceError::RateLimited {
                retry_after: decision.retry_after,
                limit: decision.limit,
                reset_after: decision.reset_after,
            }),
            Err(err) => {
                metrics::counter!("rate_limit_errors_total").increment(1);
                tracing::warn!(error = %err, "rate limit store unavailable; letting the request through");
                Ok(None)
            }
        }
    }
}

/// The tighter of two decisions (the one with fewer requests left).
pub fn tighter(a: Option<RateDecision>, b: Option<RateDecision>) -> Option<RateDecision> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.remaining < a.remaining { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn seconds_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `ratelimit-limit`, `ratelimit-remaining` and `ratelimit-reset` (seconds
/// until the quota is whole again), on answers to rate-limited routes.
pub fn quota_headers(headers: &mut HeaderMap, limit: u32, remaining: u32, reset_after: Duration) {
    headers.insert(
        HeaderName::from_static("ratelimit-limit"),
        HeaderValue::from(limit),
    );
    headers.insert(
        HeaderName::from_static("ratelimit-remaining"),
        HeaderValue::from(remaining),
    );
    headers.insert(
        HeaderName::from_static("ratelimit-reset"),
        HeaderValue::from(seconds_up(reset_after)),
    );
}

pub fn decision_headers(headers: &mut HeaderMap, decision: &RateDecision) {
    quota_headers(
        headers,
        decision.limit,
        decision.remaining,
        decision.reset_after,
    );
}

/// The headers of a 429: the quota, spent, and when to come back.
pub fn refusal_headers(
    headers: &mut HeaderMap,
    limit: u32,
    retry_after: Duration,
    reset_after: Duration,
) {
    quota_headers(headers, limit, 0, reset_after);
    headers.insert(
        RETRY_AFTER,
        HeaderValue::from(seconds_up(retry_after).max(1)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimitConfig;

    fn limiter(hops: u32) -> RateLimiter {
        let config = RateLimitConfig {
            trusted_proxy_hops: hops,
            ..RateLimitConfig::default()
        };
        RateLimiter::new(Arc::new(actors::kv::MemoryKv::new(100, "t:")), &config)
    }

    #[test]
    fn the_peer_is_the_client_unless_proxies_are_trusted() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "6.6.6.6, 1.2.3.4".parse().unwrap());
        assert_eq!(limiter(0).client_ip(&headers, peer), peer.ip());
        assert_eq!(
            limiter(1).client_ip(&headers, peer),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            limiter(2).client_ip(&headers, peer),
            "6.6.6.6".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            limiter(3).client_ip(&headers, peer),
            peer.ip(),
            "fewer entries than hops"
        );
    }
}
