//! The user service: validation has happened, now read through the cache and write through the
//! repository.
//!
//! ## Cache-aside with a generation
//! Every cached value is tagged with the *generation* it was read under, and every successful
//! write increments the generation (`users:generation`) before the write's result is returned.
//! A read fetches the generation and its key in one round trip (`get_many`) and trusts the value
//! only if its tag equals the current generation. This closes the classic cache-aside race (a slow
//! reader that loaded the old row stores it *after* the writer invalidated): the slow reader's tag
//! is the old generation, so nobody trusts it. It also needs no key enumeration to drop every list
//! page a write may have changed. Writes are rare next to reads in a user directory, so dropping
//! everything on every write costs little.
//!
//! ## When the cache fails
//! A cache error or timeout never fails a user request: the service logs it, counts it, serves
//! from the repository and bypasses the cache for `cache_backoff`. Writes made meanwhile could
//! not invalidate anything, so before the cache is trusted again the service increments the
//! generation; only if that succeeds is the cache back in use.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::page::{Page, PageRequest};
use crate::repository::UserRepository;
use crate::user::{NewUser, User, UserId, UserPatch};

const GENERATION_KEY: &str = "users:generation";
/// The key and value of the `/cache` demo, as the original application had them.
pub const DEMO_KEY: &str = "demo:my_key";
pub const DEMO_VALUE: &str = "Hello from Redis Cache!";

/// Tunables of the service; the server reads them from the environment.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// How long a cached user or page may be served. Invalidation is explicit, so this only
    /// bounds memory and the damage of a missed invalidation.
    pub cache_ttl: Duration,
    /// Longest wait for one cache call before the service gives up on it and uses the store.
    pub cache_timeout: Duration,
    /// How long the cache is bypassed after it failed.
    pub cache_backoff: Duration,
    /// Longest wait for the store's readiness probe.
    pub store_ping_timeout: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(60),
            cache_timeout: Duration::from_millis(100),
            cache_backoff: Duration::from_secs(1),
            store_ping_timeout: Duration::from_secs(2),
        }
    }
}

/// Counters of cache use, for metrics.
#[derive(Debug, Default)]
pub struct CacheStats {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    bypassed: AtomicU64,
}

/// A point-in-time copy of [`CacheStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStatsSnapshot {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads the cache could not answer (absent or stale), answered by the store.
    pub misses: u64,
    /// Cache calls that failed or timed out.
    pub errors: u64,
    /// Reads that skipped the cache because it had failed recently.
    pub bypassed: u64,
}

impl CacheStats {
    pub fn snapshot(&self) -> CacheStatsSnapshot {
        CacheStatsSnapshot {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            bypassed: self.bypassed.load(Ordering::Relaxed),
        }
    }
}

/// What `/cache` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheDemo {
    /// The key was absent and has now been set.
    Miss,
    /// The key held this value.
    Hit(String),
}

/// The outcome of the readiness probes.
#[derive(Debug)]
pub struct Readiness {
    pub store: Result<()>,
    pub cache: Result<()>,
}

/// Cache-aside user operations over any [`UserRepository`] and [`Cache`]. Cheap to clone.
#[derive(Clone)]
pub struct UserService {
    inner: Arc<Inner>,
}

struct Inner {
    repo: Arc<dyn UserRepository>,
    cache: Arc<dyn Cache>,
    config: ServiceConfig,
    stats: CacheStats,
    /// Set when the cache failed: it is bypassed until `retry_at` and re-synchronised first.
    cache_broken: AtomicBool,
    retry_at_ms: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for UserService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserService")
            .field("config", &self.inner.config)
            .field(
                "cache_broken",
                &self.inner.cache_broken.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl UserService {
    pub fn new(
        repo: Arc<dyn UserRepository>,
        cache: Arc<dyn Cache>,
        config: ServiceConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                repo,
                cache,
                config,
                stats: CacheStats::default(),
                cache_broken: AtomicBool::new(false),
                retry_at_ms: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        }
    }

    pub fn cache_stats(&self) -> CacheStatsSnapshot {
        self.inner.stats.snapshot()
    }

    pub async fn create_user(&self, user: NewUser) -> Result<User> {
        let created = self.inner.repo.create(&user).await?;
        self.invalidate().await;
        Ok(created)
    }

    pub async fn get_user(&self, id: UserId) -> Result<User> {
        let repo = &self.inner.repo;
        self.read_through(&format!("users:id:{id}"), || repo.get(id))
            .await?
            .ok_or(Error::NotFound(id))
    }

    pub async fn list_users(&self, page: PageRequest) -> Result<Page> {
        let key = format!(
            "users:page:{}:{}",
            page.limit(),
            page.after().map_or(-1, |a| a.0)
        );
        let repo = &self.inner.repo;
        self.read_through(&key, || async {
            let rows = repo.list(page.probe()).await?;
            Ok(Page::from_probe(rows, page))
        })
        .await
    }

    /// Applies a partial update.
    pub async fn update_user(&self, id: UserId, patch: UserPatch) -> Result<User> {
        let updated = self.inner.repo.update(id, &patch).await?;
        let updated = updated.ok_or(Error::NotFound(id))?;
        self.invalidate().await;
        Ok(updated)
    }

    /// Replaces every field a client may set.
    pub async fn replace_user(&self, id: UserId, user: NewUser) -> Result<User> {
        self.update_user(id, user.into()).await
    }

    pub async fn delete_user(&self, id: UserId) -> Result<()> {
        if !self.inner.repo.delete(id).await? {
            return Err(Error::NotFound(id));
        }
        self.invalidate().await;
        Ok(())
    }

    /// The original application's cache demo: read a key, set it when absent. Unlike user reads
    /// this *does* fail when the cache is down: the cache is what it demonstrates.
    pub async fn cache_demo(&self) -> Result<CacheDemo> {
        let cache = &self.inner.cache;
        let mut found = self.bounded(cache.get_many(&[DEMO_KEY])).await?;
        match found.pop().flatten() {
            Some(value) => Ok(CacheDemo::Hit(String::from_utf8_lossy(&value).into_owned())),
            None => {
                // An hour, not forever: the demo key must not pin memory on a shared Redis.
                let ttl = Duration::from_secs(3600);
                self.bounded(cache.set(DEMO_KEY, DEMO_VALUE.as_bytes(), ttl))
                    .await?;
                Ok(CacheDemo::Miss)
            }
        }
    }

    /// Probes the store and the cache concurrently, each with a timeout.
    pub async fn readiness(&self) -> Readiness {
        let inner = &self.inner;
        let store = async {
            tokio::time::timeout(inner.config.store_ping_timeout, inner.repo.ping())
                .await
                .unwrap_or_else(|_| Err(Error::store_unavailable("ping timed out")))
        };
        let (store, cache) = tokio::join!(store, self.bounded(inner.cache.ping()));
        Readiness { store, cache }
    }

    /// Runs one cache call within `cache_timeout`; a timeout is a cache error.
    async fn bounded<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.inner.config.cache_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::cache_unavailable("cache call timed out")),
        }
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }

    fn cache_failed(&self, error: &Error) {
        let inner = &self.inner;
        inner.stats.errors.fetch_add(1, Ordering::Relaxed);
        let was_broken = inner.cache_broken.swap(true, Ordering::AcqRel);
        let backoff = inner.config.cache_backoff.as_millis() as u64;
        inner
            .retry_at_ms
            .store(self.now_ms() + backoff, Ordering::Release);
        if !was_broken {
            tracing::warn!(error = %error, source = ?std::error::Error::source(error),
                "cache failed; serving from the store and bypassing the cache for {backoff} ms");
        }
    }

    /// Whether the cache may be used now. After a failure it is re-synchronised first: writes made
    /// while it was unreachable could not invalidate, so the generation is bumped before trusting
    /// anything in it again.
    async fn cache_usable(&self) -> bool {
        let inner = &self.inner;
        if !inner.cache_broken.load(Ordering::Acquire) {
            return true;
        }
        if self.now_ms() < inner.retry_at_ms.load(Ordering::Acquire) {
            return false;
        }
        match self.bounded(inner.cache.incr(GENERATION_KEY)).await {
            Ok(_) => {
                if inner.cache_broken.swap(false, Ordering::AcqRel) {
                    tracing::info!("cache is back; generation bumped, using it again");
                }
                true
            }
            Err(e) => {
                self.cache_failed(&e);
                false
            }
        }
    }

    /// Makes every cached user and page stale. Called after each successful write, before its
    /// result is returned.
    async fn invalidate(&self) {
        if !self.cache_usable().await {
            // The cache is unreachable: the re-synchronisation on its return does this job.
            return;
        }
        if let Err(e) = self.bounded(self.inner.cache.incr(GENERATION_KEY)).await {
            self.cache_failed(&e);
        }
    }

    async fn read_through<T, F, Fut>(&self, key: &str, load: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let inner = &self.inner;
        let mut generation = None;
        if self.cache_usable().await {
            match self
                .bounded(inner.cache.get_many(&[GENERATION_KEY, key]))
                .await
            {
                Ok(values) => {
                    let current = parse_generation(values.first().and_then(Option::as_deref));
                    if let Some(value) = values.get(1).and_then(|v| decode(v.as_deref()?, current))
                    {
                        inner.stats.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(value);
                    }
                    inner.stats.misses.fetch_add(1, Ordering::Relaxed);
                    generation = Some(current);
                }
                Err(e) => self.cache_failed(&e),
            }
        } else {
            inner.stats.bypassed.fetch_add(1, Ordering::Relaxed);
        }

        let value = load().await?;
        if let Some(generation) = generation {
            let encoded = encode(generation, &value)?;
            if let Err(e) = self
                .bounded(inner.cache.set(key, &encoded, inner.config.cache_ttl))
                .await
            {
                self.cache_failed(&e);
            }
        }
        Ok(value)
    }
}

fn parse_generation(raw: Option<&[u8]>) -> i64 {
    raw.and_then(|r| std::str::from_utf8(r).ok()?.parse().ok())
        .unwrap_or(0)
}

/// `<generation>\n<json>`: the tag first, so a stale value is rejected without parsing its JSON.
fn encode<T: Serialize>(generation: i64, value: &T) -> Result<Vec<u8>> {
    let mut out = format!("{generation}\n").into_bytes();
    serde_json::to_writer(&mut out, value).map_err(Error::internal)?;
    Ok(out)
}

fn decode<T: DeserializeOwned>(raw: &[u8], current: i64) -> Option<T> {
    let newline = raw.iter().position(|&b| b == b'\n')?;
    let tag = std::str::from_utf8(&raw[..newline])
        .ok()?
        .parse::<i64>()
        .ok()?;
    if tag != current {
        return None;
    }
    // A value that does not parse (e.g. written by another version) is a miss, not an error.
    serde_json::from_slice(&raw[newline + 1..]).ok()
}
