//! Hot reads of the live fleet: the latest point of each device and each device's active
//! session, kept in Redis when one is configured and in process memory otherwise.
//!
//! The cache is never the source of truth — the store is — so it is written *after* a batch is
//! committed, off the ingestion hot path, and every failure degrades to a miss: readers fall back
//! to the store, and the next batch refreshes the entry. Redis being down must never slow or stop
//! ingestion; [`Cache::is_available`] reports it for `/ready` as an optional dependency.
//!
//! Redis keys (all under the configured prefix, `simcorp:` by default):
//! - `latest:{device_id}` — hash `{ts, point}`: the device's newest point by `ts`, as JSON. A
//!   compare-and-set script keeps it newest even when two ingestion replicas race.
//! - `session:{device_id}` — hash `{session, started_ms, metadata}` while a session is open;
//!   deleted by the matching end. Expires after a day so a session that never ends goes stale
//!   rather than live forever.

mod memory;
pub mod metrics;
mod redis_cache;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use model::{Batch, Point, SessionState};

pub use memory::MemoryCache;
pub use redis_cache::RedisCache;

/// `[redis]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `redis://host:port[/db]`. None: the in-process cache.
    #[serde(skip_serializing)]
    pub url: Option<SecretString>,
    /// Prefix of every key, so several deployments (or tests) can share one Redis.
    pub key_prefix: String,
    pub pool_size: usize,
    /// Longest wait for a pooled connection or a command; beyond it the cache counts as down.
    pub timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            url: None,
            key_prefix: "simcorp:".into(),
            pool_size: 4,
            timeout_ms: 500,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        if self.pool_size == 0 {
            return Err("redis.pool_size must be at least 1".into());
        }
        if self.timeout_ms == 0 {
            return Err("redis.timeout_ms must be positive".into());
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("redis.url: {0}")]
    BadUrl(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis pool: {0}")]
    Pool(String),
    #[error("redis did not answer within {0} ms")]
    Timeout(u64),
    #[error("cached value is not valid: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// A device's open session, as the cache knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveSession {
    pub session: String,
    pub started_ms: i64,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// What one committed batch changes in the cache: each device's newest point, and session
/// starts and ends in arrival order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    pub latest: Vec<Point>,
    pub sessions: Vec<model::SessionEvent>,
}

impl Update {
    /// Summarises a batch (newest point per device by `(ts, seq)`).
    pub fn from_batch(batch: &Batch) -> Self {
        let mut newest: std::collections::HashMap<&str, &Point> = Default::default();
        for p in &batch.points {
            let e = newest.entry(&p.device_id).or_insert(p);
            if (p.ts_ms, p.seq) > (e.ts_ms, e.seq) {
                *e = p;
            }
        }
        Update {
            latest: newest.into_values().cloned().collect(),
            sessions: batch.sessions.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty() && self.sessions.is_empty()
    }
}

/// The cache, Redis-backed or in-process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cache {
    backend: Backend,
    available: Arc<AtomicBool>,
}

#[derive(Debug, Clone)]
enum Backend {
    Redis(RedisCache),
    Memory(MemoryCache),
}

impl Cache {
    /// Redis when `config.url` is set (connecting lazily: an absent Redis does not stop startup),
    /// the in-process cache otherwise.
    pub fn new(config: &Config) -> Result<Self, CacheError> {
        let backend = match &config.url {
            Some(url) => Backend::Redis(RedisCache::new(url, config)?),
            None => Backend::Memory(MemoryCache::default()),
        };
        Ok(Cache {
            backend,
            available: Arc::new(AtomicBool::new(true)),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Redis(_) => "redis",
            Backend::Memory(_) => "memory",
        }
    }

    /// Whether the last operation succeeded.
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    fn note<T>(&self, result: Result<T, CacheError>) -> Result<T, CacheError> {
        let ok = result.is_ok();
        if self.available.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!(cache = self.kind(), "cache reachable again");
            } else if let Err(e) = &result {
                tracing::warn!(cache = self.kind(), error = %e, "cache unreachable; serving reads from the store");
            }
        }
        metrics::outcome(ok);
        result
    }

    pub async fn apply(&self, update: &Update) -> Result<(), CacheError> {
        let result = match &self.backend {
            Backend::Redis(r) => r.apply(update).await,
            Backend::Memory(m) => {
                m.apply(update);
                Ok(())
            }
        };
        self.note(result)
    }

    pub async fn latest(&self, device_id: &str) -> Result<Option<Point>, CacheError> {
        let result = match &self.backend {
            Backend::Redis(r) => r.latest(device_id).await,
            Backend::Memory(m) => Ok(m.latest(device_id)),
        };
        if let Ok(found) = &result {
            metrics::read(found.is_some());
        }
        self.note(result)
    }

    pub async fn active_session(
        &self,
        device_id: &str,
    ) -> Result<Option<ActiveSession>, CacheError> {
        let result = match &self.backend {
            Backend::Redis(r) => r.active_session(device_id).await,
            Backend::Memory(m) => Ok(m.active_session(device_id)),
        };
        self.note(result)
    }

    pub async fn ping(&self) -> Result<(), CacheError> {
        let result = match &self.backend {
            Backend::Redis(r) => r.ping().await,
            Backend::Memory(_) => Ok(()),
        };
        self.note(result)
    }
}

/// Session bookkeeping shared by both backends: what a session event does to the active one.
fn session_effect(event: &model::SessionEvent) -> Option<ActiveSession> {
    match event.state {
        SessionState::Start => Some(ActiveSession {
            session: event.session.clone(),
            started_ms: event.ts_ms,
            metadata: event.metadata.clone(),
        }),
        SessionState::End => None,
    }
}
