//! In-memory adapters: for embedding `core` without servers, and for fast unit tests.
//!
//! Both honour the same contracts as the real adapters (the contract tests run against them), and
//! both can be switched into failure to exercise the service's fallbacks.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::page::PageRequest;
use crate::repository::UserRepository;
use crate::user::{NewUser, User, UserId, UserPatch};

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A [`UserRepository`] in a `BTreeMap`.
#[derive(Debug, Default)]
pub struct InMemoryUserRepository {
    state: Mutex<RepoState>,
    unavailable: AtomicBool,
}

#[derive(Debug, Default)]
struct RepoState {
    next_id: i64,
    users: BTreeMap<UserId, User>,
}

impl RepoState {
    fn email_taken(&self, email: &str, except: Option<UserId>) -> bool {
        self.users
            .values()
            .any(|u| Some(u.id) != except && u.email.eq_ignore_ascii_case(email))
    }
}

impl InMemoryUserRepository {
    pub fn new() -> Self {
        Self::default()
    }

    /// While `true`, every call fails with [`Error::StoreUnavailable`], like a database that is down.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    fn state(&self) -> Result<MutexGuard<'_, RepoState>> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(Error::store_unavailable("in-memory store switched off"));
        }
        Ok(lock(&self.state))
    }
}

#[async_trait]
impl UserRepository for InMemoryUserRepository {
    async fn create(&self, user: &NewUser) -> Result<User> {
        let mut state = self.state()?;
        if state.email_taken(user.email.as_str(), None) {
            return Err(Error::DuplicateEmail(user.email.as_str().to_owned()));
        }
        state.next_id += 1;
        let now = OffsetDateTime::now_utc();
        let created = User {
            id: UserId(state.next_id),
            name: user.name.as_str().to_owned(),
            email: user.email.as_str().to_owned(),
            created_at: now,
            updated_at: now,
        };
        state.users.insert(created.id, created.clone());
        Ok(created)
    }

    async fn get(&self, id: UserId) -> Result<Option<User>> {
        Ok(self.state()?.users.get(&id).cloned())
    }

    async fn list(&self, page: PageRequest) -> Result<Vec<User>> {
        let start = page.after().map_or(i64::MIN, |a| a.0.saturating_add(1));
        Ok(self
            .state()?
            .users
            .range(UserId(start)..)
            .take(page.limit() as usize)
            .map(|(_, u)| u.clone())
            .collect())
    }

    async fn update(&self, id: UserId, patch: &UserPatch) -> Result<Option<User>> {
        let mut state = self.state()?;
        if let Some(email) = &patch.email
            && state.users.contains_key(&id)
            && state.email_taken(email.as_str(), Some(id))
        {
            return Err(Error::DuplicateEmail(email.as_str().to_owned()));
        }
        let Some(user) = state.users.get_mut(&id) else {
            return Ok(None);
        };
        if let Some(name) = &patch.name {
            name.as_str().clone_into(&mut user.name);
        }
        if let Some(email) = &patch.email {
            email.as_str().clone_into(&mut user.email);
        }
        user.updated_at = OffsetDateTime::now_utc();
        Ok(Some(user.clone()))
    }

    async fn delete(&self, id: UserId) -> Result<bool> {
        Ok(self.state()?.users.remove(&id).is_some())
    }

    async fn ping(&self) -> Result<()> {
        self.state().map(drop)
    }
}

/// Announcements a watcher may fall behind by before its watch is ended.
const WATCH_BACKLOG: usize = 64;

/// A value and when it expires (`None`: never).
type Entries = HashMap<String, (Vec<u8>, Option<Instant>)>;

/// A [`Cache`] in a `HashMap`, with expiry checked on read.
#[derive(Debug, Default)]
pub struct InMemoryCache {
    entries: Mutex<Entries>,
    watchers: Mutex<HashMap<String, Vec<mpsc::Sender<i64>>>>,
    failing: AtomicBool,
    stalled: AtomicBool,
}

impl InMemoryCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// While `true`, every call fails at once with [`Error::CacheUnavailable`].
    /// Switching it on also ends every watch, like a dropped connection.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
        if failing {
            lock(&self.watchers).clear();
        }
    }

    /// While `true`, every call hangs (until the caller's timeout), like a cache behind a
    /// black-holed network.
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::SeqCst);
    }

    /// Removes every entry and ends every watch, like a cache server that restarted without
    /// persistence.
    pub fn clear(&self) {
        lock(&self.entries).clear();
        lock(&self.watchers).clear();
    }

    async fn entries(&self) -> Result<MutexGuard<'_, Entries>> {
        if self.stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::cache_unavailable("in-memory cache switched off"));
        }
        Ok(lock(&self.entries))
    }
}

#[async_trait]
impl Cache for InMemoryCache {
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let entries = self.entries().await?;
        let now = Instant::now();
        Ok(keys
            .iter()
            .map(|k| match entries.get(*k) {
                Some((v, expiry)) if expiry.is_none_or(|e| e > now) => Some(v.clone()),
                _ => None,
            })
            .collect())
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let expiry = Instant::now() + ttl;
        self.entries()
            .await?
            .insert(key.to_owned(), (value.to_vec(), Some(expiry)));
        Ok(())
    }

    async fn incr(&self, key: &str) -> Result<i64> {
        let mut entries = self.entries().await?;
        let now = Instant::now();
        let current = match entries.get(key) {
            Some((v, expiry)) if expiry.is_none_or(|e| e > now) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| Error::cache_unavailable("value is not an integer"))?,
            _ => 0,
        };
        let next = current + 1;
        entries.insert(key.to_owned(), (next.to_string().into_bytes(), None));
        // Announced under the entries' lock, so that watchers see the values in order.
        if let Some(watchers) = lock(&self.watchers).get_mut(key) {
            watchers.retain(|w| w.try_send(next).is_ok());
        }
        Ok(next)
    }

    async fn watch(&self, key: &str) -> Result<mpsc::Receiver<i64>> {
        let _entries = self.entries().await?;
        let (sender, receiver) = mpsc::channel(WATCH_BACKLOG);
        lock(&self.watchers)
            .entry(key.to_owned())
            .or_default()
            .push(sender);
        Ok(receiver)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.entries().await?.remove(key);
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        self.entries().await.map(drop)
    }
}
