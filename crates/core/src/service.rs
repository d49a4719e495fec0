//! The user service: validation has happened, now read through the cache and write through the
//! repository. How the cache is used (and why it is never stale) is the `cache_aside` module's
//! business; this module says what is cached under which key.

use std::sync::Arc;

use bytes::Bytes;

use crate::cache::Cache;
use crate::cache_aside::{CacheAside, Cacheable, Fetched};
use crate::config::ServiceConfig;
use crate::demo::{self, CacheDemo};
use crate::error::{Error, Result};
use crate::json::{self, UserRef};
use crate::page::{Page, PageJson, PageRequest};
use crate::readiness::{self, Readiness};
use crate::repository::UserRepository;
use crate::stats::CacheStatsSnapshot;
use crate::user::{NewUser, User, UserId, UserPatch};

/// Part of every cached key: bump it when what is cached changes shape, so that a new version
/// never reads what an old one wrote.
const FORMAT: &str = "v2";

/// Cache-aside user operations over any [`UserRepository`] and [`Cache`]. Cheap to clone.
#[derive(Clone)]
pub struct UserService {
    inner: Arc<Inner>,
}

struct Inner {
    repo: Arc<dyn UserRepository>,
    cache: CacheAside,
}

impl std::fmt::Debug for UserService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserService")
            .field("config", self.inner.cache.config())
            .field("cache_broken", &self.inner.cache.is_broken())
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
                cache: CacheAside::new(cache, config),
            }),
        }
    }

    pub fn cache_stats(&self) -> CacheStatsSnapshot {
        self.inner.cache.stats()
    }

    pub async fn create_user(&self, user: NewUser) -> Result<User> {
        self.inner.cache.write(self.inner.repo.create(&user)).await
    }

    pub async fn get_user(&self, id: UserId) -> Result<User> {
        let user: Option<User> = self.fetch_user(id).await?.into_value()?;
        user.ok_or(Error::NotFound(id))
    }

    /// The user as the JSON object the API sends; a cache hit is returned as stored.
    pub async fn get_user_json(&self, id: UserId) -> Result<Bytes> {
        let (_, body) = self.fetch_user(id).await?.into_encoded()?;
        if body.is_empty() {
            return Err(Error::NotFound(id));
        }
        Ok(body)
    }

    async fn fetch_user(&self, id: UserId) -> Result<Fetched<Option<User>>> {
        let repo = &self.inner.repo;
        // Absence is cached too (as an empty body): ids that do not exist are asked for again.
        let key = format!("users:{FORMAT}:id:{id}");
        self.inner.cache.read_through(&key, || repo.get(id)).await
    }

    pub async fn list_users(&self, page: PageRequest) -> Result<Page> {
        self.fetch_page(page).await?.into_value()
    }

    /// The page as the JSON array the API sends, and the next page's cursor; a cache hit is
    /// returned as stored.
    pub async fn list_users_json(&self, page: PageRequest) -> Result<PageJson> {
        let repo = &self.inner.repo;
        let fetched = self
            .inner
            .cache
            .read_through(&page_key(page), || repo.list_json(page))
            .await?;
        let (next_after, body) = fetched.into_encoded()?;
        Ok(PageJson { body, next_after })
    }

    async fn fetch_page(&self, page: PageRequest) -> Result<Fetched<Page>> {
        let repo = &self.inner.repo;
        self.inner
            .cache
            .read_through(&page_key(page), || async {
                Ok(Page::from_probe(repo.list(page.probe()).await?, page))
            })
            .await
    }

    /// Applies a partial update.
    pub async fn update_user(&self, id: UserId, patch: UserPatch) -> Result<User> {
        let repo = &self.inner.repo;
        let update = async { repo.update(id, &patch).await?.ok_or(Error::NotFound(id)) };
        self.inner.cache.write(update).await
    }

    /// Replaces every field a client may set.
    pub async fn replace_user(&self, id: UserId, user: NewUser) -> Result<User> {
        self.update_user(id, user.into()).await
    }

    pub async fn delete_user(&self, id: UserId) -> Result<()> {
        let repo = &self.inner.repo;
        let delete = async {
            repo.delete(id)
                .await?
                .then_some(())
                .ok_or(Error::NotFound(id))
        };
        self.inner.cache.write(delete).await
    }

    /// The original application's cache demo (see [`crate::demo`]): fails when the cache does.
    pub async fn cache_demo(&self) -> Result<CacheDemo> {
        demo::run(&self.inner.cache).await
    }

    /// Probes the store and the cache concurrently, each with a timeout.
    pub async fn readiness(&self) -> Readiness {
        let inner = &self.inner;
        let store_timeout = inner.cache.config().store_ping_timeout;
        readiness::probe(inner.repo.as_ref(), store_timeout, &inner.cache).await
    }
}

/// Where a page is cached; the typed and the JSON reads share it (the entry is the same JSON).
fn page_key(page: PageRequest) -> String {
    let after = page.after().map_or(-1, |a| a.0);
    format!("users:{FORMAT}:page:{}:{after}", page.limit())
}

/// A user by id, or its absence, cached as its JSON object (absence: an empty body).
impl Cacheable for Option<User> {
    fn encode(&self) -> Result<(Option<UserId>, Bytes)> {
        let body = match self {
            Some(user) => json::user(user.into())?.into(),
            None => Bytes::new(),
        };
        Ok((None, body))
    }

    fn decode(_: Option<UserId>, body: Bytes) -> Result<Self> {
        if body.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(Error::internal)
    }
}

/// A page already written as JSON, cached as it is.
impl Cacheable for PageJson {
    fn encode(&self) -> Result<(Option<UserId>, Bytes)> {
        Ok((self.next_after, self.body.clone()))
    }

    fn decode(next_after: Option<UserId>, body: Bytes) -> Result<Self> {
        Ok(Self { body, next_after })
    }
}

/// A page, cached as its JSON array and the next page's cursor.
impl Cacheable for Page {
    fn encode(&self) -> Result<(Option<UserId>, Bytes)> {
        let body = json::users(self.users.iter().map(UserRef::from))?;
        Ok((self.next_after, body.into()))
    }

    fn decode(next_after: Option<UserId>, body: Bytes) -> Result<Self> {
        let users = serde_json::from_slice(&body).map_err(Error::internal)?;
        Ok(Self { users, next_after })
    }
}
