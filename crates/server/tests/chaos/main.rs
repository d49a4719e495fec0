//! The chaos suite: the real `userstack` binary over a real PostgreSQL and Redis, under a bounded
//! load of concurrent writers and readers on loopback, while a dependency or the server itself
//! is killed, frozen, flooded or held by slow clients. Each scenario prints one line of figures
//! and asserts invariants, never speeds:
//!
//! - every answer is a success or a `503` problem with `Retry-After`; no other status;
//! - a failed request never takes as long as the request timeout;
//! - every acknowledged write is in PostgreSQL afterwards (`lost=0`);
//! - once the fault is over, every read shows the last acknowledged write (`stale=0`);
//! - service comes back by itself (`recovered-in`).
//!
//! Run by `scripts/test.sh chaos`:
//! `cargo test -p userstack-server --features chaos --test chaos -- --nocapture --test-threads 1`.

#[path = "../support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use userstack_cache_redis::testing::TestRedis;
use userstack_storage_pg::PgSettings;
use userstack_storage_pg::testing::TestPostgres;

/// The server's request timeout (its default), which no failed request may reach.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const WRITERS: usize = 6;
const READERS: usize = 6;
/// Lower than the default (512), so that a flood this test can send on two cores passes it.
const MAX_IN_FLIGHT: &str = "48";
const HEADER_READ_TIMEOUT_SECS: u64 = 5;

/// What the load saw.
#[derive(Debug, Default)]
struct Tally {
    requests: AtomicU64,
    ok: AtomicU64,
    unavailable: AtomicU64,
    /// 503s without a problem body or without `Retry-After`.
    malformed_503: AtomicU64,
    /// 503s that say the in-flight cap was reached.
    shed: AtomicU64,
    other: AtomicU64,
    /// No HTTP answer: refused or reset connections (only expected while the server itself is
    /// down) and client timeouts.
    no_answer: AtomicU64,
    max_failed_ms: AtomicU64,
    others_seen: Mutex<Vec<String>>,
}

/// Writes the load made: per user, the name last acknowledged, plus names whose write failed
/// after it (it may or may not have committed). A read is stale if it shows neither.
#[derive(Debug, Default)]
struct Ledger {
    users: Mutex<HashMap<i64, Expected>>,
}

#[derive(Debug, Clone)]
struct Expected {
    acked: String,
    maybe: Vec<String>,
}

struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    tally: Arc<Tally>,
    ledger: Arc<Ledger>,
}

impl Tally {
    async fn record(
        &self,
        started: Instant,
        result: reqwest::Result<reqwest::Response>,
    ) -> Option<(u16, String)> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let elapsed = started.elapsed().as_millis() as u64;
        let failed = |tally: &Self| {
            tally.max_failed_ms.fetch_max(elapsed, Ordering::Relaxed);
        };
        let response = match result {
            Ok(response) => response,
            Err(_) => {
                self.no_answer.fetch_add(1, Ordering::Relaxed);
                failed(self);
                return None;
            }
        };
        let status = response.status().as_u16();
        let problem = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/problem+json");
        let retry_after = response.headers().contains_key("retry-after");
        let body = response.text().await.unwrap_or_default();
        match status {
            200..=299 => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            503 => {
                failed(self);
                self.unavailable.fetch_add(1, Ordering::Relaxed);
                if !(problem && retry_after) {
                    self.malformed_503.fetch_add(1, Ordering::Relaxed);
                }
                if body.contains("urn:userstack:problem:overloaded") {
                    self.shed.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                failed(self);
                self.other.fetch_add(1, Ordering::Relaxed);
                self.others_seen
                    .lock()
                    .unwrap()
                    .push(format!("{status} {body}"));
            }
        }
        Some((status, body))
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT + Duration::from_secs(5))
        .build()
        .unwrap()
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

impl Load {
    fn start(base: &str, ledger: Arc<Ledger>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let mut tasks = Vec::new();
        for _ in 0..WRITERS {
            let (stop, tally, ledger, base) =
                (stop.clone(), tally.clone(), ledger.clone(), base.to_owned());
            tasks.push(tokio::spawn(async move {
                writer(&base, &stop, &tally, &ledger).await;
            }));
        }
        for r in 0..READERS {
            let (stop, tally, ledger, base) =
                (stop.clone(), tally.clone(), ledger.clone(), base.to_owned());
            tasks.push(tokio::spawn(async move {
                reader(r, &base, &stop, &tally, &ledger).await;
            }));
        }
        Self {
            stop,
            tasks,
            tally,
            ledger,
        }
    }

    async fn stop(self) -> (Arc<Tally>, Arc<Ledger>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        (self.tally, self.ledger)
    }
}

/// Pauses between requests when the server is unreachable, so that a down server is not spun on.
async fn breathe(answered: bool) {
    tokio::time::sleep(Duration::from_millis(if answered { 2 } else { 50 })).await;
}

async fn writer(base: &str, stop: &AtomicBool, tally: &Tally, ledger: &Ledger) {
    let client = client();
    let mut mine: Vec<i64> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        // Mostly creates; every third write renames one of this writer's users.
        let answered = if n % 3 == 2 && !mine.is_empty() {
            let id = mine[(n as usize / 3) % mine.len()];
            let name = format!("renamed-{n}");
            let started = Instant::now();
            let result = client
                .patch(format!("{base}/users/{id}"))
                .json(&json!({ "name": name }))
                .send()
                .await;
            let answer = tally.record(started, result).await;
            let mut users = ledger.users.lock().unwrap();
            let expected = users.get_mut(&id).expect("a user this writer created");
            match &answer {
                Some((200, _)) => {
                    expected.acked = name;
                    expected.maybe.clear();
                }
                _ => expected.maybe.push(name),
            }
            answer.is_some()
        } else {
            let name = format!("user-{n}");
            let started = Instant::now();
            let result = client
                .post(format!("{base}/users"))
                .json(&json!({ "name": name, "email": format!("chaos-{n}@example.com") }))
                .send()
                .await;
            let answer = tally.record(started, result).await;
            if let Some((201, body)) = &answer {
                let user: Value = serde_json::from_str(body).unwrap();
                let id = user["id"].as_i64().unwrap();
                mine.push(id);
                ledger.users.lock().unwrap().insert(
                    id,
                    Expected {
                        acked: name,
                        maybe: Vec::new(),
                    },
                );
            }
            answer.is_some()
        };
        breathe(answered).await;
    }
}

async fn reader(r: usize, base: &str, stop: &AtomicBool, tally: &Tally, ledger: &Ledger) {
    let client = client();
    let mut i = r;
    while !stop.load(Ordering::Relaxed) {
        i += READERS;
        let id = {
            let users = ledger.users.lock().unwrap();
            users.keys().nth(i % users.len().max(1)).copied()
        };
        let url = match id {
            Some(id) if !i.is_multiple_of(4) => format!("{base}/users/{id}"),
            _ => format!("{base}/users?limit=50"),
        };
        let started = Instant::now();
        let result = client.get(url).send().await;
        let answered = tally.record(started, result).await.is_some();
        breathe(answered).await;
    }
}

/// Until a write and a read both succeed again; how long that took.
async fn time_to_recover(base: &str) -> Duration {
    let client = client();
    let started = Instant::now();
    loop {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let write = client
            .post(format!("{base}/users"))
            .json(&json!({ "name": "probe", "email": format!("probe-{n}@example.com") }))
            .send()
            .await;
        if let Ok(created) = write
            && created.status() == 201
        {
            let user: Value = created.json().await.unwrap();
            let read = client
                .get(format!("{base}/users/{}", user["id"]))
                .send()
                .await;
            if read.is_ok_and(|r| r.status() == 200) {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no recovery within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Acknowledged users missing from PostgreSQL.
async fn lost_writes(database: &PgSettings, ledger: &Ledger) -> usize {
    let ids: Vec<i64> = ledger.users.lock().unwrap().keys().copied().collect();
    let client = TestPostgres::client(database).await;
    let found = client
        .query("SELECT count(*) FROM users WHERE id = ANY($1)", &[&ids])
        .await
        .unwrap()[0]
        .get::<_, i64>(0);
    ids.len() - found as usize
}

/// Reads through the server that show neither the last acknowledged name nor one whose write
/// failed after it. Read twice: the second read is the cached one.
async fn stale_reads(base: &str, ledger: &Ledger) -> usize {
    let expected: Vec<(i64, Expected)> = ledger
        .users
        .lock()
        .unwrap()
        .iter()
        .map(|(id, e)| (*id, e.clone()))
        .collect();
    let client = client();
    let mut stale = 0;
    for (id, expected) in expected {
        for _ in 0..2 {
            let response = client
                .get(format!("{base}/users/{id}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "user {id} readable after recovery");
            let user: Value = response.json().await.unwrap();
            let name = user["name"].as_str().unwrap();
            if name != expected.acked && !expected.maybe.iter().any(|m| m == name) {
                stale += 1;
            }
        }
    }
    stale
}

struct Stack {
    pg: TestPostgres,
    database: PgSettings,
    redis: TestRedis,
    server: Server,
    _dir: tempfile::TempDir,
}

async fn stack() -> Stack {
    let pg = TestPostgres::start_durable();
    let database = pg.fresh_database().await;
    let redis = TestRedis::start_private();
    let dir = tempfile::tempdir().unwrap();
    let header_timeout = HEADER_READ_TIMEOUT_SECS.to_string();
    let server = Server::start(
        &[
            ("DATABASE_URL", &TestPostgres::url(&database)),
            ("REDIS_URL", redis.url()),
            ("MAX_IN_FLIGHT", MAX_IN_FLIGHT),
            ("HEADER_READ_TIMEOUT_SECS", &header_timeout),
        ],
        &dir.path().join("server.log"),
    );
    Stack {
        pg,
        database,
        redis,
        server,
        _dir: dir,
    }
}

/// How a scenario's fault is expected to look from the client side.
#[derive(Clone, Copy, PartialEq)]
enum ServerDown {
    /// The server stays up: every request gets an HTTP answer.
    Never,
    /// The server itself stops for a while: refused connections are expected then.
    Restarted,
}

/// Runs `fault` (which returns once the fault is over) under load, then measures and asserts.
async fn scenario<F: Future<Output = ()>>(
    name: &str,
    stack: &Stack,
    down: ServerDown,
    fault: impl FnOnce() -> F,
) {
    let base = stack.server.base();
    let load = Load::start(&base, Arc::new(Ledger::default()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    fault().await;
    let recovered_in = time_to_recover(&base).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (tally, ledger) = load.stop().await;
    report(name, stack, down, &tally, &ledger, recovered_in).await;
}

async fn report(
    name: &str,
    stack: &Stack,
    down: ServerDown,
    tally: &Tally,
    ledger: &Ledger,
    recovered_in: Duration,
) {
    let base = stack.server.base();
    // Past CACHE_BACKOFF_MS, so reads trust the cache again if they ever will.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let lost = lost_writes(&stack.database, ledger).await;
    let stale = stale_reads(&base, ledger).await;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let writes = ledger.users.lock().unwrap().len();
    eprintln!(
        "chaos {name}: requests={} ok={} 503={} (malformed={}) other={} no-answer={} \
         max-failed-latency={}ms acked-users={writes} lost={lost} stale={stale} recovered-in={}ms",
        get(&tally.requests),
        get(&tally.ok),
        get(&tally.unavailable),
        get(&tally.malformed_503),
        get(&tally.other),
        get(&tally.no_answer),
        get(&tally.max_failed_ms),
        recovered_in.as_millis()
    );
    assert!(get(&tally.ok) > 0, "the load got nothing through");
    assert_eq!(
        get(&tally.other),
        0,
        "statuses other than success and 503: {:?}",
        tally
            .others_seen
            .lock()
            .unwrap()
            .iter()
            .take(5)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        get(&tally.malformed_503),
        0,
        "every 503 is a problem with Retry-After"
    );
    assert!(
        Duration::from_millis(get(&tally.max_failed_ms)) < REQUEST_TIMEOUT,
        "a failed request took as long as the request timeout"
    );
    if down == ServerDown::Never {
        assert_eq!(get(&tally.no_answer), 0, "every request was answered");
    }
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert_eq!(stale, 0, "stale reads after recovery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_mid_load_then_restarted() {
    let stack = stack().await;
    scenario("postgres-killed", &stack, ServerDown::Never, || async {
        stack.pg.crash();
        tokio::time::sleep(Duration::from_secs(3)).await;
        stack.pg.restart();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_frozen_longer_than_the_request_timeout() {
    let stack = stack().await;
    scenario("postgres-frozen-12s", &stack, ServerDown::Never, || async {
        stack.pg.freeze(true);
        tokio::time::sleep(REQUEST_TIMEOUT + Duration::from_secs(2)).await;
        stack.pg.freeze(false);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_empty() {
    let stack = stack().await;
    scenario(
        "redis-killed-restarted-empty",
        &stack,
        ServerDown::Never,
        || async {
            stack.redis.stop();
            tokio::time::sleep(Duration::from_secs(3)).await;
            stack.redis.restart();
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_frozen() {
    let stack = stack().await;
    scenario("redis-frozen-5s", &stack, ServerDown::Never, || async {
        stack.redis.pause(true);
        tokio::time::sleep(Duration::from_secs(5)).await;
        stack.redis.pause(false);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sigtermed_then_sigkilled_and_restarted() {
    let mut stack = stack().await;
    for (name, signal) in [("server-sigterm", "-TERM"), ("server-sigkill", "-KILL")] {
        let base = stack.server.base();
        let load = Load::start(&base, Arc::new(Ledger::default()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let status = stack
            .server
            .signal_and_wait(signal, Duration::from_secs(12));
        if signal == "-TERM" {
            assert!(status.success(), "a clean exit on SIGTERM: {status:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let restarted = Instant::now();
        stack.server.spawn();
        let recovered_in = restarted.elapsed() + time_to_recover(&base).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (tally, ledger) = load.stop().await;
        report(
            name,
            &stack,
            ServerDown::Restarted,
            &tally,
            &ledger,
            recovered_in,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_in_flight_cap_is_shed() {
    let stack = stack().await;
    let base = stack.server.base();
    scenario("flood-200-clients", &stack, ServerDown::Never, || async {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let flood: Vec<_> = (0..200)
            .map(|_| {
                let (stop, tally, base) = (stop.clone(), tally.clone(), base.clone());
                tokio::spawn(async move {
                    let client = client();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let result = client.get(format!("{base}/users?limit=100")).send().await;
                        tally.record(started, result).await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(4)).await;
        stop.store(true, Ordering::Relaxed);
        for task in flood {
            task.await.unwrap();
        }
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        eprintln!(
            "chaos flood (the flood itself): requests={} ok={} 503={} (shed={}, malformed={}) \
             other={} no-answer={} max-failed-latency={}ms",
            get(&tally.requests),
            get(&tally.ok),
            get(&tally.unavailable),
            get(&tally.shed),
            get(&tally.malformed_503),
            get(&tally.other),
            get(&tally.no_answer),
            get(&tally.max_failed_ms),
        );
        assert!(
            get(&tally.shed) > 0,
            "the flood passed the in-flight cap and was shed"
        );
        assert_eq!(
            get(&tally.other) + get(&tally.malformed_503) + get(&tally.no_answer),
            0
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_slowloris_connections() {
    let stack = stack().await;
    let address = format!("127.0.0.1:{}", stack.server.port);
    scenario("slowloris-500", &stack, ServerDown::Never, || async {
        let mut slow = Vec::new();
        for _ in 0..500 {
            let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
            stream
                .write_all(b"POST /users HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1\r\n")
                .await
                .unwrap();
            slow.push(stream);
        }
        let opened = Instant::now();
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(HEADER_READ_TIMEOUT_SECS + 3);
        let mut closed = 0;
        for stream in &mut slow {
            let mut buf = [0u8; 512];
            loop {
                match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                    Err(_) => break,
                    Ok(Ok(0) | Err(_)) => {
                        closed += 1;
                        break;
                    }
                    Ok(Ok(_)) => {}
                }
            }
        }
        eprintln!(
            "chaos slowloris: {closed} of 500 half-sent connections closed by the server within \
             {}ms (header-read timeout {HEADER_READ_TIMEOUT_SECS}s)",
            opened.elapsed().as_millis()
        );
        assert_eq!(closed, 500, "every slowloris connection is closed");
    })
    .await;
}
