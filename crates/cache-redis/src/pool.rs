//! bb8-redis's manager, plus what it lacks: noticing that a connection died.
//!
//! bb8-redis reports no connection as broken, so after a Redis restart a dead multiplexed
//! connection would be handed out forever. Here every command's error is inspected, a
//! connection-level failure marks the connection broken, and the pool drops it on return.

use bb8::ManageConnection;
use bb8_redis::RedisConnectionManager;
use bb8_redis::redis::aio::MultiplexedConnection;
use bb8_redis::redis::{Cmd, FromRedisValue, RedisError};

#[derive(Debug)]
pub(crate) struct Manager {
    inner: RedisConnectionManager,
}

impl Manager {
    pub(crate) fn new(inner: RedisConnectionManager) -> Self {
        Self { inner }
    }
}

/// A pooled multiplexed connection that remembers whether it failed.
pub(crate) struct RedisConnection {
    conn: MultiplexedConnection,
    broken: bool,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    pub(crate) async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> Result<T, RedisError> {
        let result = cmd.query_async(&mut self.conn).await;
        if let Err(e) = &result
            && (e.is_connection_dropped() || e.is_io_error() || e.is_unrecoverable_error())
        {
            self.broken = true;
        }
        result
    }
}

impl ManageConnection for Manager {
    type Connection = RedisConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<RedisConnection, RedisError> {
        Ok(RedisConnection {
            conn: self.inner.connect().await?,
            broken: false,
        })
    }

    /// Runs on every check-out; a local flag test, not a PING round trip.
    async fn is_valid(&self, conn: &mut RedisConnection) -> Result<(), RedisError> {
        if conn.broken {
            // Surfaces a real error from the dead connection.
            self.inner.is_valid(&mut conn.conn).await?;
            conn.broken = false;
        }
        Ok(())
    }

    fn has_broken(&self, conn: &mut RedisConnection) -> bool {
        conn.broken
    }
}
