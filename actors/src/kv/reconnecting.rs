//! [`ReconnectingRedis`]: the Redis store as the process holds it. Once a pool
//! is connected, fred reconnects it by itself; this wrapper covers the one case
//! fred leaves to us, a Redis that is down when the process starts: the
//! process starts anyway, features that need Redis answer 503 (`Unavailable`),
//! and a background task keeps trying with exponential backoff until it
//! connects.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;

use super::{KvError, KvStore, RateDecision, RateLimit, RedisKv, RedisSettings};

const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);

pub struct ReconnectingRedis {
    current: RwLock<Option<Arc<RedisKv>>>,
}

impl ReconnectingRedis {
    /// Connects, or starts trying in the background if Redis is not there yet.
    pub async fn start(settings: RedisSettings) -> Arc<Self> {
        let store = Arc::new(Self {
            current: RwLock::new(None),
        });
        match RedisKv::connect(&settings).await {
            Ok(redis) => store.set(redis),
            Err(err) => {
                tracing::warn!(error = %err, "Redis is not reachable yet; retrying in the background");
                let weak = Arc::downgrade(&store);
                tokio::spawn(async move {
                    let mut delay = RETRY_MIN;
                    loop {
                        tokio::time::sleep(delay).await;
                        let Some(store) = weak.upgrade() else { return };
                        match RedisKv::connect(&settings).await {
                            Ok(redis) => {
                                tracing::info!("Redis connected");
                                store.set(redis);
                                return;
                            }
                            Err(err) => tracing::debug!(error = %err, "Redis still not reachable"),
                        }
                        delay = (delay * 2).min(RETRY_MAX);
                    }
                });
            }
        }
        store
    }

    fn set(&self, redis: RedisKv) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(redis));
    }

    fn redis(&self) -> Result<Arc<RedisKv>, KvError> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| KvError::Unavailable("Redis is not connected yet".into()))
    }
}

impl KvStore for ReconnectingRedis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, KvError>> {
        Box::pin(async move { self.redis()?.get(key).await })
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<(), KvError>> {
        Box::pin(async move { self.redis()?.set(key, value, ttl).await })
    }

    fn set_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool, KvError>> {
        Box::pin(async move { self.redis()?.set_if_absent(key, value, ttl).await })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, KvError>> {
        Box::pin(async move { self.redis()?.delete(key).await })
    }

    fn incr<'a>(
        &'a self,
        key: &'a str,
        by: i64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<i64, KvError>> {
        Box::pin(async move { self.redis()?.incr(key, by, ttl).await })
    }

    fn ttl<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Duration>, KvError>> {
        Box::pin(async move { self.redis()?.ttl(key).await })
    }

    fn rate_limit<'a>(
        &'a self,
        key: &'a str,
        limit: RateLimit,
    ) -> BoxFuture<'a, Result<RateDecision, KvError>> {
        Box::pin(async move { self.redis()?.rate_limit(key, limit).await })
    }

    fn ping(&self) -> BoxFuture<'_, Result<Duration, KvError>> {
        Box::pin(async move { self.redis()?.ping().await })
    }
}
