//! [`Cache`] on Redis.

use std::time::Duration;

use async_trait::async_trait;
use bb8::{Pool, PooledConnection, RunError};
use bb8_redis::RedisConnectionManager;
use bb8_redis::redis::{self, FromRedisValue, IntoConnectionInfo, RedisError};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use userstack_core::{Cache, Error as CoreError, Result};

use crate::error::Error;
use crate::pool::Manager;

/// How the adapter connects. `Default` matches the original deployment: `redis://redis:6379`.
#[derive(Clone)]
pub struct RedisSettings {
    pub url: String,
    /// The password (`AUTH`), kept out of `url` so that the URL can be logged and shown in
    /// `docker inspect`; when set, it replaces any password the URL carries.
    pub password: Option<String>,
    /// Prepended to every key, so that several applications can share one Redis.
    pub key_prefix: String,
    /// Most connections the pool opens. Each is multiplexed, so a few carry many requests.
    pub pool_size: u32,
    /// Longest wait for a connection; the service's own per-call timeout is usually shorter.
    pub connection_timeout: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://redis:6379".into(),
            password: None,
            key_prefix: "userstack:".into(),
            pool_size: 4,
            connection_timeout: Duration::from_secs(1),
        }
    }
}

/// Never prints the password.
impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("connection_timeout", &self.connection_timeout)
            .finish()
    }
}

/// A shared cache in Redis, through a bb8 pool of multiplexed connections.
#[derive(Debug, Clone)]
pub struct RedisCache {
    pool: Pool<Manager>,
    /// For the subscriptions of [`Cache::watch`], each on a connection of its own.
    client: redis::Client,
    prefix: String,
}

/// `INCR` and `PUBLISH` of the new value to the channel named like the key, atomically: a
/// watcher never sees the values out of order, and no increment goes unannounced.
const INCR_AND_ANNOUNCE: &str =
    "local v = redis.call('INCR', KEYS[1]) redis.call('PUBLISH', KEYS[1], v) return v";

/// Announcements a watcher may fall behind by before its watch is ended.
const WATCH_BACKLOG: usize = 64;

impl RedisCache {
    /// Builds the pool without connecting, so the server starts while Redis is down.
    pub fn new(settings: RedisSettings) -> std::result::Result<Self, Error> {
        let mut info = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(Error::InvalidUrl)?;
        if let Some(password) = &settings.password {
            let redis = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(redis);
        }
        let client = redis::Client::open(info.clone()).map_err(Error::InvalidUrl)?;
        let manager = RedisConnectionManager::new(info).map_err(Error::InvalidUrl)?;
        let pool = Pool::builder()
            .max_size(settings.pool_size)
            .min_idle(Some(1))
            .connection_timeout(settings.connection_timeout)
            // Our is_valid is a local flag test, not a PING; see pool::Manager.
            .test_on_check_out(true)
            .build_unchecked(Manager::new(manager, client.clone()));
        Ok(Self {
            pool,
            client,
            prefix: settings.key_prefix,
        })
    }

    /// Pool occupancy: `(connections, idle connections)`, for metrics.
    pub fn pool_state(&self) -> (u32, u32) {
        let state = self.pool.state();
        (state.connections, state.idle_connections)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn run<T: FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T> {
        let pooled: PooledConnection<'_, Manager> = self.pool.get().await.map_err(|e| match e {
            RunError::User(e) => unavailable(e),
            RunError::TimedOut => {
                CoreError::cache_unavailable("timed out waiting for a Redis connection")
            }
        })?;
        let mut conn = pooled.share();
        drop(pooled);
        conn.query(&cmd).await.map_err(unavailable)
    }
}

fn unavailable(e: RedisError) -> CoreError {
    CoreError::cache_unavailable(e)
}

#[async_trait]
impl Cache for RedisCache {
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(self.key(key));
        }
        self.run(cmd).await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let millis = ttl.as_millis().max(1) as u64;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value).arg("PX").arg(millis);
        self.run(cmd).await
    }

    async fn incr(&self, key: &str) -> Result<i64> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(INCR_AND_ANNOUNCE).arg(1).arg(self.key(key));
        self.run(cmd).await
    }

    async fn watch(&self, key: &str) -> Result<mpsc::Receiver<i64>> {
        let mut pubsub = self.client.get_async_pubsub().await.map_err(unavailable)?;
        pubsub.subscribe(self.key(key)).await.map_err(unavailable)?;
        let (sender, receiver) = mpsc::channel(WATCH_BACKLOG);
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            loop {
                let message = tokio::select! {
                    () = sender.closed() => break,
                    message = messages.next() => message,
                };
                // The connection ended, or something other than our script published here:
                // either way the watcher can no longer trust the sequence, so the watch ends.
                let Some(Ok(value)) = message.map(|m| m.get_payload::<i64>()) else {
                    break;
                };
                if sender.try_send(value).is_err() {
                    break;
                }
            }
        });
        Ok(receiver)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(key));
        self.run::<i64>(cmd).await.map(drop)
    }

    async fn ping(&self) -> Result<()> {
        self.run::<String>(redis::cmd("PING")).await.map(drop)
    }
}
