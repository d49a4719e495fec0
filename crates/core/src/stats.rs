//! Counters of cache use, for metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of cache use, bumped by the cache-aside reads.
#[derive(Debug, Default)]
pub(crate) struct CacheStats {
    pub(crate) hits: AtomicU64,
    pub(crate) local_hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) shared: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) bypassed: AtomicU64,
}

/// A point-in-time copy of the cache counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStatsSnapshot {
    /// Reads answered by the shared cache.
    pub hits: u64,
    /// Reads answered from this process's memory (entries the shared cache vouches for).
    pub local_hits: u64,
    /// Reads the cache could not answer (absent or stale), answered by the store.
    pub misses: u64,
    /// Reads the cache could not answer, answered by another read's load of the same key that
    /// was in flight (one load per key at a time).
    pub shared: u64,
    /// Reads answered from this process's memory by an entry past its TTL, because the read
    /// that was refreshing it failed in the store (its cache read counted too: a miss, a bypass
    /// or a failed call).
    pub expired: u64,
    /// Cache calls that failed or timed out.
    pub errors: u64,
    /// Reads that skipped the cache because it had failed recently.
    pub bypassed: u64,
    /// Bytes of entries held in this process's memory now.
    pub local_bytes: u64,
}

impl CacheStats {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CacheStatsSnapshot {
        CacheStatsSnapshot {
            hits: self.hits.load(Ordering::Relaxed),
            local_hits: self.local_hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            shared: self.shared.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            bypassed: self.bypassed.load(Ordering::Relaxed),
            local_bytes: 0,
        }
    }
}
