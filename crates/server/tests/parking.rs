//! Parking idle connections (`PARK_IDLE_ABOVE`): past the threshold an idle connection gives
//! hyper's buffers back, and nothing a client sent or was sent is lost on the way: its next
//! request, a pipelined one, a response still being written, and the timeouts all hold.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use userstack_core::memory::{InMemoryCache, InMemoryUserRepository};
use userstack_core::{ServiceConfig, UserService};
use userstack_server::{AppState, Connections, HttpConfig, serve, with_layers};

#[path = "support/socket.rs"]
mod socket;

/// Bytes of the `/large` body: far more than the socket buffers of both ends hold, so that
/// hyper is still writing it while a client that does not read waits.
const LARGE: usize = 64 * 1024 * 1024;

struct Running {
    address: std::net::SocketAddr,
    connections: Arc<Connections>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Serves `/`, `/metrics`, `/large` and `/waits` (200 ms) with `http`, counting connections
/// where the test sees them.
async fn start(http: HttpConfig) -> Running {
    let state = AppState::without_pools(UserService::new(
        Arc::new(InMemoryUserRepository::new()),
        Arc::new(InMemoryCache::new()),
        ServiceConfig::default(),
    ));
    let connections = state.connections.clone();
    let waits = || async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        "waited"
    };
    let routes = Router::new()
        .route("/large", get(|| async { vec![b'x'; LARGE] }))
        .route("/waits", get(waits));
    let router =
        userstack_server::app(state.clone(), &http).merge(with_layers(routes, &state, &http));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let connections = connections.clone();
        async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            serve(listener, router, shutdown, &http, connections).await
        }
    });
    Running {
        address,
        connections,
        stop: Some(stop),
        server,
    }
}

fn parking_always() -> HttpConfig {
    HttpConfig {
        park_idle_above: 0,
        ..HttpConfig::default()
    }
}

/// Waits up to two seconds for `parked` connections to be parked; true if they were.
async fn parked(connections: &Connections, parked: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if connections.parked() == parked {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// A client connection that reads responses one at a time, keeping bytes that arrived early.
struct Client {
    stream: TcpStream,
    received: Vec<u8>,
}

impl Client {
    async fn connect(server: &Running) -> Self {
        Self {
            stream: TcpStream::connect(server.address).await.unwrap(),
            received: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn read_more(&mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        let n = self.stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a whole response");
        self.received.extend_from_slice(&buf[..n]);
    }

    /// The next response (with a `content-length` body): its head and body.
    async fn response(&mut self) -> (String, Vec<u8>) {
        let end = loop {
            if let Some(end) = self.received.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            self.read_more().await;
        };
        let head = String::from_utf8(self.received[..end].to_vec()).unwrap();
        assert!(
            !head.contains("connection: close"),
            "parking never ends keep-alive for the client: {head}"
        );
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .expect("a content-length")
            .parse()
            .unwrap();
        while self.received.len() < end + 4 + length {
            self.read_more().await;
        }
        let body = self.received[end + 4..end + 4 + length].to_vec();
        self.received.drain(..end + 4 + length);
        (head, body)
    }

    async fn hello(&mut self) {
        self.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await;
        self.expect_hello().await;
    }

    async fn expect_hello(&mut self) {
        let (head, body) = self.response().await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"Hello, Docker Multi-Container!");
    }

    /// Whether the server closes the connection within `within`.
    async fn closed_within(&mut self, within: Duration) -> bool {
        socket::closed_within(&mut self.stream, within).await
    }
}

#[tokio::test]
async fn an_idle_connection_parks_and_serves_its_next_request() {
    let server = start(parking_always()).await;
    let mut client = Client::connect(&server).await;
    for _ in 0..3 {
        client.hello().await;
        assert!(
            parked(&server.connections, 1).await,
            "the idle connection parks"
        );
    }
    let mut other = Client::connect(&server).await;
    other
        .send(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let (_, metrics) = other.response().await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("userstack_http_connections{state=\"parked\"} 1"),
        "/metrics shows the parked connection:\n{metrics}"
    );
}

#[tokio::test]
async fn connections_park_only_above_the_threshold() {
    let server = start(HttpConfig {
        park_idle_above: 1,
        ..HttpConfig::default()
    })
    .await;
    let mut first = Client::connect(&server).await;
    first.hello().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.connections.parked(),
        0,
        "one open connection: not above the threshold, not parked"
    );

    // A second connection crosses it and parks whenever idle; the first, idle since before,
    // stays as it is until its next request.
    let mut second = Client::connect(&server).await;
    second.hello().await;
    assert!(parked(&server.connections, 1).await, "the second parks");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.connections.parked(), 1);
    first.hello().await;
    assert!(parked(&server.connections, 2).await, "then the first");
    second.hello().await;

    // Below the threshold again: a connection served now stays unparked.
    drop(second);
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.hello().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.connections.open(), 1);
    assert_eq!(server.connections.parked(), 0);
}

#[tokio::test]
async fn pipelined_requests_are_answered_across_parking() {
    let server = start(parking_always()).await;
    let mut client = Client::connect(&server).await;
    // Two requests in one write, and the start of a third: hyper reads them together.
    client
        .send(
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n\
              GET / HTTP/1.1\r\nHost: localhost\r\n\r\n\
              GET / HTTP/1.1\r\nHo",
        )
        .await;
    client.expect_hello().await;
    client.expect_hello().await;
    // Quiet after the second answer, the connection parks with the third head's start in
    // hyper's buffer; those bytes must come first when hyper reads again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.send(b"st: localhost\r\n\r\n").await;
    client.expect_hello().await;
}

#[tokio::test]
async fn a_request_that_waits_keeps_its_connection_alive() {
    let server = start(parking_always()).await;
    let mut client = Client::connect(&server).await;
    for _ in 0..2 {
        // `response` checks that the answer does not end keep-alive.
        client
            .send(b"GET /waits HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await;
        let (head, body) = client.response().await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"waited");
        assert!(parked(&server.connections, 1).await);
    }
}

#[tokio::test]
async fn a_response_still_being_written_is_not_cut_by_parking() {
    let server = start(parking_always()).await;
    let mut client = Client::connect(&server).await;
    client
        .send(b"GET /large HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    // Not reading: hyper has handed the whole body over and holds what the socket did not take.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        server.connections.parked(),
        0,
        "not parked while hyper still holds bytes of the response"
    );
    let (head, body) = tokio::time::timeout(Duration::from_secs(20), client.response())
        .await
        .expect("the whole body arrives");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body.len(), LARGE);
    assert!(body.iter().all(|&b| b == b'x'));
    assert!(parked(&server.connections, 1).await, "parks once written");
    client.hello().await;
}

#[tokio::test]
async fn a_parked_connection_keeps_its_timeouts() {
    let server = start(HttpConfig {
        idle_timeout_secs: 4,
        header_read_timeout_secs: 1,
        ..parking_always()
    })
    .await;
    let mut idle = Client::connect(&server).await;
    let mut slow = Client::connect(&server).await;
    idle.hello().await;
    let idle_since = Instant::now();
    slow.hello().await;
    assert!(parked(&server.connections, 2).await);

    // A head that starts on a parked connection and never ends: the header-read timeout.
    slow.send(b"GET / HTTP/1.1\r\n").await;
    let started = Instant::now();
    assert!(slow.closed_within(Duration::from_secs(6)).await);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "cut by the header-read timeout (1 s), not the idle one (4 s): {waited:?}"
    );

    // And a parked connection with nothing to say: the idle timeout.
    assert!(idle.closed_within(Duration::from_secs(6)).await);
    assert!(idle_since.elapsed() >= Duration::from_millis(3900));
}

#[tokio::test]
async fn shutdown_closes_parked_connections_at_once() {
    let mut server = start(HttpConfig {
        shutdown_timeout_secs: 30,
        ..parking_always()
    })
    .await;
    let mut client = Client::connect(&server).await;
    client.hello().await;
    assert!(parked(&server.connections, 1).await);
    server.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server.server)
        .await
        .expect("serve returns without waiting out the drain for a parked connection")
        .unwrap()
        .unwrap();
    assert!(client.closed_within(Duration::from_secs(1)).await);
}
