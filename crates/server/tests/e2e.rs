//! End to end over TCP: the real `userstack` binary against a real PostgreSQL and Redis, both
//! started by this test on free ports, then stopped and restarted under it.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use userstack_cache_redis::testing::TestRedis;
use userstack_storage_pg::testing::TestPostgres;

const BIN: &str = env!("CARGO_BIN_EXE_userstack");

struct Server {
    child: Child,
    base: String,
    port: u16,
}

impl Server {
    fn start(database_url: &str, redis_url: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(BIN)
            .env_clear()
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", redis_url)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATABASE_TIMEOUT_MS", "500")
            .env("CACHE_BACKOFF_MS", "200")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start the userstack binary");
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            port,
        };
        server.wait_until_healthy();
        server
    }

    fn wait_until_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthcheck(self.port).success() {
            assert!(Instant::now() < deadline, "server did not become healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
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

fn healthcheck(port: u16) -> ExitStatus {
    Command::new(BIN)
        .arg("healthcheck")
        .env_clear()
        .env("PORT", port.to_string())
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

async fn cache_hits(client: &reqwest::Client, server: &Server) -> u64 {
    let (_, metrics) = text(client, &server.url("/metrics")).await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"userstack_cache_operations_total{result="hit"} "#))
        .expect("cache hit counter")
        .parse()
        .unwrap()
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
    let (status, ready) = text(&client, &server.url("/readyz")).await;
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
    let (status, _) = text(&client, &server.url("/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        healthcheck(server.port).success(),
        "liveness does not depend on PostgreSQL"
    );

    // PostgreSQL back: the same server process recovers, nothing lost.
    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = text(&client, &server.url("/readyz")).await;
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
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
    let (status, ready) = text(&client, &server.url("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ready.contains(r#""cache":"degraded""#), "{ready}");
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
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
        !healthcheck(closed).success(),
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
