//! Errors of setting up the Redis adapter. Errors of cache operations are
//! [`userstack_core::Error::CacheUnavailable`], as the port requires.

use bb8_redis::redis::RedisError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(#[source] RedisError),
}
