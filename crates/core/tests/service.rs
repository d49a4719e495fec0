//! The service's cache-aside behaviour, with in-memory adapters that can be switched into failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use userstack_core::memory::{InMemoryCache, InMemoryUserRepository};
use userstack_core::{
    Cache, CacheDemo, CacheStatsSnapshot, Error, NewUser, PageRequest, Result, ServiceConfig, User,
    UserId, UserPatch, UserRepository, UserService,
};

struct Fixture {
    repo: Arc<InMemoryUserRepository>,
    cache: Arc<InMemoryCache>,
    service: UserService,
}

fn fixture() -> Fixture {
    let repo = Arc::new(InMemoryUserRepository::new());
    let cache = Arc::new(InMemoryCache::new());
    let config = ServiceConfig {
        cache_timeout: Duration::from_millis(50),
        cache_backoff: Duration::from_millis(200),
        ..ServiceConfig::default()
    };
    let service = UserService::new(repo.clone(), cache.clone(), config);
    Fixture {
        repo,
        cache,
        service,
    }
}

impl Fixture {
    async fn create(&self, name: &str, email: &str) -> userstack_core::User {
        create(&self.service, name, email).await
    }
}

async fn create(service: &UserService, name: &str, email: &str) -> User {
    service.create_user(new_user(name, email)).await.unwrap()
}

/// Reads a cache answered: from the shared cache, or from the service's memory in front of it.
fn hits(stats: CacheStatsSnapshot) -> u64 {
    stats.hits + stats.local_hits
}

fn new_user(name: &str, email: &str) -> NewUser {
    NewUser::parse(name, email).unwrap()
}

#[tokio::test]
async fn reads_are_served_from_the_cache_once_warm() {
    let f = fixture();
    let ada = f.create("Ada", "ada@example.com").await;

    assert_eq!(f.service.get_user(ada.id).await.unwrap(), ada);
    let stats = f.service.cache_stats();
    assert_eq!((hits(stats), stats.misses), (0, 1));

    // The store is gone, yet the warm cache still answers: proof the read came from the cache.
    f.repo.set_unavailable(true);
    assert_eq!(f.service.get_user(ada.id).await.unwrap(), ada);
    assert_eq!(hits(f.service.cache_stats()), 1);
}

#[tokio::test]
async fn list_pages_are_cached_and_carry_the_next_cursor() {
    let f = fixture();
    for i in 0..5 {
        f.service
            .create_user(new_user(&format!("U{i}"), &format!("u{i}@example.com")))
            .await
            .unwrap();
    }
    let request = PageRequest::new(Some(2), None).unwrap();
    let first = f.service.list_users(request).await.unwrap();
    assert_eq!(first.users.len(), 2);
    let next = first.next_after.expect("a second page exists");
    assert_eq!(next, first.users[1].id);

    f.repo.set_unavailable(true);
    assert_eq!(
        f.service.list_users(request).await.unwrap(),
        first,
        "served from cache"
    );
    f.repo.set_unavailable(false);

    let last = f
        .service
        .list_users(PageRequest::new(Some(3), Some(next.0)).unwrap())
        .await
        .unwrap();
    assert_eq!(last.users.len(), 3);
    assert_eq!(last.next_after, None, "no cursor after the last page");
}

#[tokio::test]
async fn every_write_invalidates_before_it_returns() {
    let f = fixture();
    let ada = f.create("Ada", "ada@example.com").await;
    let all = PageRequest::default();
    // Warm both kinds of entry.
    f.service.get_user(ada.id).await.unwrap();
    assert_eq!(f.service.list_users(all).await.unwrap().users.len(), 1);

    let bob = f.create("Bob", "bob@example.com").await;
    assert_eq!(
        f.service.list_users(all).await.unwrap().users.len(),
        2,
        "create"
    );

    let patch = UserPatch::parse(Some("Ada L."), None).unwrap();
    f.service.update_user(ada.id, patch).await.unwrap();
    assert_eq!(
        f.service.get_user(ada.id).await.unwrap().name,
        "Ada L.",
        "update"
    );
    assert_eq!(
        f.service.list_users(all).await.unwrap().users[0].name,
        "Ada L."
    );

    f.service
        .replace_user(bob.id, new_user("Robert", "rob@example.com"))
        .await
        .unwrap();
    assert_eq!(
        f.service.get_user(bob.id).await.unwrap().email,
        "rob@example.com",
        "replace"
    );

    f.service.delete_user(ada.id).await.unwrap();
    assert!(
        matches!(f.service.get_user(ada.id).await, Err(Error::NotFound(_))),
        "delete"
    );
    assert_eq!(f.service.list_users(all).await.unwrap().users.len(), 1);
}

#[tokio::test]
async fn refused_writes_do_not_touch_the_cache_and_report_the_right_error() {
    let f = fixture();
    let ada = f.create("Ada", "ada@example.com").await;
    f.service.get_user(ada.id).await.unwrap(); // cached
    let dup = f
        .service
        .create_user(new_user("Eve", "ADA@example.com"))
        .await;
    assert!(matches!(dup, Err(Error::DuplicateEmail(_))));
    let missing = userstack_core::UserId(ada.id.0 + 100);
    let patch = UserPatch::parse(Some("X"), None).unwrap();
    assert!(matches!(
        f.service.update_user(missing, patch).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        f.service.delete_user(missing).await,
        Err(Error::NotFound(_))
    ));
    let before = f.service.cache_stats();
    f.service.get_user(ada.id).await.unwrap();
    assert_eq!(
        hits(f.service.cache_stats()),
        hits(before) + 1,
        "writes that changed nothing invalidate nothing"
    );

    f.repo.set_unavailable(true);
    let down = f
        .service
        .create_user(new_user("Bob", "bob@example.com"))
        .await;
    assert!(matches!(down, Err(Error::StoreUnavailable(_))));
}

/// A cache whose `set` and `incr` land only after a delay (milliseconds, adjustable), to replay
/// races between readers, writers and the cache.
#[derive(Default)]
struct DelayedCache {
    inner: InMemoryCache,
    set_delay_ms: AtomicU64,
    incr_delay_ms: AtomicU64,
}

impl DelayedCache {
    fn delay_set(&self, ms: u64) {
        self.set_delay_ms.store(ms, Ordering::SeqCst);
    }
    fn delay_incr(&self, ms: u64) {
        self.incr_delay_ms.store(ms, Ordering::SeqCst);
    }
}

async fn sleep_ms(ms: &AtomicU64) {
    tokio::time::sleep(Duration::from_millis(ms.load(Ordering::SeqCst))).await;
}

#[async_trait]
impl Cache for DelayedCache {
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        self.inner.get_many(keys).await
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        sleep_ms(&self.set_delay_ms).await;
        self.inner.set(key, value, ttl).await
    }
    async fn incr(&self, key: &str) -> Result<i64> {
        sleep_ms(&self.incr_delay_ms).await;
        self.inner.incr(key).await
    }
    async fn watch(&self, key: &str) -> Result<tokio::sync::mpsc::Receiver<i64>> {
        self.inner.watch(key).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}

/// A service over `repo` and a [`DelayedCache`], with "Ada" created.
async fn delayed_fixture(repo: Arc<dyn UserRepository>) -> (UserService, Arc<DelayedCache>, User) {
    let cache = Arc::new(DelayedCache::default());
    let config = ServiceConfig {
        cache_timeout: Duration::from_secs(1),
        cache_backoff: Duration::from_millis(100),
        ..ServiceConfig::default()
    };
    let service = UserService::new(repo, cache.clone(), config);
    let ada = service
        .create_user(new_user("Ada", "ada@example.com"))
        .await
        .unwrap();
    (service, cache, ada)
}

fn rename(name: &str) -> UserPatch {
    UserPatch::parse(Some(name), None).unwrap()
}

#[tokio::test]
async fn a_slow_reader_cannot_cache_a_value_older_than_a_finished_write() {
    let repo = Arc::new(InMemoryUserRepository::new());
    let (service, cache, ada) = delayed_fixture(repo).await;
    cache.delay_set(40);

    // The reader loads "Ada" and is still storing it when the write below completes.
    let reader = tokio::spawn({
        let service = service.clone();
        async move { service.get_user(ada.id).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    service.update_user(ada.id, rename("Ada v2")).await.unwrap();
    assert_eq!(
        reader.await.unwrap().name,
        "Ada",
        "the reader saw the old row"
    );

    // After the write returned, nobody may read the old name again.
    assert_eq!(service.get_user(ada.id).await.unwrap().name, "Ada v2");
    assert_eq!(service.get_user(ada.id).await.unwrap().name, "Ada v2");
}

#[tokio::test]
async fn a_failing_cache_never_fails_a_request_and_is_counted() {
    let f = fixture();
    f.cache.set_failing(true);
    let ada = f.create("Ada", "ada@example.com").await;
    assert_eq!(f.service.get_user(ada.id).await.unwrap(), ada);
    assert_eq!(
        f.service
            .list_users(PageRequest::default())
            .await
            .unwrap()
            .users,
        vec![ada]
    );
    let stats = f.service.cache_stats();
    assert!(stats.errors >= 1, "errors are counted: {stats:?}");
    assert!(
        stats.bypassed >= 1,
        "later reads bypass the cache: {stats:?}"
    );
    assert!(matches!(
        f.service.cache_demo().await,
        Err(Error::CacheUnavailable(_))
    ));
}

#[tokio::test]
async fn a_stalled_cache_is_abandoned_after_its_timeout_then_bypassed() {
    let f = fixture();
    let ada = f.create("Ada", "ada@example.com").await;
    f.cache.set_stalled(true);
    // The cache never answers; the read must still complete (bounded here only so that a
    // regression fails instead of hanging).
    let bounded = Duration::from_secs(5);
    let read = tokio::time::timeout(bounded, f.service.get_user(ada.id)).await;
    assert_eq!(
        read.expect("read must not wait for a stalled cache")
            .unwrap(),
        ada
    );
    let after_first = f.service.cache_stats();
    assert_eq!(after_first.errors, 1, "the timeout counts as a cache error");

    // Within the backoff the cache is not even tried.
    let read = tokio::time::timeout(bounded, f.service.get_user(ada.id)).await;
    assert_eq!(read.unwrap().unwrap(), ada);
    let after_second = f.service.cache_stats();
    assert_eq!(after_second.errors, 1, "no second cache call");
    assert_eq!(after_second.bypassed, after_first.bypassed + 1);
}

#[tokio::test]
async fn writes_during_a_cache_outage_are_not_hidden_when_it_returns() {
    let f = fixture();
    let ada = f.create("Ada", "ada@example.com").await;
    f.service.get_user(ada.id).await.unwrap(); // cached as "Ada"

    f.cache.set_failing(true);
    let patch = UserPatch::parse(Some("Ada (offline edit)"), None).unwrap();
    f.service.update_user(ada.id, patch).await.unwrap();
    f.cache.set_failing(false);

    // Still inside the backoff: bypassed, fresh from the store.
    assert_eq!(
        f.service.get_user(ada.id).await.unwrap().name,
        "Ada (offline edit)"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The cache is used again, but the stale "Ada" it still holds must not come back.
    assert_eq!(
        f.service.get_user(ada.id).await.unwrap().name,
        "Ada (offline edit)"
    );
    let before = hits(f.service.cache_stats());
    assert_eq!(
        f.service.get_user(ada.id).await.unwrap().name,
        "Ada (offline edit)"
    );
    assert_eq!(
        hits(f.service.cache_stats()),
        before + 1,
        "and it serves hits again"
    );
}

#[tokio::test]
async fn cache_demo_misses_then_hits() {
    let f = fixture();
    assert_eq!(f.service.cache_demo().await.unwrap(), CacheDemo::Miss);
    assert_eq!(
        f.service.cache_demo().await.unwrap(),
        CacheDemo::Hit("Hello from Redis Cache!".into())
    );
    f.cache.clear();
    assert_eq!(f.service.cache_demo().await.unwrap(), CacheDemo::Miss);
}

#[tokio::test]
async fn readiness_reports_each_dependency() {
    let f = fixture();
    let ready = f.service.readiness().await;
    assert!(ready.store.is_ok() && ready.cache.is_ok());
    f.cache.set_stalled(true);
    f.repo.set_unavailable(true);
    let ready = f.service.readiness().await;
    assert!(matches!(ready.store, Err(Error::StoreUnavailable(_))));
    assert!(matches!(ready.cache, Err(Error::CacheUnavailable(_))));
}

#[tokio::test]
async fn the_repository_can_be_used_directly() {
    // Embedding programs may use a port without the service.
    let repo: Arc<dyn UserRepository> = Arc::new(InMemoryUserRepository::new());
    let ada = repo
        .create(&new_user("Ada", "ada@example.com"))
        .await
        .unwrap();
    assert_eq!(repo.get(ada.id).await.unwrap(), Some(ada));
}

#[tokio::test]
async fn json_reads_are_the_typed_reads_serialised_and_hits_are_the_stored_bytes() {
    let f = fixture();
    let ada = f.create("Ada", "ada@example.com").await;
    f.create("Bob", "bob@example.com").await;
    let request = PageRequest::new(Some(1), None).unwrap();

    let cold = f.service.list_users_json(request).await.unwrap();
    let typed = f.service.list_users(request).await.unwrap();
    assert_eq!(cold.body, serde_json::to_vec(&typed.users).unwrap());
    assert_eq!(cold.next_after, typed.next_after);
    assert_eq!(cold.next_after, Some(ada.id));

    let before = hits(f.service.cache_stats());
    let warm = f.service.list_users_json(request).await.unwrap();
    assert_eq!(hits(f.service.cache_stats()), before + 1);
    assert_eq!(warm, cold, "a hit returns exactly what was stored");

    let one = f.service.get_user_json(ada.id).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<userstack_core::User>(&one).unwrap(),
        ada
    );
    let missing = userstack_core::UserId(ada.id.0 + 100);
    assert!(matches!(
        f.service.get_user_json(missing).await,
        Err(Error::NotFound(_))
    ));
    assert!(
        matches!(
            f.service.get_user_json(missing).await,
            Err(Error::NotFound(_))
        ),
        "cached absence"
    );
}

#[tokio::test]
async fn a_failed_read_alone_does_not_throw_the_cache_away() {
    let f = fixture();
    let ada = f.create("Ada", "ada@example.com").await;
    f.service.get_user(ada.id).await.unwrap(); // cached

    f.cache.set_failing(true);
    f.service.get_user(ada.id).await.unwrap(); // fails over to the store
    f.cache.set_failing(false);
    tokio::time::sleep(Duration::from_millis(250)).await; // past the backoff

    // No write was missed, so what the cache holds is still valid: a hit, not a miss.
    let before = f.service.cache_stats();
    f.service.get_user(ada.id).await.unwrap();
    let after = f.service.cache_stats();
    assert_eq!(hits(after), hits(before) + 1, "{before:?} -> {after:?}");
}

#[tokio::test]
async fn no_read_trusts_the_cache_before_the_catch_up_increment_has_landed() {
    let repo = Arc::new(InMemoryUserRepository::new());
    let (service, cache, ada) = delayed_fixture(repo).await;
    service.get_user(ada.id).await.unwrap(); // cached as "Ada"

    // A write while the cache fails: its invalidation is missed.
    cache.inner.set_failing(true);
    service.update_user(ada.id, rename("Ada v2")).await.unwrap();
    cache.inner.set_failing(false);
    tokio::time::sleep(Duration::from_millis(150)).await; // past the backoff

    // The first reader sends the catch-up increment, which takes a while to land; a second
    // reader arriving meanwhile must not take the old generation's "Ada" as current.
    cache.delay_incr(200);
    let first = tokio::spawn({
        let service = service.clone();
        async move { service.get_user(ada.id).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(service.get_user(ada.id).await.unwrap().name, "Ada v2");
    assert_eq!(first.await.unwrap().name, "Ada v2");
}

#[tokio::test]
async fn a_write_abandoned_before_its_invalidation_landed_is_not_hidden_by_the_cache() {
    let repo = Arc::new(InMemoryUserRepository::new());
    let (service, cache, ada) = delayed_fixture(repo.clone()).await;
    service.get_user(ada.id).await.unwrap(); // cached as "Ada"

    // The caller gives up (a request timeout, a client gone) after the store committed but
    // while the invalidation is still on its way.
    cache.delay_incr(200);
    let abandoned = tokio::time::timeout(
        Duration::from_millis(50),
        service.update_user(ada.id, rename("Ada v2")),
    )
    .await;
    assert!(abandoned.is_err(), "the write was abandoned mid-way");
    assert_eq!(repo.get(ada.id).await.unwrap().unwrap().name, "Ada v2");

    cache.delay_incr(0);
    assert_eq!(service.get_user(ada.id).await.unwrap().name, "Ada v2");
}

/// A store whose updates commit and then report the store unavailable, as when the connection
/// drops before the answer arrives.
struct CommitsThenFails(InMemoryUserRepository);

#[async_trait]
impl UserRepository for CommitsThenFails {
    async fn create(&self, user: &NewUser) -> Result<User> {
        self.0.create(user).await
    }
    async fn get(&self, id: UserId) -> Result<Option<User>> {
        self.0.get(id).await
    }
    async fn list(&self, page: PageRequest) -> Result<Vec<User>> {
        self.0.list(page).await
    }
    async fn update(&self, id: UserId, patch: &UserPatch) -> Result<Option<User>> {
        self.0.update(id, patch).await?;
        Err(Error::store_unavailable("connection lost after the commit"))
    }
    async fn delete(&self, id: UserId) -> Result<bool> {
        self.0.delete(id).await
    }
    async fn ping(&self) -> Result<()> {
        self.0.ping().await
    }
}

#[tokio::test]
async fn a_write_that_failed_but_may_have_committed_still_invalidates() {
    let repo = Arc::new(CommitsThenFails(InMemoryUserRepository::new()));
    let (service, _cache, ada) = delayed_fixture(repo).await;
    service.get_user(ada.id).await.unwrap(); // cached as "Ada"

    let failed = service.update_user(ada.id, rename("Ada v2")).await;
    assert!(matches!(failed, Err(Error::StoreUnavailable(_))));
    assert_eq!(service.get_user(ada.id).await.unwrap().name, "Ada v2");
}

/// Two replicas over one store and one shared cache, each keeping entries in memory.
fn replicas(check: Duration) -> (Arc<InMemoryCache>, UserService, UserService) {
    let repo = Arc::new(InMemoryUserRepository::new());
    let cache = Arc::new(InMemoryCache::new());
    let config = ServiceConfig {
        cache_timeout: Duration::from_millis(50),
        cache_backoff: Duration::from_millis(200),
        local_cache_check: check,
        ..ServiceConfig::default()
    };
    let a = UserService::new(repo.clone(), cache.clone(), config.clone());
    let b = UserService::new(repo, cache.clone(), config);
    (cache, a, b)
}

/// Reads `id` on `service` until memory answers (the watch is set up in the background).
async fn warm_in_memory(service: &UserService, id: UserId) {
    for _ in 0..200 {
        let before = service.cache_stats().local_hits;
        service.get_user(id).await.unwrap();
        if service.cache_stats().local_hits > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("memory never answered");
}

#[tokio::test]
async fn another_replicas_write_reaches_this_replicas_memory_through_the_announcement() {
    // Checks far apart: only the announcement can tell A of B's write in time.
    let (_, a, b) = replicas(Duration::from_secs(60));
    let ada = create(&b, "Ada", "ada@example.com").await;
    warm_in_memory(&a, ada.id).await;

    b.update_user(ada.id, rename("Ada L.")).await.unwrap();
    let mut seen = String::new();
    for _ in 0..100 {
        seen = a.get_user(ada.id).await.unwrap().name;
        if seen == "Ada L." {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, "Ada L.", "A still serves what B changed");
}

#[tokio::test]
async fn a_replica_reads_its_own_write_at_once_even_from_memory() {
    let (_, a, _) = replicas(Duration::from_secs(60));
    let ada = create(&a, "Ada", "ada@example.com").await;
    for round in 0..20 {
        warm_in_memory(&a, ada.id).await;
        let name = format!("Ada {round}");
        a.update_user(ada.id, rename(&name)).await.unwrap();
        assert_eq!(a.get_user(ada.id).await.unwrap().name, name);
    }
}

#[tokio::test]
async fn memory_is_not_served_once_the_shared_cache_stops_answering() {
    let check = Duration::from_millis(20);
    let (cache, a, b) = replicas(check);
    let ada = create(&b, "Ada", "ada@example.com").await;
    warm_in_memory(&a, ada.id).await;

    // The cache hangs: B's write cannot be announced (nor even counted), so nothing tells A.
    cache.set_stalled(true);
    let update = tokio::time::timeout(
        Duration::from_secs(5),
        b.update_user(ada.id, rename("Ada L.")),
    );
    update.await.unwrap().unwrap();
    // Past A's next check and its timeout (ten checks), which fails: memory is withdrawn.
    tokio::time::sleep(check * 12 + Duration::from_millis(60)).await;
    let read = tokio::time::timeout(Duration::from_secs(5), a.get_user(ada.id)).await;
    assert_eq!(
        read.unwrap().unwrap().name,
        "Ada L.",
        "memory must stop being trusted when its checks fail"
    );
}

#[tokio::test]
async fn memory_can_be_switched_off() {
    let repo = Arc::new(InMemoryUserRepository::new());
    let config = ServiceConfig {
        local_cache_bytes: 0,
        ..ServiceConfig::default()
    };
    let service = UserService::new(repo, Arc::new(InMemoryCache::new()), config);
    let ada = create(&service, "Ada", "ada@example.com").await;
    for _ in 0..20 {
        service.get_user(ada.id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = service.cache_stats();
    assert_eq!(
        (stats.local_hits, stats.hits, stats.local_bytes),
        (0, 19, 0)
    );
}

#[tokio::test]
async fn memory_still_answers_while_a_slow_cache_call_has_the_cache_bypassed() {
    // Checks far apart and a long check timeout: the watcher keeps vouching meanwhile, as it
    // does on a process whose own calls are merely late.
    let (cache, a, b) = replicas(Duration::from_secs(60));
    let ada = create(&b, "Ada", "ada@example.com").await;
    let bob = create(&b, "Bob", "bob@example.com").await;
    warm_in_memory(&a, ada.id).await;

    cache.set_stalled(true);
    // Bob is not in memory: his read waits for the cache, gives up, and the cache is bypassed.
    assert_eq!(a.get_user(bob.id).await.unwrap(), bob);
    let before = a.cache_stats();
    assert_eq!(before.errors, 1);
    assert_eq!(a.get_user(ada.id).await.unwrap(), ada);
    assert_eq!(
        a.cache_stats().local_hits,
        before.local_hits + 1,
        "memory answers while the watcher vouches, whatever a user request's call did"
    );
}

/// A store whose page reads wait at a gate (counted as they arrive), and whose first page read
/// may fail, or all of them while `failing` is set.
struct GatedPages {
    inner: InMemoryUserRepository,
    open: tokio::sync::watch::Sender<bool>,
    loads: AtomicU64,
    fail_first: bool,
    failing: AtomicBool,
}

#[async_trait]
impl UserRepository for GatedPages {
    async fn create(&self, user: &NewUser) -> Result<User> {
        self.inner.create(user).await
    }
    async fn get(&self, id: UserId) -> Result<Option<User>> {
        self.inner.get(id).await
    }
    async fn list(&self, page: PageRequest) -> Result<Vec<User>> {
        let nth = self.loads.fetch_add(1, Ordering::SeqCst);
        let _ = self.open.subscribe().wait_for(|open| *open).await;
        if nth == 0 && self.fail_first {
            return Err(Error::store_unavailable("the first page read fails"));
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::store_unavailable("page reads fail"));
        }
        self.inner.list(page).await
    }
    async fn update(&self, id: UserId, patch: &UserPatch) -> Result<Option<User>> {
        self.inner.update(id, patch).await
    }
    async fn delete(&self, id: UserId) -> Result<bool> {
        self.inner.delete(id).await
    }
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}

fn gated_pages(fail_first: bool) -> Arc<GatedPages> {
    Arc::new(GatedPages {
        inner: InMemoryUserRepository::new(),
        open: tokio::sync::watch::Sender::new(true),
        loads: AtomicU64::new(0),
        fail_first,
        failing: AtomicBool::new(false),
    })
}

/// `readers` concurrent reads of one cold page while the store holds its page reads at a gate;
/// the gate opens once every reader has started and the first load is waiting. The page reads the
/// store saw, each reader's result, and the cache counters.
async fn cold_page_read_together(
    readers: usize,
    fail_first: bool,
) -> (u64, Vec<Result<Bytes>>, CacheStatsSnapshot) {
    let repo = gated_pages(fail_first);
    let service = UserService::new(
        repo.clone(),
        Arc::new(InMemoryCache::new()),
        ServiceConfig::default(),
    );
    for i in 0..3 {
        create(&service, "Ada", &format!("ada{i}@example.com")).await;
    }
    repo.open.send_replace(false);
    let started = Arc::new(AtomicU64::new(0));
    let reads: Vec<_> = (0..readers)
        .map(|_| {
            let (service, started) = (service.clone(), started.clone());
            tokio::spawn(async move {
                started.fetch_add(1, Ordering::SeqCst);
                let page = PageRequest::new(Some(10), None).unwrap();
                service.list_users_json(page).await.map(|p| p.body)
            })
        })
        .collect();
    while started.load(Ordering::SeqCst) < readers as u64 || repo.loads.load(Ordering::SeqCst) == 0
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Time for every started reader to reach the cache and the store.
    tokio::time::sleep(Duration::from_millis(100)).await;
    repo.open.send_replace(true);
    let mut results = Vec::new();
    for read in reads {
        // A reader left waiting for a load that ended fails here instead of hanging the test.
        let read = tokio::time::timeout(Duration::from_secs(10), read).await;
        results.push(read.expect("every reader answers").unwrap());
    }
    (
        repo.loads.load(Ordering::SeqCst),
        results,
        service.cache_stats(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_missing_the_same_key_together_cause_one_store_read() {
    let (loads, results, stats) = cold_page_read_together(50, false).await;
    let bodies: Vec<Bytes> = results.into_iter().map(Result::unwrap).collect();
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "every reader got the same page"
    );
    assert_eq!(loads, 1, "one page read reached the store: {stats:?}");
    assert_eq!(stats.misses, 1, "{stats:?}");
    assert_eq!(
        stats.shared + hits(stats),
        49,
        "the others took its entry: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_one_store_read_fails_only_its_reader_fails() {
    let (loads, results, stats) = cold_page_read_together(20, true).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(
        failed, 1,
        "only the reader whose store read failed fails: {stats:?}"
    );
    // The waiting readers were let go empty-handed and read again (together, one of them from
    // the store).
    assert!(loads >= 2, "the others read the store again: {loads}");
}

/// TTL of the entries of [`page_in_memory`].
const SHORT_TTL: Duration = Duration::from_millis(300);

/// A service whose entries live [`SHORT_TTL`], its memory checked every `check`, with one user
/// and a page of it served from memory.
struct PageInMemory {
    repo: Arc<GatedPages>,
    cache: Arc<InMemoryCache>,
    service: UserService,
    page: PageRequest,
    body: Bytes,
}

async fn page_in_memory(check: Duration) -> PageInMemory {
    let (repo, cache) = (gated_pages(false), Arc::new(InMemoryCache::new()));
    let config = ServiceConfig {
        cache_ttl: SHORT_TTL,
        local_cache_check: check,
        ..ServiceConfig::default()
    };
    let service = UserService::new(repo.clone(), cache.clone(), config);
    create(&service, "Ada", "ada@example.com").await;
    let page = PageRequest::new(Some(10), None).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while service.cache_stats().local_hits == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "memory never served the page"
        );
        service.list_users_json(page).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let body = service.list_users_json(page).await.unwrap().body;
    PageInMemory {
        repo,
        cache,
        service,
        page,
        body,
    }
}

/// Past the TTL (in memory and in the shared cache), within the time an expired entry is kept.
async fn past_the_ttl() {
    tokio::time::sleep(SHORT_TTL + Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_page_in_memory_is_served_while_one_reader_refreshes_it() {
    let PageInMemory {
        repo,
        service,
        page,
        body: page_body,
        ..
    } = page_in_memory(Duration::from_millis(10)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);

    // Past the TTL, in memory and in the shared cache; the store holds page reads.
    repo.open.send_replace(false);
    past_the_ttl().await;
    let loads = repo.loads.load(Ordering::SeqCst);
    let refresh = tokio::spawn({
        let service = service.clone();
        async move { service.list_users_json(page).await.map(|p| p.body) }
    });
    while repo.loads.load(Ordering::SeqCst) == loads {
        assert!(
            std::time::Instant::now() < deadline + Duration::from_secs(5),
            "no refresh"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // One reader waits for the store; everyone else gets the page at once.
    for _ in 0..20 {
        let read = tokio::time::timeout(Duration::from_secs(1), service.list_users_json(page));
        let body = read
            .await
            .expect("served while the refresh waits")
            .unwrap()
            .body;
        assert_eq!(body, page_body);
    }
    assert_eq!(repo.loads.load(Ordering::SeqCst), loads + 1, "one refresh");
    repo.open.send_replace(true);
    assert_eq!(refresh.await.unwrap().unwrap(), page_body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_page_is_still_served_when_its_refresh_fails_in_the_store() {
    let memory = page_in_memory(Duration::from_millis(10)).await;
    let (repo, service, page) = (&memory.repo, &memory.service, memory.page);
    repo.failing.store(true, Ordering::SeqCst);
    past_the_ttl().await;
    let loads = repo.loads.load(Ordering::SeqCst);

    // The reader that refreshes it meets the store's failure; it gets the page all the same.
    let read = service
        .list_users_json(page)
        .await
        .expect("the expired page");
    assert_eq!(read.body, memory.body);
    assert_eq!(
        repo.loads.load(Ordering::SeqCst),
        loads + 1,
        "it did refresh"
    );
    assert_eq!(service.cache_stats().expired, 1);
    // Twice the TTL after it was stored, the entry is gone: the store's failure is the answer.
    tokio::time::sleep(SHORT_TTL).await;
    let gone = service.list_users_json(page).await;
    assert!(
        matches!(gone, Err(Error::StoreUnavailable(_))),
        "{:?}",
        gone.map(|p| p.body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_page_a_write_made_stale_is_not_served_when_its_refresh_fails() {
    // Memory checks the generation every 30 s: only the cache's answer can tell it of a write.
    let PageInMemory {
        repo,
        cache,
        service,
        page,
        ..
    } = page_in_memory(Duration::from_secs(30)).await;
    // What a write on another replica leaves while its announcement has not arrived here: a
    // newer generation in the shared cache (the key is crate::cache_aside::GENERATION_KEY).
    let generation = cache.get_many(&["users:generation"]).await.unwrap();
    let newer = std::str::from_utf8(generation[0].as_deref().unwrap())
        .unwrap()
        .parse::<i64>()
        .unwrap()
        + 1;
    cache
        .set(
            "users:generation",
            newer.to_string().as_bytes(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    repo.failing.store(true, Ordering::SeqCst);
    past_the_ttl().await;

    let read = service.list_users_json(page).await;
    assert!(
        matches!(read, Err(Error::StoreUnavailable(_))),
        "a page older than the cache's generation was served: {:?}",
        read.map(|p| p.body)
    );
    assert_eq!(service.cache_stats().expired, 0);
}
