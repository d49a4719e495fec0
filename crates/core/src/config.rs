//! The service's tunables. The server reads them from the environment; these defaults are the
//! only place they are written.

use std::time::Duration;

/// Tunables of the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// How long a cached user or page may be served. Invalidation is explicit, so this only
    /// bounds memory and the damage of a missed invalidation. An entry in this process's memory
    /// is served for as long again while one reader refreshes it, or when that refresh fails.
    pub cache_ttl: Duration,
    /// Longest wait for one cache call before the service gives up on it and uses the store.
    pub cache_timeout: Duration,
    /// How long the cache is bypassed after it failed.
    pub cache_backoff: Duration,
    /// Longest wait for the store's readiness probe.
    pub store_ping_timeout: Duration,
    /// Most bytes of cached entries kept in this process's memory, in front of the shared cache;
    /// 0 keeps none (every read asks the shared cache). See `local_cache` for the coherence rules.
    pub local_cache_bytes: usize,
    /// How often the generation is checked while entries are served from memory; memory is
    /// no longer trusted once a check fails or takes ten checks, or twenty after the last good
    /// one.
    pub local_cache_check: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(60),
            cache_timeout: Duration::from_millis(100),
            cache_backoff: Duration::from_secs(1),
            store_ping_timeout: Duration::from_secs(2),
            local_cache_bytes: 16 << 20,
            local_cache_check: Duration::from_millis(100),
        }
    }
}
