//! The server's protections against hostile or overwhelming clients, each shown to act: slowloris
//! connections are closed after the header-read timeout without slowing anyone else, idle
//! keep-alive connections after the idle timeout, connections past the cap wait, and requests
//! past the in-flight cap are shed at once with a 503 problem.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use userstack_core::memory::{InMemoryCache, InMemoryUserRepository};
use userstack_core::{ServiceConfig, UserService};
use userstack_server::{AppState, HttpConfig, app, serve, with_layers};

#[path = "support/socket.rs"]
mod socket;
use socket::{closed_before, closed_within};

struct Running {
    address: std::net::SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

fn service() -> UserService {
    UserService::new(
        Arc::new(InMemoryUserRepository::new()),
        Arc::new(InMemoryCache::new()),
        ServiceConfig::default(),
    )
}

async fn start(router: Router, http: HttpConfig) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        serve(
            listener,
            router,
            async move {
                let _ = stopped.await;
            },
            &http,
            Default::default(),
        )
        .await
    });
    Running {
        address,
        _stop: stop,
    }
}

async fn start_app(http: HttpConfig) -> Running {
    let router = app(AppState::without_pools(service()), &http);
    start(router, http).await
}

/// Sends `GET path` on `stream` and reads its answer, which must be a 200 (the bodies here are
/// short enough to arrive in one read).
async fn get_ok(stream: &mut TcpStream, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "GET {path} answered {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_do_not_slow_others_and_are_closed_after_the_header_timeout() {
    let http = HttpConfig {
        header_read_timeout_secs: 2,
        ..HttpConfig::default()
    };
    let server = start_app(http).await;
    let opened = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        // A request head that never ends.
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }

    // Everyone else is served while they hang.
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let response = client.get(server.url("/")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(
        opened.elapsed() < Duration::from_secs(2),
        "served before the slow clients' timeout ran out (took {:?}), so not because they were \
         dropped",
        opened.elapsed()
    );

    // Dribbling more header bytes does not extend the deadline.
    for stream in &mut slow[..10] {
        stream.write_all(b"X-More: 1\r\n").await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut open = 0;
    for stream in &mut slow {
        if !closed_before(stream, deadline).await {
            open += 1;
        }
    }
    assert_eq!(
        open, 0,
        "every half-sent request's connection is closed after the timeout"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let http = HttpConfig {
        idle_timeout_secs: 1,
        header_read_timeout_secs: 30,
        ..HttpConfig::default()
    };
    let server = start_app(http).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    get_ok(&mut stream, "/").await;
    let idle_since = Instant::now();
    assert!(
        closed_within(&mut stream, Duration::from_secs(5)).await,
        "the idle keep-alive connection is closed"
    );
    assert!(
        idle_since.elapsed() >= Duration::from_millis(900),
        "not before the idle timeout"
    );
}

/// The two timeouts are separate: a keep-alive connection may wait for its next request longer
/// than the header-read timeout, and the head of that request still gets only the header-read
/// timeout once it starts.
#[tokio::test]
async fn a_keep_alive_connection_waits_the_idle_timeout_not_the_header_timeout() {
    let http = HttpConfig {
        idle_timeout_secs: 60,
        header_read_timeout_secs: 1,
        ..HttpConfig::default()
    };
    let server = start_app(http).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    get_ok(&mut stream, "/").await;
    assert!(
        !closed_within(&mut stream, Duration::from_millis(2500)).await,
        "an idle keep-alive connection outlives the header-read timeout"
    );
    // And the next request is served.
    get_ok(&mut stream, "/").await;

    // A head that starts but never ends, after the connection idled: the header timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(4)).await);
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// The header-read timeout also holds right after a request that waited on something (the
/// database, the cache): the next head must still arrive whole within it.
#[tokio::test]
async fn the_header_timeout_holds_after_a_request_that_waited() {
    let http = HttpConfig {
        idle_timeout_secs: 60,
        header_read_timeout_secs: 1,
        ..HttpConfig::default()
    };
    let waits = || async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        "waited"
    };
    let routes = Router::new().route("/waits", get(waits));
    let router = with_layers(routes, &AppState::without_pools(service()), &http);
    let server = start(router, http).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    get_ok(&mut stream, "/waits").await;

    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut stream, Duration::from_secs(4)).await,
        "a head left unfinished after a request that waited is cut off by the header-read \
         timeout, not left until the idle timeout"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let http = HttpConfig {
        max_connections: 2,
        header_read_timeout_secs: 30,
        ..HttpConfig::default()
    };
    let server = start_app(http).await;
    let first = TcpStream::connect(server.address).await.unwrap();
    let _second = TcpStream::connect(server.address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let client = reqwest::Client::new();
    let third = client
        .get(server.url("/"))
        .timeout(Duration::from_millis(700))
        .send()
        .await;
    assert!(
        third.is_err_and(|e| e.is_timeout()),
        "a third connection is not served while two are open"
    );

    let waiting = tokio::spawn({
        let url = server.url("/");
        async move { reqwest::get(url).await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once a slot frees")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}

/// A route whose requests stay in flight until `gate` gets a permit each, beside `/` and
/// `/healthz`, all under one in-flight budget.
async fn start_held(gate: Arc<tokio::sync::Semaphore>, max_in_flight: usize) -> Running {
    let http = HttpConfig {
        max_in_flight,
        ..HttpConfig::default()
    };
    let held = move || {
        let gate = gate.clone();
        async move {
            gate.acquire().await.unwrap().forget();
            "released"
        }
    };
    let routes = Router::new()
        .route("/held", get(held))
        .route("/", get(|| async { "hello" }))
        .route("/healthz", get(|| async { "ok" }));
    let router = with_layers(routes, &AppState::without_pools(service()), &http);
    start(router, http).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_in_flight_cap_are_shed_at_once_with_a_503_problem() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let server = start_held(gate.clone(), 2).await;
    let client = reqwest::Client::new();
    let busy: Vec<_> = (0..2)
        .map(|_| tokio::spawn(client.get(server.url("/held")).send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let shed = client
        .get(server.url("/held"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("answered at once, not queued");
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["content-type"], "application/problem+json");
    assert_eq!(shed.headers()["retry-after"], "1");
    let problem: serde_json::Value = shed.json().await.unwrap();
    assert_eq!(problem["type"], "urn:userstack:problem:overloaded");
    assert_eq!(problem["status"], 503);
    // Probes are exempt: a liveness probe failing under load would get the replica restarted.
    let health = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    gate.add_permits(2);
    for request in busy {
        let response = request.await.unwrap().unwrap();
        assert_eq!(response.text().await.unwrap(), "released");
    }
    let after = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(after.status(), 200, "served again once below the cap");
}
