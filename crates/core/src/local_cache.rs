//! Entries kept in this process's memory, in front of the shared cache, and how this process
//! learns that they went stale.
//!
//! A warm read that goes to Redis costs a round trip, a second process's CPU and a copy of the
//! page: measured, that caps the warm `GET /users` at half of what nginx serves from a file
//! (docs/performance.md). Serving it from memory needs the current generation without asking
//! for it on each read, so the generation comes to us instead:
//!
//! - [`Cache::incr`] announces each new generation to the watchers of its key
//!   ([`Cache::watch`]); a watcher task (one per service) moves [`LocalCache`]'s `known`
//!   generation forward as the announcements arrive, so a write on any replica makes every
//!   replica's entries stale within one message's flight.
//! - The same task reads the generation every `local_cache_check` and stops trusting memory at
//!   once when that read fails, finds the generation lower (the cache was emptied or restarted),
//!   or has not answered within [`CHECK_TIMEOUT_CHECKS`] checks (a hung cache); memory also
//!   lapses [`TRUST_CHECKS`] checks after the last good one, should the checks stop. Until the
//!   watch is set up, and whenever it breaks, nothing is served from memory and reads go to the
//!   shared cache as before.
//! - This process's own writes move `known` forward themselves, before they are acknowledged, so
//!   a client always reads its own writes on the replica that took them.
//!
//! Both bounds are generous on purpose. A process with thousands of busy connections runs its
//! watcher, and the cache client's tasks, after every connection ahead of them in the run
//! queue: measured at 5000 connections, a check then took longer than `cache_timeout` and than
//! three checks, trust was withdrawn, and reads went to Redis exactly when the process was most
//! loaded. The price: while a hung Redis goes unnoticed (about one second with the defaults),
//! memory here may serve what another replica changed meanwhile (that replica's increment cannot
//! reach Redis either: it counts the write as missed and re-synchronises the generation once
//! Redis answers, which then reaches this memory too). Failed cache calls of user requests do
//! not withdraw trust (see `cache_aside::CacheAside::read_through`).
//!
//! An entry is only put here when it was read from (or written to) the shared cache under the
//! generation `known` holds, and only served while `known` still holds it, so the rules of
//! [`crate::cache_aside`] hold here too. Memory holds one generation at a time (a newer one
//! empties it: nothing older can be served again) and is bounded by bytes; when full, the
//! entries stored longest ago go first (a hot key comes back at its next read).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::cache::Cache;
use crate::cache_aside::{Entry, GENERATION_KEY, parse_generation};
use crate::config::ServiceConfig;

/// Memory is trusted for this many checks after the last good one (a watcher that stopped).
pub(crate) const TRUST_CHECKS: u32 = 20;

/// A check that has not answered within this many checks (or `cache_timeout`, if longer) fails.
pub(crate) const CHECK_TIMEOUT_CHECKS: u32 = 10;

/// `known` while no generation is vouched for.
const UNKNOWN: i64 = i64::MIN;

pub(crate) struct LocalCache {
    budget: usize,
    ttl: Duration,
    entries: RwLock<Entries>,
    /// The current generation as far as this process knows, or [`UNKNOWN`].
    known: AtomicI64,
    /// Milliseconds since `epoch` until which `known` is vouched for.
    trusted_until_ms: AtomicU64,
    /// How often trust was withdrawn: the watcher starts over when anyone withdrew it.
    distrusted: AtomicU64,
    epoch: Instant,
}

#[derive(Default)]
struct Entries {
    /// The generation every entry carries.
    generation: i64,
    /// Each entry, when it was stored, and its place in `order`.
    map: HashMap<String, (Entry, Instant, u64)>,
    /// Keys by when they were stored, oldest first.
    order: BTreeMap<u64, String>,
    stored: u64,
    bytes: usize,
}

impl Entries {
    fn remove(&mut self, key: &str) {
        if let Some((old, _, place)) = self.map.remove(key) {
            self.order.remove(&place);
            self.bytes -= cost(key, &old);
        }
    }

    fn clear(&mut self, generation: i64) {
        self.map.clear();
        self.order.clear();
        self.bytes = 0;
        self.generation = generation;
    }

    /// Stores `entry` under `key`, which must not be present (`remove` it first).
    fn insert(&mut self, key: &str, entry: &Entry) {
        self.stored += 1;
        self.order.insert(self.stored, key.to_owned());
        self.bytes += cost(key, entry);
        self.map
            .insert(key.to_owned(), (entry.clone(), Instant::now(), self.stored));
    }
}

fn cost(key: &str, entry: &Entry) -> usize {
    key.len() + entry.body.len() + 64
}

impl LocalCache {
    pub(crate) fn new(config: &ServiceConfig) -> Self {
        Self {
            budget: config.local_cache_bytes,
            ttl: config.cache_ttl,
            entries: RwLock::default(),
            known: AtomicI64::new(UNKNOWN),
            trusted_until_ms: AtomicU64::new(0),
            distrusted: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.budget > 0
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The generation entries must carry to be served, if memory may be used now.
    pub(crate) fn current(&self) -> Option<i64> {
        if self.now_ms() >= self.trusted_until_ms.load(Ordering::Acquire) {
            return None;
        }
        let known = self.known.load(Ordering::Acquire);
        (known != UNKNOWN).then_some(known)
    }

    /// The entry under `key`, if memory is trusted and it carries the current generation.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &str) -> Option<Entry> {
        self.lookup(key)
            .and_then(|(entry, expired)| (!expired).then_some(entry))
    }

    /// The entry under `key`, if memory is trusted and it carries the current generation, and
    /// whether its TTL has passed. An expired entry is still handed out for one more TTL: it is
    /// as current as a fresh one (the generation says so), and while one reader refreshes it the
    /// others are served it instead of waiting (`CacheAside::read_through`).
    pub(crate) fn lookup(&self, key: &str) -> Option<(Entry, bool)> {
        let current = self.current()?;
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let (entry, stored_at, _) = entries.map.get(key)?;
        let age = stored_at.elapsed();
        (entry.generation == current && age < self.ttl * 2)
            .then(|| (entry.clone(), age >= self.ttl))
    }

    /// Keeps `entry` if it carries the current generation and fits the budget.
    pub(crate) fn put(&self, key: &str, entry: &Entry) {
        if self.current() != Some(entry.generation) || cost(key, entry) > self.budget {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.generation != entry.generation {
            entries.clear(entry.generation);
        }
        entries.remove(key);
        while entries.bytes + cost(key, entry) > self.budget {
            let Some((_, oldest)) = entries.order.pop_first() else {
                break;
            };
            entries.remove(&oldest);
        }
        entries.insert(key, entry);
    }

    /// A generation this process saw the cache hand out (its own write's increment, or an
    /// announcement). A lower one than `known` means the counter went back: trust is withdrawn
    /// until the watcher has started over, and `true` is returned.
    pub(crate) fn observe(&self, generation: i64) -> bool {
        let before = self.known.fetch_max(generation, Ordering::AcqRel);
        let went_back = generation < before && before != UNKNOWN;
        if went_back {
            self.distrust();
        }
        went_back
    }

    /// Nothing is served from memory until the watcher vouches again.
    fn distrust(&self) {
        self.trusted_until_ms.store(0, Ordering::Release);
        self.known.store(UNKNOWN, Ordering::Release);
        self.distrusted.fetch_add(1, Ordering::AcqRel);
    }

    /// Starts over at `generation`, read after the watch was set up, and empties memory.
    /// Returns the count of withdrawals to compare with before each renewal of trust.
    fn restart(&self, generation: i64, vouch_for: Duration) -> u64 {
        self.distrust();
        let distrusted = self.distrusted.load(Ordering::Acquire);
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.clear(generation);
        drop(entries);
        // A max, not a store: a write of ours may have observed a newer one meanwhile.
        self.known.fetch_max(generation, Ordering::AcqRel);
        self.vouch(vouch_for);
        distrusted
    }

    fn vouch(&self, vouch_for: Duration) {
        let until = self.now_ms() + vouch_for.as_millis() as u64;
        self.trusted_until_ms.store(until, Ordering::Release);
    }

    /// How many bytes memory holds now, for tests and metrics.
    pub(crate) fn bytes(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).bytes
    }
}

/// Keeps `local`'s generation current for as long as it runs: watches the generation, checks it
/// every `local_cache_check`, and starts over after any failure. Runs until aborted.
pub(crate) async fn watch(local: Arc<LocalCache>, cache: Arc<dyn Cache>, config: ServiceConfig) {
    let check = config.local_cache_check;
    let vouch_for = check * TRUST_CHECKS;
    let timeout = (check * CHECK_TIMEOUT_CHECKS).max(config.cache_timeout);
    // Memory starts untrusted, and every turn of this loop ends with trust withdrawn.
    loop {
        let watching = match tokio::time::timeout(timeout, cache.watch(GENERATION_KEY)).await {
            Ok(Ok(rx)) => Some(rx),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot watch the cache's generation");
                None
            }
            Err(_) => None,
        };
        if let Some(mut announcements) = watching {
            // Read only once the watch is set up: an increment between the two is then either
            // in this read or announced after it.
            if let Some(generation) = read_generation(cache.as_ref(), timeout).await {
                let distrusted = local.restart(generation, vouch_for);
                tracing::debug!(generation, "serving cached entries from memory");
                let mut ticks = tokio::time::interval(check);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks.tick().await;
                let why = loop {
                    tokio::select! {
                        announced = announcements.recv() => match announced {
                            Some(generation) => if local.observe(generation) {
                                break "an announced generation went back";
                            },
                            None => break "the watch ended",
                        },
                        _ = ticks.tick() => {
                            let Some(generation) = read_generation(cache.as_ref(), timeout).await
                            else {
                                break "a check failed or timed out";
                            };
                            if local.observe(generation) {
                                break "the checked generation went back";
                            }
                            // Trust is renewed only if nobody withdrew it since the start.
                            if local.distrusted.load(Ordering::Acquire) != distrusted {
                                break "trust was withdrawn";
                            }
                            local.vouch(vouch_for);
                        }
                    }
                };
                tracing::debug!(why, "stopped serving cached entries from memory");
            }
        }
        local.distrust();
        tokio::time::sleep(config.cache_backoff.min(check * 10)).await;
    }
}

async fn read_generation(cache: &dyn Cache, timeout: Duration) -> Option<i64> {
    match tokio::time::timeout(timeout, cache.get_many(&[GENERATION_KEY])).await {
        Ok(Ok(values)) => Some(parse_generation(values.first().and_then(Option::as_deref))),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, source = ?std::error::Error::source(&e),
                "reading the generation failed");
            None
        }
        Err(_) => {
            tracing::debug!(?timeout, "reading the generation timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(generation: i64, body: &str) -> Entry {
        Entry {
            generation,
            cursor: None,
            body: body.as_bytes().to_vec().into(),
        }
    }

    fn trusted(generation: i64, budget: usize) -> LocalCache {
        let local = LocalCache::new(&ServiceConfig {
            local_cache_bytes: budget,
            ..ServiceConfig::default()
        });
        local.restart(generation, Duration::from_secs(60));
        local
    }

    #[test]
    fn serves_only_entries_of_the_current_generation() {
        let local = trusted(4, 1 << 20);
        local.put("a", &entry(4, "[1]"));
        local.put("old", &entry(3, "[0]"));
        assert_eq!(local.get("a"), Some(entry(4, "[1]")));
        assert_eq!(
            local.get("old"),
            None,
            "an entry of another generation is not kept"
        );
        local.observe(5);
        assert_eq!(local.get("a"), None, "a newer generation makes it stale");
    }

    #[test]
    fn serves_nothing_while_distrusted_or_after_the_counter_went_back() {
        let local = trusted(4, 1 << 20);
        local.put("a", &entry(4, "[1]"));
        local.observe(2);
        assert_eq!(local.get("a"), None);
        local.put("b", &entry(2, "[2]"));
        assert_eq!(local.get("b"), None, "nothing is kept while distrusted");

        let local = trusted(4, 1 << 20);
        local.put("a", &entry(4, "[1]"));
        local.vouch(Duration::ZERO);
        assert_eq!(local.get("a"), None, "trust lapses without checks");
    }

    #[test]
    fn stays_within_its_byte_budget() {
        let budget = 4 * cost("k00", &entry(1, &"x".repeat(100)));
        let local = trusted(1, budget);
        for i in 0..20 {
            local.put(&format!("k{i:02}"), &entry(1, &"x".repeat(100)));
            assert!(local.bytes() <= budget);
        }
        let kept: Vec<bool> = (0..20)
            .map(|i| local.get(&format!("k{i:02}")).is_some())
            .collect();
        assert_eq!(
            kept,
            [vec![false; 16], vec![true; 4]].concat(),
            "oldest go first"
        );
        local.put("huge", &entry(1, &"x".repeat(budget)));
        assert_eq!(
            local.get("huge"),
            None,
            "an entry over the budget is not kept"
        );
    }

    #[test]
    fn a_newer_generation_empties_memory() {
        let local = trusted(1, 1 << 20);
        local.put("a", &entry(1, "[1]"));
        local.observe(2);
        local.put("b", &entry(2, "[2]"));
        assert_eq!(local.bytes(), cost("b", &entry(2, "[2]")));
    }

    #[test]
    fn a_zero_budget_keeps_nothing() {
        let local = trusted(1, 0);
        assert!(!local.enabled());
        local.put("a", &entry(1, "[]"));
        assert_eq!(local.get("a"), None);
    }
}
