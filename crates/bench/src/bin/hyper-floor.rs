//! The floor of any server built on hyper's HTTP/1 connection, for the benchmark's concurrency
//! sweep: the same `http1::Builder` and allocator as userstack (mimalloc without transparent huge
//! pages), a connection task per socket, and one static answer, the bytes of `GET /`. No router,
//! no middleware, no timeouts. What userstack costs per connection above this is ours; what this
//! costs is hyper's (its read buffer and head buffer, 8 KiB each at the least) and tokio's.
//!
//! `PORT=8080 hyper-floor` listens on 127.0.0.1:PORT until killed.

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::{Response, service::service_fn};
use hyper_util::rt::TokioIo;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BODY: &[u8] = b"Hello, Docker Multi-Container!";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other("PORT must be a port number"))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let hello = service_fn(|_request| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), hello)
                .await;
        });
    }
}
