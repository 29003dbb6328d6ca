use std::time::Duration;

use deadpool_redis::{Pool, Runtime};
use redis::Script;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use model::{Channels, Point};

use crate::{ActiveSession, CacheError, Config, Update, session_effect};

/// Sets `latest:{device}` only if the new point is not older than the cached one, by `(ts, seq)`
/// as the store orders them, so racing writers, replicas and redeliveries cannot move it
/// backwards. Points often share a `ts` (a frame, a coarse device clock): without `seq` the last
/// writer would win among them. `seq` is compared as a decimal string (length first), because
/// Lua's numbers are doubles and a `seq` may exceed 2^53.
const SET_LATEST: &str = r"
local cur_ts = redis.call('HGET', KEYS[1], 'ts')
if cur_ts then
  local c, n = tonumber(cur_ts), tonumber(ARGV[1])
  if c > n then return 0 end
  if c == n then
    local cur_seq = redis.call('HGET', KEYS[1], 'seq') or ''
    local seq = ARGV[3]
    if #cur_seq > #seq or (#cur_seq == #seq and cur_seq > seq) then return 0 end
  end
end
redis.call('HSET', KEYS[1], 'ts', ARGV[1], 'seq', ARGV[3], 'point', ARGV[2])
return 1
";

/// Ends `session:{device}` only if it is the session that ended.
const END_SESSION: &str = r"
if redis.call('HGET', KEYS[1], 'session') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// A session that never sends its end disappears after this long.
const SESSION_TTL_SECS: i64 = 24 * 3600;

#[derive(Clone)]
pub struct RedisCache {
    pool: Pool,
    prefix: String,
    timeout: Duration,
    set_latest: std::sync::Arc<Script>,
    end_session: std::sync::Arc<Script>,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The cached form of a point: the wire form plus when it was received.
#[derive(Serialize, Deserialize)]
struct CachedPoint {
    session: String,
    seq: u64,
    ts: i64,
    channels: Channels,
    received_ms: i64,
}

impl RedisCache {
    pub(crate) fn new(url: &SecretString, config: &Config) -> Result<Self, CacheError> {
        let mut cfg = deadpool_redis::Config::from_url(url.expose_secret());
        let timeout = Duration::from_millis(config.timeout_ms);
        cfg.pool = Some(deadpool_redis::PoolConfig {
            max_size: config.pool_size,
            timeouts: deadpool_redis::Timeouts {
                wait: Some(timeout),
                create: Some(timeout),
                recycle: Some(timeout),
            },
            ..Default::default()
        });
        let pool = cfg
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| CacheError::BadUrl(e.to_string()))?;
        Ok(RedisCache {
            pool,
            prefix: config.key_prefix.clone(),
            timeout,
            set_latest: std::sync::Arc::new(Script::new(SET_LATEST)),
            end_session: std::sync::Arc::new(Script::new(END_SESSION)),
        })
    }

    fn key(&self, kind: &str, device_id: &str) -> String {
        format!("{}{kind}:{device_id}", self.prefix)
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, CacheError> {
        self.pool
            .get()
            .await
            .map_err(|e| CacheError::Pool(e.to_string()))
    }

    /// Runs `f` against a pooled connection with the configured deadline.
    async fn with_timeout<T>(
        &self,
        f: impl Future<Output = Result<T, CacheError>>,
    ) -> Result<T, CacheError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| CacheError::Timeout(self.timeout.as_millis() as u64))?
    }

    pub(crate) async fn apply(&self, update: &Update) -> Result<(), CacheError> {
        if update.is_empty() {
            return Ok(());
        }
        self.with_timeout(async {
            let mut conn = self.conn().await?;
            let mut pipe = redis::pipe();
            for p in &update.latest {
                let cached = CachedPoint {
                    session: p.session.clone(),
                    seq: p.seq,
                    ts: p.ts_ms,
                    channels: p.channels.clone(),
                    received_ms: p.received_ms,
                };
                let json = serde_json::to_string(&cached)?;
                pipe.invoke_script(
                    self.set_latest
                        .key(self.key("latest", &p.device_id))
                        .arg(p.ts_ms)
                        .arg(json)
                        .arg(p.seq.to_string()),
                )
                .ignore();
            }
            for event in &update.sessions {
                let key = self.key("session", &event.device_id);
                match session_effect(event) {
                    Some(active) => {
                        let metadata = serde_json::to_string(&active.metadata)?;
                        pipe.hset_multiple(
                            &key,
                            &[
                                ("session", active.session),
                                ("started_ms", active.started_ms.to_string()),
                                ("metadata", metadata),
                            ],
                        )
                        .ignore()
                        .expire(&key, SESSION_TTL_SECS)
                        .ignore();
                    }
                    None => {
                        pipe.invoke_script(self.end_session.key(&key).arg(&event.session))
                            .ignore();
                    }
                }
            }
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => Ok(()),
                // A fresh (or restarted) Redis does not know our scripts yet: load and retry.
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    self.set_latest
                        .prepare_invoke()
                        .load_async(&mut conn)
                        .await?;
                    self.end_session
                        .prepare_invoke()
                        .load_async(&mut conn)
                        .await?;
                    pipe.query_async::<()>(&mut conn).await.map_err(Into::into)
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    pub(crate) async fn latest(&self, device_id: &str) -> Result<Option<Point>, CacheError> {
        self.with_timeout(async {
            let mut conn = self.conn().await?;
            let json: Option<String> = redis::cmd("HGET")
                .arg(self.key("latest", device_id))
                .arg("point")
                .query_async(&mut conn)
                .await?;
            let Some(json) = json else {
                return Ok(None);
            };
            let c: CachedPoint = serde_json::from_str(&json)?;
            Ok(Some(Point {
                device_id: device_id.to_owned(),
                session: c.session,
                seq: c.seq,
                ts_ms: c.ts,
                channels: c.channels,
                received_ms: c.received_ms,
            }))
        })
        .await
    }

    pub(crate) async fn active_session(
        &self,
        device_id: &str,
    ) -> Result<Option<ActiveSession>, CacheError> {
        self.with_timeout(async {
            let mut conn = self.conn().await?;
            let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
                .arg(self.key("session", device_id))
                .query_async(&mut conn)
                .await?;
            let (Some(session), Some(started)) = (fields.get("session"), fields.get("started_ms"))
            else {
                return Ok(None);
            };
            let metadata = match fields.get("metadata") {
                Some(m) => serde_json::from_str(m)?,
                None => Default::default(),
            };
            Ok(Some(ActiveSession {
                session: session.clone(),
                started_ms: started.parse().unwrap_or(0),
                metadata,
            }))
        })
        .await
    }

    pub(crate) async fn ping(&self) -> Result<(), CacheError> {
        self.with_timeout(async {
            let mut conn = self.conn().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await?;
            Ok(())
        })
        .await
    }
}
