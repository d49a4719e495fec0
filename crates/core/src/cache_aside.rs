//! Cache-aside with a generation: the algorithm, its state, and the one format of a cache entry.
//!
//! ## A generation
//! Every cached value is tagged with the *generation* it was read under, and every successful
//! write, before its result is returned, waits for an increment of the generation
//! (`users:generation`) sent after it finished (writes that finish together share one:
//! [`crate::increments`]).
//! A read fetches the generation and its key in one round trip (`get_many`) and trusts the value
//! only if its tag equals the current generation. This closes the classic cache-aside race (a slow
//! reader that loaded the old row stores it *after* the writer invalidated): the slow reader's tag
//! is the old generation, so nobody trusts it. It also needs no key enumeration to drop every list
//! page a write may have changed. Writes are rare next to reads in a user directory, so dropping
//! everything on every write costs little. Before asking the cache, a read looks in this
//! process's memory, which holds entries of the generation the cache last announced
//! ([`crate::local_cache`]); the same tags decide there.
//!
//! ## Bytes, not values
//! An [`Entry`] holds the JSON the API sends (and, for a page, the next page's cursor). A hit is
//! handed back as those bytes, never parsed here; a miss hands back the loaded value itself, so
//! a typed caller never decodes what was just encoded. [`Entry::encode`] and [`Entry::decode`]
//! are the only code that knows how an entry looks in the cache.
//!
//! ## When the cache fails
//! A cache error or timeout never fails a user request: the failure is logged and counted, the
//! value is loaded from the store, and the cache is bypassed for `cache_backoff`. A mere read
//! failure leaves the cache's contents valid. A write whose invalidation may not have reached the
//! cache is counted as *missed*: the cache was failing or bypassed, the write failed in a way that
//! may still have committed (the store became unavailable mid-write), or its future was dropped
//! half-way (a request timeout, a client that went away, the shutdown deadline). No read of this
//! process trusts the cache again until an increment sent after the last missed write has
//! succeeded. Other replicas learn of such a write only through that increment, or the TTL.

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;

use crate::cache::Cache;
use crate::config::ServiceConfig;
use crate::error::{Error, Result};
use crate::flight::{self, Flights, Lead, Turn};
use crate::increments::SharedIncrements;
use crate::local_cache::{self, LocalCache};
use crate::stats::{CacheStats, CacheStatsSnapshot};
use crate::user::UserId;

pub(crate) const GENERATION_KEY: &str = "users:generation";

/// What one cache key holds: the JSON body the API sends, the cursor of the next page when the
/// body is a page, and the generation it was read under.
///
/// Stored as `<generation> <cursor, or ->\n<body>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub generation: i64,
    pub cursor: Option<UserId>,
    /// Shared, not copied, by every response that sends it.
    pub body: Bytes,
}

impl Entry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let cursor = self
            .cursor
            .map_or_else(|| "-".to_owned(), |c| c.to_string());
        let mut raw = format!("{} {cursor}\n", self.generation).into_bytes();
        raw.extend_from_slice(&self.body);
        raw
    }

    /// `None` for anything [`Entry::encode`] did not write (another version's format, garbage):
    /// the caller treats it as absent.
    pub(crate) fn decode(raw: Vec<u8>) -> Option<Self> {
        let newline = raw.iter().position(|&b| b == b'\n')?;
        let header = std::str::from_utf8(&raw[..newline]).ok()?;
        let (generation, cursor) = header.split_once(' ')?;
        let generation = generation.parse().ok()?;
        let cursor = match cursor {
            "-" => None,
            digits => Some(UserId(digits.parse().ok()?)),
        };
        Some(Self {
            generation,
            cursor,
            body: Bytes::from(raw).slice(newline + 1..),
        })
    }
}

/// A value that can be cached, as the cursor and body of an [`Entry`].
pub(crate) trait Cacheable: Sized {
    /// The next page's cursor (`None` but for pages) and the JSON body the API sends.
    fn encode(&self) -> Result<(Option<UserId>, Bytes)>;
    fn decode(cursor: Option<UserId>, body: Bytes) -> Result<Self>;
}

/// What a cache-aside read found.
pub(crate) enum Fetched<T> {
    /// The cache had a current entry.
    Hit(Entry),
    /// The store had to be asked; `stored` is the entry written to the cache, if one was.
    Loaded { value: T, stored: Option<Entry> },
}

impl<T: Cacheable> Fetched<T> {
    /// The value, decoded only if it came from the cache.
    pub(crate) fn into_value(self) -> Result<T> {
        match self {
            Self::Hit(entry) => T::decode(entry.cursor, entry.body),
            Self::Loaded { value, .. } => Ok(value),
        }
    }

    /// The cursor and body, encoded only if that has not happened yet.
    pub(crate) fn into_encoded(self) -> Result<(Option<UserId>, Bytes)> {
        match self {
            Self::Hit(entry)
            | Self::Loaded {
                stored: Some(entry),
                ..
            } => Ok((entry.cursor, entry.body)),
            Self::Loaded {
                value,
                stored: None,
            } => value.encode(),
        }
    }
}

/// The cache-aside machinery over one [`Cache`]: bounded calls, backoff after failures, the
/// generation, the bookkeeping of missed invalidations, and the entries kept in memory.
pub(crate) struct CacheAside {
    cache: Arc<dyn Cache>,
    config: ServiceConfig,
    local: Arc<LocalCache>,
    /// The loads from the store in flight, one per key.
    flights: Flights,
    /// The task keeping `local`'s generation current, started by the first read.
    watcher: OnceLock<AbortOnDrop>,
    stats: CacheStats,
    /// Set when a cache call failed: the cache is bypassed until `retry_at_ms`.
    broken: AtomicBool,
    retry_at_ms: AtomicU64,
    /// Writes whose invalidation may not have reached the cache, counted since start.
    missed: AtomicU64,
    /// The value of `missed` that the last successful catch-up increment covers. The cache may
    /// be read only when this has caught up with `missed`.
    resynced: AtomicU64,
    /// Writes that finish together share one increment.
    increments: SharedIncrements,
    epoch: Instant,
}

impl CacheAside {
    pub(crate) fn new(cache: Arc<dyn Cache>, config: ServiceConfig) -> Self {
        Self {
            local: Arc::new(LocalCache::new(&config)),
            flights: Flights::default(),
            watcher: OnceLock::new(),
            cache,
            config,
            stats: CacheStats::default(),
            broken: AtomicBool::new(false),
            retry_at_ms: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            resynced: AtomicU64::new(0),
            increments: SharedIncrements::default(),
            epoch: Instant::now(),
        }
    }

    pub(crate) fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The port itself, for the callers whose point is the cache (the demo, readiness).
    pub(crate) fn port(&self) -> &dyn Cache {
        self.cache.as_ref()
    }

    pub(crate) fn stats(&self) -> CacheStatsSnapshot {
        CacheStatsSnapshot {
            local_bytes: self.local.bytes() as u64,
            ..self.stats.snapshot()
        }
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Runs one cache call within `cache_timeout`; a timeout is a cache error.
    pub(crate) async fn bounded<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.config.cache_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::cache_unavailable("cache call timed out")),
        }
    }

    /// This reader's turn at loading `key` under `generation`: `Continue` with the lead if it
    /// loads, or with nothing if the load it waited for failed (it then reads for itself);
    /// `Break` with the entry another reader's load ended with.
    async fn turn(&self, key: &str, generation: i64) -> ControlFlow<Entry, Option<Lead<'_>>> {
        match self.flights.join(key, generation) {
            Turn::Lead(first) => ControlFlow::Continue(Some(first)),
            Turn::Wait(loading) => match flight::wait(loading).await {
                Some(entry) => {
                    CacheStats::count(&self.stats.shared);
                    ControlFlow::Break(entry)
                }
                None => ControlFlow::Continue(None),
            },
        }
    }

    /// The entry under `key` if it was stored under the current generation; else `load()`'s
    /// value, stored tagged with that generation when the cache is usable.
    pub(crate) async fn read_through<T, Fut>(
        &self,
        key: &str,
        load: impl FnOnce() -> Fut,
    ) -> Result<Fetched<T>>
    where
        T: Cacheable,
        Fut: Future<Output = Result<T>>,
    {
        // Memory answers whenever the watcher vouches for it and no write of this process is
        // waiting for its catch-up increment, even within the backoff after a failed cache call:
        // a hung or restarted cache fails the watcher's checks or its watch by itself, whereas
        // an overloaded process's own calls time out because it runs them late, and letting
        // those withdraw memory sent every read to Redis when the process was busiest.
        let mut lead = None;
        // An entry past its TTL that this reader refreshes: still the answer if the refresh fails.
        let mut expired = None;
        if self.caught_up() {
            match self.local.lookup(key) {
                Some((entry, false)) => {
                    CacheStats::count(&self.stats.local_hits);
                    return Ok(Fetched::Hit(entry));
                }
                // Past its TTL: one reader refreshes it; the others are served it meanwhile, so
                // that a hot key's expiry holds no request up (`crate::flight`).
                Some((entry, true)) => match self.flights.join(key, entry.generation) {
                    Turn::Lead(first) => (lead, expired) = (Some(first), Some(entry)),
                    Turn::Wait(_) => {
                        CacheStats::count(&self.stats.local_hits);
                        return Ok(Fetched::Hit(entry));
                    }
                },
                // Memory vouches for the generation but lacks this key (a write emptied memory,
                // or it was never read here): one reader asks the cache, and the store if need
                // be; the others wait for its entry instead of one read each.
                None => {
                    if let Some(vouched) = self.local.current() {
                        match self.turn(key, vouched).await {
                            ControlFlow::Break(entry) => return Ok(Fetched::Hit(entry)),
                            ControlFlow::Continue(first) => lead = first,
                        }
                    }
                }
            }
        }
        let mut generation = None;
        if self.usable().await {
            self.start_watching();
            match self
                .bounded(self.cache.get_many(&[GENERATION_KEY, key]))
                .await
            {
                Ok(mut values) => {
                    let current = parse_generation(values.first().and_then(Option::as_deref));
                    let cached = values.get_mut(1).and_then(Option::take);
                    if let Some(entry) = cached.and_then(Entry::decode)
                        && entry.generation == current
                    {
                        CacheStats::count(&self.stats.hits);
                        self.local.put(key, &entry);
                        if let Some(lead) = lead {
                            lead.finish(&entry);
                        }
                        return Ok(Fetched::Hit(entry));
                    }
                    generation = Some(current);
                }
                Err(e) => self.failed(&e),
            }
        } else {
            CacheStats::count(&self.stats.bypassed);
        }

        // A miss in the cache too: one reader per key loads from the store, the others that
        // missed meanwhile take its entry.
        if lead.is_none()
            && let Some(current) = generation
        {
            match self.turn(key, current).await {
                ControlFlow::Break(entry) => return Ok(Fetched::Hit(entry)),
                ControlFlow::Continue(first) => lead = first,
            }
        }
        if generation.is_some() {
            CacheStats::count(&self.stats.misses);
        }
        let value = match load().await {
            Ok(value) => value,
            // The readers served the expired entry meanwhile were right to be: unless a write
            // has made it stale since (the cache showed a newer generation, or memory has heard
            // of one), it is still the last state of the key known, and a store that is down or
            // slow should not turn it into an error for the one reader that refreshes it.
            Err(e) => match expired {
                Some(entry)
                    if generation.is_none_or(|g| g == entry.generation)
                        && self.caught_up()
                        && self.local.current() == Some(entry.generation) =>
                {
                    CacheStats::count(&self.stats.expired);
                    return Ok(Fetched::Hit(entry));
                }
                _ => return Err(e),
            },
        };
        let Some(generation) = generation else {
            // The cache failed or is bypassed. A reader leading since memory vouched for the
            // flight's generation loaded after that moment: its value is as fresh as a
            // memory entry of that generation, so the waiting readers may take it.
            if let Some(lead) = lead
                && let Ok((cursor, body)) = value.encode()
            {
                let generation = lead.generation();
                lead.finish(&Entry {
                    generation,
                    cursor,
                    body,
                });
            }
            return Ok(Fetched::Loaded {
                value,
                stored: None,
            });
        };
        let (cursor, body) = value.encode()?;
        let entry = Entry {
            generation,
            cursor,
            body,
        };
        if let Some(lead) = lead {
            lead.finish(&entry);
        }
        let raw = entry.encode();
        let stored = self.cache.set(key, &raw, self.config.cache_ttl);
        match self.bounded(stored).await {
            Ok(()) => self.local.put(key, &entry),
            Err(e) => self.failed(&e),
        }
        Ok(Fetched::Loaded {
            value,
            stored: Some(entry),
        })
    }

    /// Runs a write against the store, then invalidates what it may have changed before the
    /// result is returned. A write that is refused before it touches anything (not found, a
    /// duplicate, invalid) changes nothing; one that failed otherwise may have committed, so it
    /// invalidates too. If this future is dropped before the invalidation is confirmed, the write
    /// counts as missed.
    pub(crate) async fn write<T>(&self, op: impl Future<Output = Result<T>>) -> Result<T> {
        let unconfirmed = MissedOnDrop(Some(&self.missed));
        let result = op.await;
        if matches!(
            result,
            Ok(_) | Err(Error::StoreUnavailable(_) | Error::Internal(_))
        ) {
            self.invalidate().await;
        }
        unconfirmed.disarm();
        result
    }

    /// Makes every cached user and page stale; if the cache cannot be told now, the write counts
    /// as missed and the cache is re-synchronised before it is read again. The increment is
    /// shared with the writes that finish while the previous one is in flight.
    async fn invalidate(&self) {
        if !self.usable().await {
            self.missed.fetch_add(1, Ordering::AcqRel);
            return;
        }
        let increment = || async {
            match self.bounded(self.cache.incr(GENERATION_KEY)).await {
                Ok(generation) => {
                    self.local.observe(generation);
                    true
                }
                Err(e) => {
                    self.failed(&e);
                    false
                }
            }
        };
        if !self.increments.after_write(increment).await {
            self.missed.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Starts the task that keeps memory's generation current, once, if memory is used at all.
    fn start_watching(&self) {
        if self.local.enabled() {
            self.watcher.get_or_init(|| {
                let (local, cache) = (self.local.clone(), self.cache.clone());
                AbortOnDrop(tokio::spawn(local_cache::watch(
                    local,
                    cache,
                    self.config.clone(),
                )))
            });
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn failed(&self, error: &Error) {
        CacheStats::count(&self.stats.errors);
        // Memory stays as the watcher left it (see `read_through`).
        let backoff = self.config.cache_backoff.as_millis() as u64;
        // The deadline first: a reader that sees the flag must not see an old, passed deadline.
        self.retry_at_ms
            .store(self.now_ms() + backoff, Ordering::Release);
        let was_broken = self.broken.swap(true, Ordering::AcqRel);
        if !was_broken {
            tracing::warn!(error = %error, source = ?std::error::Error::source(error),
                "cache failed; serving from the store and bypassing the cache for {backoff} ms");
        }
    }

    /// Whether every write this process could not announce has been covered by an increment.
    fn caught_up(&self) -> bool {
        self.resynced.load(Ordering::Acquire) >= self.missed.load(Ordering::Acquire)
    }

    /// Whether the cache may be used now: not within the backoff after a failure, and only once an
    /// increment sent after the last missed write has succeeded.
    async fn usable(&self) -> bool {
        if self.broken.load(Ordering::Acquire) {
            if self.now_ms() < self.retry_at_ms.load(Ordering::Acquire) {
                return false;
            }
            if self.broken.swap(false, Ordering::AcqRel) {
                tracing::info!("trying the cache again");
            }
        }
        // Every caller that sees the gap sends its own increment instead of waiting for one in
        // flight: a few extra increments after an outage cost a few misses, whereas trusting the
        // cache before an increment has landed would serve what the missed write changed.
        let missed = self.missed.load(Ordering::Acquire);
        if self.resynced.load(Ordering::Acquire) < missed {
            match self.bounded(self.cache.incr(GENERATION_KEY)).await {
                Ok(generation) => {
                    self.local.observe(generation);
                }
                Err(e) => {
                    self.failed(&e);
                    return false;
                }
            }
            self.resynced.fetch_max(missed, Ordering::AcqRel);
            tracing::info!("cache re-synchronised: writes made while it was unusable are visible");
        }
        true
    }
}

/// Aborts the task when the service is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counts a write as missed when dropped armed: its future was abandoned before the invalidation
/// was confirmed (or counted as missed by `invalidate` itself).
struct MissedOnDrop<'a>(Option<&'a AtomicU64>);

impl MissedOnDrop<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for MissedOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(missed) = self.0 {
            missed.fetch_add(1, Ordering::AcqRel);
        }
    }
}

pub(crate) fn parse_generation(raw: Option<&[u8]>) -> i64 {
    raw.and_then(|r| std::str::from_utf8(r).ok()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_decodes_to_what_was_encoded() {
        for entry in [
            Entry {
                generation: 0,
                cursor: None,
                body: Bytes::from_static(b"{\"id\":1}\n"),
            },
            Entry {
                generation: -3,
                cursor: Some(UserId(42)),
                body: Bytes::from_static(b"[]"),
            },
            Entry {
                generation: i64::MAX,
                cursor: None,
                body: Bytes::new(),
            },
        ] {
            assert_eq!(Entry::decode(entry.encode()), Some(entry));
        }
    }

    #[test]
    fn anything_else_is_not_an_entry() {
        for raw in ["", "7", "7\n{}", "x -\n{}", "7 x\n[]", "\n", "7 -"] {
            assert_eq!(Entry::decode(raw.as_bytes().to_vec()), None, "{raw:?}");
        }
    }
}
