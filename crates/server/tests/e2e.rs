//! End to end over TCP: the real `userstack` binary against a real PostgreSQL and Redis, both
//! started by this test on free ports, then stopped and restarted under it.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use userstack_cache_redis::testing::TestRedis;
use userstack_storage_pg::testing::TestPostgres;

mod support;

use support::{BIN, free_port};

struct Server {
    child: Child,
    base: String,
    admin_base: String,
    port: u16,
    admin_port: u16,
}

impl Server {
    fn start(database_url: &str, redis_url: &str) -> Self {
        Self::start_with(database_url, redis_url, &[], Stdio::inherit())
    }

    /// With extra environment variables, its log (stderr) going to `stderr`.
    fn start_with(
        database_url: &str,
        redis_url: &str,
        env: &[(&str, &std::ffi::OsStr)],
        stderr: Stdio,
    ) -> Self {
        let port = free_port();
        let admin_port = free_port();
        let child = Command::new(BIN)
            .env_clear()
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", redis_url)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("ADMIN_PORT", admin_port.to_string())
            .env("DATABASE_TIMEOUT_MS", "500")
            .env("CACHE_BACKOFF_MS", "200")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the userstack binary");
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            admin_base: format!("http://127.0.0.1:{admin_port}"),
            port,
            admin_port,
        };
        server.wait_until_healthy();
        server
    }

    fn wait_until_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthcheck(self.port, self.admin_port).success() {
            assert!(Instant::now() < deadline, "server did not become healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A URL on the admin listener (/readyz, /metrics).
    fn admin_url(&self, path: &str) -> String {
        format!("{}{path}", self.admin_base)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, as `docker stop` sends; the exit status.
    fn terminate(mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(Instant::now() < deadline, "server ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn healthcheck(port: u16, admin_port: u16) -> ExitStatus {
    Command::new(BIN)
        .arg("healthcheck")
        .env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("ADMIN_PORT", admin_port.to_string())
        .stderr(Stdio::null())
        .status()
        .unwrap()
}

async fn text(client: &reqwest::Client, url: &str) -> (StatusCode, String) {
    let response = client.get(url).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn post_user(client: &reqwest::Client, server: &Server, user: Value) -> reqwest::Response {
    client
        .post(server.url("/users"))
        .json(&user)
        .send()
        .await
        .unwrap()
}

/// The value of one series on `/metrics`, e.g. `userstack_db_batches_total{kind="create"}`.
async fn counter(client: &reqwest::Client, server: &Server, series: &str) -> u64 {
    let (_, metrics) = text(client, &server.admin_url("/metrics")).await;
    let prefix = format!("{series} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
        .parse()
        .unwrap()
}

/// The server's cache reads that ended in `result` (`hit`, `miss`, `shared`, ...).
async fn cache_reads(client: &reqwest::Client, server: &Server, result: &str) -> u64 {
    let series = format!(r#"userstack_cache_operations_total{{result="{result}"}}"#);
    counter(client, server, &series).await
}

/// Reads a cache answered, from Redis or from the server's memory.
async fn cache_hits(client: &reqwest::Client, server: &Server) -> u64 {
    cache_reads(client, server, "hit").await + cache_reads(client, server, "memory_hit").await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_serves_the_original_routes_and_survives_its_dependencies_going_away() {
    let pg = TestPostgres::start_private();
    let database = pg.fresh_database().await;
    let redis = TestRedis::start_private();
    let server = Server::start(&TestPostgres::url(&database), redis.url());
    let client = reqwest::Client::new();

    // The original application's three routes, byte for byte.
    let (status, body) = text(&client, &server.url("/")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "Hello, Docker Multi-Container!")
    );
    let (_, body) = text(&client, &server.url("/cache")).await;
    assert_eq!(body, "Cache Miss: Key Set");
    let (_, body) = text(&client, &server.url("/cache")).await;
    assert_eq!(body, "Cache Hit: Hello from Redis Cache!");
    let (status, body) = text(&client, &server.url("/users")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "[]"));

    // CRUD.
    let created = post_user(
        &client,
        &server,
        json!({"name": "Ada", "email": "ada@example.com"}),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let ada: Value = created.json().await.unwrap();
    let fetched: Value = client
        .get(server.url(&location))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, ada);
    let patched: Value = client
        .patch(server.url(&location))
        .json(&json!({"name": "Ada L."}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["name"], "Ada L.");
    let dup = post_user(
        &client,
        &server,
        json!({"name": "Eve", "email": "ADA@EXAMPLE.COM"}),
    )
    .await;
    assert_eq!(dup.status(), StatusCode::CONFLICT);
    let bob: Value = post_user(
        &client,
        &server,
        json!({"name": "Bob", "email": "bob@example.com"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let bob_url = server.url(&format!("/users/{}", bob["id"]));
    assert_eq!(
        client.delete(&bob_url).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let (_, list) = text(&client, &server.url("/users")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&list).unwrap(),
        json!([patched])
    );
    // The three creates (the duplicate too) came one after another: three batches of one.
    for series in [
        "userstack_db_batches_total",
        "userstack_db_batched_jobs_total",
    ] {
        let series = format!(r#"{series}{{kind="create"}}"#);
        assert_eq!(counter(&client, &server, &series).await, 3, "{series}");
    }

    // Warm reads come from Redis.
    let before = cache_hits(&client, &server).await;
    text(&client, &server.url("/users")).await;
    assert!(
        cache_hits(&client, &server).await > before,
        "a repeated read is a cache hit"
    );

    // Redis stopped mid-test: user requests still succeed, from PostgreSQL.
    redis.stop();
    for _ in 0..3 {
        let (status, body) = text(&client, &server.url("/users")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!([patched])
        );
    }
    let carl = post_user(
        &client,
        &server,
        json!({"name": "Carl", "email": "carl@example.com"}),
    )
    .await;
    assert_eq!(
        carl.status(),
        StatusCode::CREATED,
        "writes work without Redis"
    );
    let carl_url = server.url(carl.headers()["location"].to_str().unwrap());
    let (status, _) = text(&client, &server.url("/cache")).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the cache demo needs the cache"
    );
    let (status, ready) = text(&client, &server.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ready.contains(r#""cache":"degraded""#), "{ready}");

    // Redis back: the cache is used again, and the write made while it was down is visible.
    redis.restart();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut hits_again = false;
    for _ in 0..50 {
        let before = cache_hits(&client, &server).await;
        let (_, body) = text(&client, &server.url("/users")).await;
        assert_eq!(
            serde_json::from_str::<Value>(&body)
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            2
        );
        text(&client, &server.url("/users")).await;
        if cache_hits(&client, &server).await > before {
            hits_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hits_again, "cache hits return after Redis restarts");

    // Redis frozen with its data intact (the restart above lost everything it held, so it could
    // not show staleness): a write made meanwhile must not be hidden by the old entries once
    // Redis answers again.
    let name_at = |url: String| {
        let client = client.clone();
        async move {
            let user: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            user["name"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(name_at(carl_url.clone()).await, "Carl");
    assert_eq!(name_at(carl_url.clone()).await, "Carl"); // cached
    redis.pause(true);
    let renamed = client
        .patch(&carl_url)
        .json(&json!({"name": "Carl (Redis froze)"}))
        .send()
        .await
        .unwrap();
    redis.pause(false);
    assert_eq!(renamed.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await; // past CACHE_BACKOFF_MS
    for _ in 0..2 {
        assert_eq!(name_at(carl_url.clone()).await, "Carl (Redis froze)");
    }

    // PostgreSQL stopped: a problem with 503 and Retry-After; readiness fails; liveness does not.
    pg.stop();
    let response = post_user(
        &client,
        &server,
        json!({"name": "Dora", "email": "dora@example.com"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().contains_key("retry-after"));
    let (status, _) = text(&client, &server.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        healthcheck(server.port, server.admin_port).success(),
        "liveness does not depend on PostgreSQL"
    );

    // PostgreSQL back: the same server process recovers, nothing lost.
    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = text(&client, &server.admin_url("/readyz")).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server did not recover after PostgreSQL restarted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dora = post_user(
        &client,
        &server,
        json!({"name": "Dora", "email": "dora@example.com"}),
    )
    .await;
    assert_eq!(dora.status(), StatusCode::CREATED);
    let (_, body) = text(&client, &server.url("/users")).await;
    let names: Vec<String> = serde_json::from_str::<Vec<Value>>(&body)
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["Ada L.", "Carl (Redis froze)", "Dora"]);

    // SIGTERM: a clean exit, well inside Docker's 10 s grace period.
    let (status, took) = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(9), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_starts_and_serves_users_while_redis_is_down() {
    let pg = TestPostgres::start();
    let database = pg.fresh_database().await;
    let closed = free_port(); // nothing listens there
    let server = Server::start(
        &TestPostgres::url(&database),
        &format!("redis://127.0.0.1:{closed}"),
    );
    let client = reqwest::Client::new();
    let created = post_user(
        &client,
        &server,
        json!({"name": "Ada", "email": "ada@example.com"}),
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let (status, body) = text(&client, &server.url("/users")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()[0]["name"],
        "Ada"
    );
    let (status, ready) = text(&client, &server.admin_url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ready.contains(r#""cache":"degraded""#), "{ready}");
}

/// While the connection cap is full, a burst of clients larger than the standard library's listen
/// backlog (128) still completes its handshakes: they wait in the kernel's accept queue for a
/// slot instead of having their handshakes dropped and retried a second or more later.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_clients_waits_in_the_listen_backlog_while_the_connection_cap_is_full() {
    const BURST: usize = 300;
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("read net.core.somaxconn")
        .trim()
        .parse()
        .unwrap();
    assert!(
        somaxconn > BURST,
        "net.core.somaxconn is {somaxconn}: the kernel caps every backlog below this test's \
         burst of {BURST} (sysctl -w net.core.somaxconn=4096)"
    );
    let pg = TestPostgres::start();
    let database = pg.fresh_database().await;
    let closed = free_port(); // nothing listens there
    let server = Server::start_with(
        &TestPostgres::url(&database),
        &format!("redis://127.0.0.1:{closed}"),
        &[("MAX_CONNECTIONS", std::ffi::OsStr::new("1"))],
        Stdio::inherit(),
    );
    let address = ("127.0.0.1", server.port);
    // The only slot: the server accepts no other connection while this one is open.
    let _held = tokio::net::TcpStream::connect(address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..BURST {
        burst.spawn(tokio::time::timeout(
            Duration::from_millis(700),
            tokio::net::TcpStream::connect(address),
        ));
    }
    let (mut connected, mut waiting) = (Vec::new(), 0);
    while let Some(result) = burst.join_next().await {
        match result.unwrap() {
            Ok(Ok(stream)) => connected.push(stream),
            Ok(Err(e)) => panic!("connect failed: {e}"),
            Err(_) => waiting += 1,
        }
    }
    assert_eq!(
        (connected.len(), waiting),
        (BURST, 0),
        "(connected within 700 ms, still waiting: handshakes a full accept queue dropped)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_subcommand_and_bad_configuration() {
    let pg = TestPostgres::start();
    let database = pg.fresh_database().await;
    let url = TestPostgres::url(&database);
    let migrate = |url: &str| {
        Command::new(BIN)
            .args(["migrate"])
            .env_clear()
            .env("DATABASE_URL", url)
            .env("DATABASE_STARTUP_TIMEOUT_SECS", "1")
            .output()
            .unwrap()
    };
    let first = migrate(&url);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stderr).contains("applied migrations: [1, 2]"));
    let second = migrate(&url);
    assert!(String::from_utf8_lossy(&second.stderr).contains("up to date"));

    // Nothing listens there: bounded wait, then a clear message and a failing exit code.
    let closed = free_port();
    let unreachable = migrate(&format!("postgres://postgres@127.0.0.1:{closed}/x"));
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("did not become reachable"));

    // The server refuses us (here: no such database): retrying cannot help, so no waiting out
    // the start-up timeout, and the server's own reason in the message.
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    config.dbname("no_such_database");
    let started = Instant::now();
    let refused = Command::new(BIN)
        .args(["migrate"])
        .env_clear()
        .env(
            "DATABASE_URL",
            TestPostgres::url(&userstack_storage_pg::PgSettings { config, ..database }),
        )
        .env("DATABASE_STARTUP_TIMEOUT_SECS", "60")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("\"no_such_database\" does not exist"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "failed fast: {:?}",
        started.elapsed()
    );

    let bad_port = Command::new(BIN)
        .env_clear()
        .env("PORT", "eighty")
        .output()
        .unwrap();
    assert_eq!(bad_port.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_port.stderr).contains("PORT"));

    assert!(
        !healthcheck(closed, free_port()).success(),
        "healthcheck fails when nothing answers"
    );

    let help = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for var in [
        "DATABASE_URL",
        "PGHOST",
        "DATABASE_PASSWORD_FILE",
        "REDIS_URL",
        "HOST",
        "PORT",
        "LOG_FORMAT",
    ] {
        assert!(help.contains(&format!("env: {var}")), "--help lists {var}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_password_can_come_from_a_file() {
    let pg = TestPostgres::start();
    let database = pg.fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "irrelevant-under-trust\n").unwrap();
    let missing = Command::new(BIN)
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", TestPostgres::url(&database))
        .env("DATABASE_PASSWORD_FILE", dir.path().join("absent"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("DATABASE_PASSWORD_FILE"));
    let present = Command::new(BIN)
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", TestPostgres::url(&database))
        .env("DATABASE_PASSWORD_FILE", &file)
        .output()
        .unwrap();
    assert!(
        present.status.success(),
        "{}",
        String::from_utf8_lossy(&present.stderr)
    );
}

/// The deployed configuration: bearer tokens from a file (two, for rotation), Redis behind a
/// password from a file, /readyz and /metrics on the admin listener only. Nothing secret in the
/// log, and a rewrite of the token file takes effect without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn tokens_redis_password_and_the_admin_listener_in_the_real_binary() {
    let pg = TestPostgres::start();
    let database = pg.fresh_database().await;
    let redis = TestRedis::start_with_password("redis-secret-3f9a1c");
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = ("old-token-6b1e0d9c2f", "new-token-8a7f3e2d1c");
    let tokens = dir.path().join("api_tokens");
    std::fs::write(&tokens, format!("# rotating\n{old}\n{new}\n")).unwrap();
    let redis_password = dir.path().join("redis_password");
    std::fs::write(&redis_password, "redis-secret-3f9a1c\n").unwrap();
    let log = dir.path().join("server.log");
    let server = Server::start_with(
        &TestPostgres::url(&database),
        redis.url(),
        &[
            ("API_TOKEN_FILE", tokens.as_os_str()),
            ("REDIS_PASSWORD_FILE", redis_password.as_os_str()),
            ("RUST_LOG", "info".as_ref()),
        ],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let client = reqwest::Client::new();
    let get = |url: String, token: Option<&'static str>| {
        let mut request = client.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    // Open routes stay open, byte for byte; /cache works only if Redis took the password.
    let (status, body) = text(&client, &server.url("/")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "Hello, Docker Multi-Container!")
    );
    let (status, body) = text(&client, &server.url("/cache")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "Cache Miss: Key Set")
    );
    let (status, _) = text(&client, &server.url("/healthz")).await;
    assert_eq!(status, StatusCode::OK);

    // No token, a wrong one: 401 problem+json with the Bearer challenge.
    let missing = get(server.url("/users"), None).await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        missing.headers()["www-authenticate"],
        r#"Bearer realm="userstack""#
    );
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    let wrong = get(server.url("/users"), Some("wrong-token-0000000000"))
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong.headers()["www-authenticate"],
        r#"Bearer realm="userstack", error="invalid_token""#
    );
    // Rotation: both tokens work at once.
    for token in [old, new] {
        let ok = get(server.url("/users"), Some(token)).await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK, "token {token}");
    }
    let created = client
        .post(server.url("/users"))
        .bearer_auth(new)
        .json(&json!({"name": "Ada", "email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    // /readyz and /metrics: on the admin listener, without a token; not on the public port.
    for path in ["/readyz", "/metrics"] {
        let (status, _) = text(&client, &server.url(path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "public {path}");
        let (status, body) = text(&client, &server.admin_url(path)).await;
        assert_eq!(status, StatusCode::OK, "admin {path}: {body}");
    }
    let (_, ready) = text(&client, &server.admin_url("/readyz")).await;
    assert!(
        ready.contains(r#""cache":"ok""#),
        "Redis authenticated: {ready}"
    );
    let (status, _) = text(&client, &server.admin_url("/users")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no user routes on the admin port"
    );

    // Rotation, second half: the old token removed from the file (in place), no restart.
    std::fs::write(&tokens, format!("{new}\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = get(server.url("/users"), Some(old)).await.unwrap().status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old token still works after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ok = get(server.url("/users"), Some(new)).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    drop(server);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("bearer tokens required"), "{log}");
    assert!(log.contains("tokens reloaded"), "{log}");
    for secret in [old, new, "redis-secret-3f9a1c"] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
}

/// Without a token the API is open, as the original application was, and the log says so.
#[tokio::test(flavor = "multi_thread")]
async fn an_open_server_warns_loudly_at_start_up() {
    let pg = TestPostgres::start();
    let database = pg.fresh_database().await;
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let server = Server::start_with(
        &TestPostgres::url(&database),
        redis.url(),
        &[],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let (status, _) = text(&reqwest::Client::new(), &server.url("/users")).await;
    assert_eq!(status, StatusCode::OK);
    drop(server);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("NO AUTHENTICATION"), "{log}");

    // A token file that cannot be used stops the start, with a message: never "open instead".
    let bad = dir.path().join("tokens");
    std::fs::write(&bad, "short\n").unwrap();
    let refused = Command::new(BIN)
        .env_clear()
        .env("API_TOKEN_FILE", &bad)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("API_TOKEN_FILE"));
}

/// `userstack ready`: readiness from inside a container, where the admin port is not published.
#[tokio::test(flavor = "multi_thread")]
async fn the_ready_subcommand_reports_the_admin_listeners_readiness() {
    let pg = TestPostgres::start_private();
    let database = pg.fresh_database().await;
    let redis = TestRedis::start();
    let server = Server::start(&TestPostgres::url(&database), redis.url());
    let ready = |admin_port: u16| {
        Command::new(BIN)
            .arg("ready")
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("ADMIN_PORT", admin_port.to_string())
            .output()
            .unwrap()
    };
    let up = ready(server.admin_port);
    assert!(up.status.success());
    assert!(String::from_utf8_lossy(&up.stderr).contains(r#""status":"ready""#));
    pg.stop();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let down = ready(server.admin_port);
        if !down.status.success() {
            assert!(String::from_utf8_lossy(&down.stderr).contains("503"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still ready with PostgreSQL stopped"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!ready(free_port()).status.success(), "nothing listening");
}

/// Readers of one page the cache does not hold, arriving together: one PostgreSQL read, the
/// others take its entry (`shared`). Before, each reader loaded the page itself, and a hot page's
/// expiry at 10 000 connections queued thousands of the same read on the pool
/// (docs/performance.md).
#[tokio::test(flavor = "multi_thread")]
async fn readers_of_one_cold_page_together_cause_one_postgresql_read() {
    let pg = TestPostgres::start();
    let database = pg.fresh_database().await;
    let redis = TestRedis::start();
    let patient = std::ffi::OsStr::new("20000");
    let server = Server::start_with(
        &TestPostgres::url(&database),
        redis.url(),
        &[("DATABASE_TIMEOUT_MS", patient)],
        Stdio::inherit(),
    );
    let client = reqwest::Client::new();
    for i in 0..3 {
        let user = json!({"name": "Ada", "email": format!("ada{i}@example.com")});
        assert_eq!(
            post_user(&client, &server, user).await.status(),
            StatusCode::CREATED
        );
    }
    // PostgreSQL holds every read of the table until this transaction ends.
    let mut locker = TestPostgres::client(&database).await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let readers = 30;
    let reads: Vec<_> = (0..readers)
        .map(|_| {
            let (client, url) = (client.clone(), server.url("/users?limit=7"));
            tokio::spawn(async move { text(&client, &url).await })
        })
        .collect();
    let watcher = TestPostgres::client(&database).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no read reached the locked table"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Time for every reader to miss the cache meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.commit().await.unwrap();
    let mut bodies = Vec::new();
    for read in reads {
        let (status, body) = read.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        bodies.push(body);
    }
    assert!(bodies.iter().all(|b| b == &bodies[0]), "one page for all");
    let misses = cache_reads(&client, &server, "miss").await;
    let shared = cache_reads(&client, &server, "shared").await;
    let hits = cache_hits(&client, &server).await;
    eprintln!(
        "{readers} readers of one cold page: {misses} read PostgreSQL, {shared} took that read's entry, {hits} hit a cache"
    );
    assert_eq!(misses, 1, "one read of PostgreSQL");
    assert_eq!(shared + hits, readers - 1);
}

/// A hot page whose refresh fails in PostgreSQL (its table locked past the store's deadline)
/// is still served from memory until it is twice its TTL old, and counted `expired`; before, the
/// one reader that refreshed it got a 503 in each TTL while every other reader got the page.
#[tokio::test(flavor = "multi_thread")]
async fn a_hot_page_is_served_past_its_ttl_while_postgresql_fails_its_refresh() {
    let pg = TestPostgres::start();
    let database = pg.fresh_database().await;
    let redis = TestRedis::start();
    let server = Server::start_with(
        &TestPostgres::url(&database),
        redis.url(),
        &[
            ("CACHE_TTL_SECS", std::ffi::OsStr::new("1")),
            ("DATABASE_TIMEOUT_MS", std::ffi::OsStr::new("300")),
            ("DATABASE_STATEMENT_TIMEOUT_MS", std::ffi::OsStr::new("250")),
        ],
        Stdio::inherit(),
    );
    let client = reqwest::Client::new();
    let user = json!({"name": "Ada", "email": "ada@example.com"});
    assert_eq!(
        post_user(&client, &server, user).await.status(),
        StatusCode::CREATED
    );
    let url = server.url("/users?limit=7");
    // The page is stored by the first read after the create; memory serves it soon after.
    let stored = Instant::now();
    let (status, page) = text(&client, &url).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    while cache_reads(&client, &server, "memory_hit").await == 0 {
        assert!(
            stored.elapsed() < Duration::from_millis(800),
            "memory did not serve the page within its TTL"
        );
        assert_eq!(text(&client, &url).await, (StatusCode::OK, page.clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // PostgreSQL holds every read of the table until this transaction ends: past the store's
    // deadline, a page read fails.
    let mut locker = TestPostgres::client(&database).await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // Past the TTL (1 s), in memory and in Redis, and well before twice the TTL.
    tokio::time::sleep_until((stored + Duration::from_millis(1300)).into()).await;
    let refreshed = text(&client, &url).await;
    assert_eq!(
        refreshed,
        (StatusCode::OK, page.clone()),
        "the refresh failed"
    );
    assert_eq!(cache_reads(&client, &server, "expired").await, 1);
    // Twice the TTL old, the entry is gone: the store's failure is the answer.
    tokio::time::sleep_until((stored + Duration::from_millis(2300)).into()).await;
    let (status, problem) = text(&client, &url).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    lock.commit().await.unwrap();
    assert_eq!(text(&client, &url).await, (StatusCode::OK, page));
}
