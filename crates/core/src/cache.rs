//! The port to a shared key-value cache.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::error::Result;

/// A shared byte cache with expiry, such as Redis. Implementations:
/// `userstack_cache_redis::RedisCache` and [`crate::memory::InMemoryCache`]; both pass the same
/// contract tests (`userstack_core::testing`, feature `testing`).
///
/// Every method returns [`Error::CacheUnavailable`](crate::Error::CacheUnavailable) when the
/// cache cannot be reached or fails, and nothing else. Keys are plain strings chosen by the
/// service; an implementation may prefix them (to share a server) but must do so consistently.
/// Calls may be abandoned mid-flight (the service bounds each with a timeout), so an
/// implementation must stay usable when a future is dropped.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The values of `keys`, in order, `None` where a key is missing or expired. One round trip.
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>>;

    /// Stores `value` under `key`, expiring after `ttl`.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()>;

    /// Atomically increments the integer under `key` (missing counts as 0) and returns the new
    /// value, which is also announced to every [`Cache::watch`] of `key`. The counter itself
    /// never expires.
    async fn incr(&self, key: &str) -> Result<i64>;

    /// The values [`Cache::incr`] gives `key` from now on, in order, from any client of this
    /// cache. The receiver is closed when the subscription is lost (the connection broke, the
    /// cache was switched off) or the receiver fell behind: values may have been missed then,
    /// and the caller subscribes again. Dropping the receiver ends the subscription.
    async fn watch(&self, key: &str) -> Result<mpsc::Receiver<i64>>;

    /// Removes `key`; removing a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Succeeds when the cache answers (readiness).
    async fn ping(&self) -> Result<()>;
}
