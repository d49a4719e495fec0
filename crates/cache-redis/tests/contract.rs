//! The cache contract, against a real Redis.

use std::time::Duration;

use userstack_cache_redis::RedisCache;
use userstack_cache_redis::testing::TestRedis;
use userstack_core::{Cache, Error};

#[tokio::test(flavor = "multi_thread")]
async fn redis_cache_honours_the_contract() {
    let server = TestRedis::start();
    let cache = RedisCache::new(server.settings("contract")).unwrap();
    userstack_core::testing::cache_contract(&cache).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prefixes_keep_applications_apart() {
    let server = TestRedis::start();
    let a = RedisCache::new(server.settings("a")).unwrap();
    let b = RedisCache::new(server.settings("b")).unwrap();
    a.set("k", b"from a", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(b.get_many(&["k"]).await.unwrap(), vec![None]);
    assert_eq!(
        a.get_many(&["k"]).await.unwrap(),
        vec![Some(b"from a".to_vec())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_redis_is_used_again_without_a_new_pool() {
    let server = TestRedis::start_private();
    let mut settings = server.settings("restart");
    settings.connection_timeout = Duration::from_millis(300);
    let cache = RedisCache::new(settings).unwrap();
    cache.set("k", b"v", Duration::from_secs(60)).await.unwrap();

    server.stop();
    let down = cache.get_many(&["k"]).await;
    assert!(matches!(down, Err(Error::CacheUnavailable(_))), "{down:?}");
    assert!(matches!(
        cache.ping().await,
        Err(Error::CacheUnavailable(_))
    ));

    server.restart();
    // The dead connection was dropped; the next call opens a new one.
    cache
        .ping()
        .await
        .expect("cache usable again after restart");
    assert_eq!(
        cache.get_many(&["k"]).await.unwrap(),
        vec![None],
        "a fresh server is empty"
    );
}

/// What the service's memory relies on: another client's increments are announced to this one's
/// watch, in order, and the watch ends (its receiver closes) when Redis goes away.
#[tokio::test(flavor = "multi_thread")]
async fn a_watch_hears_every_client_and_ends_when_redis_goes_away() {
    let server = TestRedis::start_private();
    let watcher = RedisCache::new(server.settings("watch")).unwrap();
    let writer = RedisCache::new(server.settings("watch")).unwrap();
    let elsewhere = RedisCache::new(server.settings("other-app")).unwrap();
    let mut watch = watcher.watch("generation").await.unwrap();

    elsewhere.incr("generation").await.unwrap();
    for expected in 1..=50 {
        assert_eq!(writer.incr("generation").await.unwrap(), expected);
    }
    for expected in 1..=50 {
        let announced = tokio::time::timeout(Duration::from_secs(5), watch.recv()).await;
        assert_eq!(
            announced,
            Ok(Some(expected)),
            "another prefix is another channel"
        );
    }

    server.stop();
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.recv()).await;
    assert_eq!(ended, Ok(None), "the watch must end with the connection");
}

/// The adapter sets no deadline of its own: the service bounds every call (CACHE_TIMEOUT_MS, the
/// memory watcher's check). redis-rs's default of 500 ms failed the calls of a server that was
/// merely busy, at 10 000 connections, which withdrew its memory's trust.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_answer_is_waited_for_not_cut_off_by_the_driver() {
    let server = std::sync::Arc::new(TestRedis::start_private());
    let cache = RedisCache::new(server.settings("slow")).unwrap();
    cache.set("k", b"v", Duration::from_secs(60)).await.unwrap();

    server.pause(true);
    let thaw = {
        let server = server.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(900)).await;
            server.pause(false);
        })
    };
    let started = std::time::Instant::now();
    let read = cache.get_many(&["k"]).await;
    thaw.await.unwrap();
    assert_eq!(
        read.unwrap(),
        vec![Some(b"v".to_vec())],
        "after {:?}",
        started.elapsed()
    );
}

/// A Redis with `requirepass`: the adapter authenticates with the password from its settings
/// (not from the URL), and a client without it is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_password_protected_redis_serves_only_clients_with_the_password() {
    let server = TestRedis::start_with_password("correct horse battery staple");
    assert!(
        !server.url().contains("staple"),
        "the password is not in the URL"
    );

    let cache = RedisCache::new(server.settings("auth")).unwrap();
    userstack_core::testing::cache_contract(&cache).await;

    let mut without = server.settings("auth");
    without.password = None;
    let refused = RedisCache::new(without).unwrap().ping().await;
    assert!(
        matches!(refused, Err(Error::CacheUnavailable(_))),
        "no password: {refused:?}"
    );

    let mut wrong = server.settings("auth");
    wrong.password = Some("wrong".into());
    let refused = RedisCache::new(wrong).unwrap().ping().await;
    assert!(
        matches!(refused, Err(Error::CacheUnavailable(_))),
        "wrong password: {refused:?}"
    );
    assert!(
        !format!("{:?}", server.settings("auth")).contains("staple"),
        "Debug never prints the password"
    );
}
