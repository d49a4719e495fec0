//! bb8-redis's manager, plus what it lacks: noticing that a connection died, and connections
//! without the driver's own response timeout (see `Manager::connect`).
//!
//! bb8-redis reports no connection as broken, so after a Redis restart a dead multiplexed
//! connection would be handed out forever. Here every command's error is inspected and a
//! connection-level failure marks the connection broken. The pool slot is given back before the
//! command runs (`RedisConnection::share`), so the mark is seen at the next check-out: only then
//! is the connection pinged, and replaced if the ping fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bb8::ManageConnection;
use bb8_redis::RedisConnectionManager;
use bb8_redis::redis::aio::MultiplexedConnection;
use bb8_redis::redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, RedisError};

#[derive(Debug)]
pub(crate) struct Manager {
    inner: RedisConnectionManager,
    client: Client,
}

impl Manager {
    pub(crate) fn new(inner: RedisConnectionManager, client: Client) -> Self {
        Self { inner, client }
    }
}

/// A pooled multiplexed connection that remembers whether it failed.
pub(crate) struct RedisConnection {
    conn: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    /// A handle on the same socket that does not hold the pool slot. A multiplexed connection
    /// pipelines any number of concurrent commands; holding it exclusively for a round trip would
    /// cap the cache's concurrency at the pool size (measured: queueing behind 4 connections
    /// turned into cache timeouts under load).
    pub(crate) fn share(&self) -> SharedConnection {
        SharedConnection {
            conn: self.conn.clone(),
            broken: self.broken.clone(),
        }
    }
}

/// See [`RedisConnection::share`]. Connection-level failures still mark the pooled connection.
pub(crate) struct SharedConnection {
    conn: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

impl SharedConnection {
    pub(crate) async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> Result<T, RedisError> {
        let result = cmd.query_async(&mut self.conn).await;
        if let Err(e) = &result
            && (e.is_connection_dropped() || e.is_io_error() || e.is_unrecoverable_error())
        {
            self.broken.store(true, Ordering::Release);
        }
        result
    }
}

impl ManageConnection for Manager {
    type Connection = RedisConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<RedisConnection, RedisError> {
        // No response timeout of the driver's own (500 ms by default): every call is already
        // bounded by the service (CACHE_TIMEOUT_MS, the memory watcher's check), and a second,
        // hidden bound failed the calls of a process that was merely busy (10 000 connections).
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(RedisConnection {
            conn,
            broken: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Runs on every check-out; a local flag test, not a PING round trip.
    async fn is_valid(&self, conn: &mut RedisConnection) -> Result<(), RedisError> {
        if conn.broken.load(Ordering::Acquire) {
            // Surfaces a real error from the dead connection.
            self.inner.is_valid(&mut conn.conn).await?;
            conn.broken.store(false, Ordering::Release);
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut RedisConnection) -> bool {
        conn.broken.load(Ordering::Acquire)
    }
}
