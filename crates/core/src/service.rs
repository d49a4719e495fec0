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
//! ## Bytes, not values
//! The cache holds the JSON the API sends. A hit is answered with those bytes as they are, with
//! no parsing and no serialising again ([`UserService::list_users_json`],
//! [`UserService::get_user_json`]); the typed methods decode them for programs that embed the
//! core.
//!
//! ## When the cache fails
//! A cache error or timeout never fails a user request: the service logs it, counts it, serves
//! from the repository and bypasses the cache for `cache_backoff`. A mere read failure leaves the
//! cache's contents valid. A write whose invalidation may not have reached the cache is counted
//! as *missed*: the cache was failing or bypassed, the write failed in a way that may still have
//! committed (the store became unavailable mid-write), or its future was dropped half-way (a
//! request timeout, a client that went away, the shutdown deadline). No read of this process
//! trusts the cache again until an increment sent after the last missed write has succeeded.
//! Other replicas learn of such a write only through that increment, or the TTL.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::page::{Page, PageJson, PageRequest};
use crate::repository::UserRepository;
use crate::user::{NewUser, User, UserId, UserPatch};

const GENERATION_KEY: &str = "users:generation";
/// Part of every cached key: bump it when the cached format changes, so that a new version never
/// reads what an old one wrote.
const FORMAT: &str = "v1";
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
    /// Set when a cache call failed: the cache is bypassed until `retry_at_ms`.
    cache_broken: AtomicBool,
    retry_at_ms: AtomicU64,
    /// Writes whose invalidation may not have reached the cache, counted since start.
    missed: AtomicU64,
    /// The value of `missed` that the last successful catch-up increment covers. The cache may
    /// be read only when this has caught up with `missed`.
    resynced: AtomicU64,
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
                missed: AtomicU64::new(0),
                resynced: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        }
    }

    pub fn cache_stats(&self) -> CacheStatsSnapshot {
        self.inner.stats.snapshot()
    }

    pub async fn create_user(&self, user: NewUser) -> Result<User> {
        self.write(self.inner.repo.create(&user)).await
    }

    pub async fn get_user(&self, id: UserId) -> Result<User> {
        serde_json::from_slice(&self.get_user_json(id).await?).map_err(Error::internal)
    }

    /// The user as the JSON object the API sends; a cache hit is returned as stored.
    pub async fn get_user_json(&self, id: UserId) -> Result<Vec<u8>> {
        let repo = &self.inner.repo;
        let key = format!("users:{FORMAT}:id:{id}");
        // Absence is cached too (as an empty value): ids that do not exist are asked for again.
        let raw = self
            .read_through(&key, || async {
                match repo.get(id).await? {
                    Some(user) => serde_json::to_vec(&user).map_err(Error::internal),
                    None => Ok(Vec::new()),
                }
            })
            .await?;
        if raw.is_empty() {
            return Err(Error::NotFound(id));
        }
        Ok(raw)
    }

    pub async fn list_users(&self, page: PageRequest) -> Result<Page> {
        let json = self.list_users_json(page).await?;
        Ok(Page {
            users: serde_json::from_slice(&json.body).map_err(Error::internal)?,
            next_after: json.next_after,
        })
    }

    /// The page as the JSON array the API sends, and the next page's cursor; a cache hit is
    /// returned as stored.
    pub async fn list_users_json(&self, page: PageRequest) -> Result<PageJson> {
        let key = format!(
            "users:{FORMAT}:page:{}:{}",
            page.limit(),
            page.after().map_or(-1, |a| a.0)
        );
        let repo = &self.inner.repo;
        // Stored as `<next cursor, or nothing>\n<JSON array>`.
        let raw = self
            .read_through(&key, || async {
                let page = Page::from_probe(repo.list(page.probe()).await?, page);
                let mut out = page
                    .next_after
                    .map_or_else(String::new, |next| next.to_string())
                    .into_bytes();
                out.push(b'\n');
                serde_json::to_writer(&mut out, &page.users).map_err(Error::internal)?;
                Ok(out)
            })
            .await?;
        let (next_after, body) =
            split_header(raw).ok_or_else(|| Error::internal("malformed cached page"))?;
        Ok(PageJson {
            body,
            next_after: next_after.map(UserId),
        })
    }

    /// Applies a partial update.
    pub async fn update_user(&self, id: UserId, patch: UserPatch) -> Result<User> {
        let repo = &self.inner.repo;
        self.write(async { repo.update(id, &patch).await?.ok_or(Error::NotFound(id)) })
            .await
    }

    /// Replaces every field a client may set.
    pub async fn replace_user(&self, id: UserId, user: NewUser) -> Result<User> {
        self.update_user(id, user.into()).await
    }

    pub async fn delete_user(&self, id: UserId) -> Result<()> {
        let repo = &self.inner.repo;
        self.write(async {
            repo.delete(id)
                .await?
                .then_some(())
                .ok_or(Error::NotFound(id))
        })
        .await
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
        let backoff = inner.config.cache_backoff.as_millis() as u64;
        // The deadline first: a reader that sees the flag must not see an old, passed deadline.
        inner
            .retry_at_ms
            .store(self.now_ms() + backoff, Ordering::Release);
        let was_broken = inner.cache_broken.swap(true, Ordering::AcqRel);
        if !was_broken {
            tracing::warn!(error = %error, source = ?std::error::Error::source(error),
                "cache failed; serving from the store and bypassing the cache for {backoff} ms");
        }
    }

    /// Whether the cache may be used now: not within the backoff after a failure, and only once an
    /// increment sent after the last missed write has succeeded.
    async fn cache_usable(&self) -> bool {
        let inner = &self.inner;
        if inner.cache_broken.load(Ordering::Acquire) {
            if self.now_ms() < inner.retry_at_ms.load(Ordering::Acquire) {
                return false;
            }
            if inner.cache_broken.swap(false, Ordering::AcqRel) {
                tracing::info!("trying the cache again");
            }
        }
        // Every caller that sees the gap sends its own increment instead of waiting for one in
        // flight: a few extra increments after an outage cost a few misses, whereas trusting the
        // cache before an increment has landed would serve what the missed write changed.
        let missed = inner.missed.load(Ordering::Acquire);
        if inner.resynced.load(Ordering::Acquire) < missed {
            if let Err(e) = self.bounded(inner.cache.incr(GENERATION_KEY)).await {
                self.cache_failed(&e);
                return false;
            }
            inner.resynced.fetch_max(missed, Ordering::AcqRel);
            tracing::info!("cache re-synchronised: writes made while it was unusable are visible");
        }
        true
    }

    /// Runs a write against the store, then invalidates what it may have changed before the
    /// result is returned. A write that is refused before it touches anything (not found, a
    /// duplicate, invalid) changes nothing; one that failed otherwise may have committed, so it
    /// invalidates too. If this future is dropped before the invalidation is confirmed, the write
    /// counts as missed.
    async fn write<T>(&self, op: impl Future<Output = Result<T>>) -> Result<T> {
        let unconfirmed = MissedOnDrop(Some(&self.inner.missed));
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
    /// as missed and the cache is re-synchronised before it is read again.
    async fn invalidate(&self) {
        let inner = &self.inner;
        if !self.cache_usable().await {
            inner.missed.fetch_add(1, Ordering::AcqRel);
            return;
        }
        if let Err(e) = self.bounded(inner.cache.incr(GENERATION_KEY)).await {
            inner.missed.fetch_add(1, Ordering::AcqRel);
            self.cache_failed(&e);
        }
    }

    /// Cache-aside for bytes: the cached value under `key` if it was stored under the current
    /// generation, else `load()`'s, which is then stored tagged with that generation.
    async fn read_through<F, Fut>(&self, key: &str, load: F) -> Result<Vec<u8>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>>>,
    {
        let inner = &self.inner;
        let mut generation = None;
        if self.cache_usable().await {
            match self
                .bounded(inner.cache.get_many(&[GENERATION_KEY, key]))
                .await
            {
                Ok(mut values) => {
                    let current = parse_generation(values.first().and_then(Option::as_deref));
                    let cached = values.get_mut(1).and_then(Option::take);
                    if let Some(value) = cached.and_then(|raw| untag(raw, current)) {
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
            let mut tagged = format!("{generation}\n").into_bytes();
            tagged.extend_from_slice(&value);
            if let Err(e) = self
                .bounded(inner.cache.set(key, &tagged, inner.config.cache_ttl))
                .await
            {
                self.cache_failed(&e);
            }
        }
        Ok(value)
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

fn parse_generation(raw: Option<&[u8]>) -> i64 {
    raw.and_then(|r| std::str::from_utf8(r).ok()?.parse().ok())
        .unwrap_or(0)
}

/// The value of a `<generation>\n<value>` entry if its generation is `current`, else `None`.
fn untag(raw: Vec<u8>, current: i64) -> Option<Vec<u8>> {
    match split_header(raw)? {
        (Some(tag), value) if tag == current => Some(value),
        _ => None,
    }
}

/// Splits `<integer or nothing>\n<rest>`, the shape of both the cache's entries and a cached
/// page; `None` if malformed.
fn split_header(mut raw: Vec<u8>) -> Option<(Option<i64>, Vec<u8>)> {
    let newline = raw.iter().position(|&b| b == b'\n')?;
    let header = match std::str::from_utf8(&raw[..newline]).ok()? {
        "" => None,
        number => Some(number.parse().ok()?),
    };
    raw.drain(..=newline);
    Some((header, raw))
}
