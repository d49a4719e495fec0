//! The floor of any server built on hyper's HTTP/1 connection, for the benchmark's concurrency
//! sweep: the same `http1::Builder` and allocator as userstack (mimalloc without transparent huge
//! pages), a connection task per socket, and one static answer, the bytes of `GET /`. No router,
//! no middleware, no timeouts. What userstack costs per connection above this is ours; what this
//! costs is hyper's (its read buffer and head buffer, 8 KiB each at the least) and tokio's.
//!
//! `PORT=8080 hyper-floor` listens on 127.0.0.1:PORT until killed. With `HEADERS=userstack` the
//! answer also carries the two headers userstack's `GET /` puts in its response (`content-type`,
//! `x-request-id`; hyper writes `content-length` and `date` itself): hyper keeps each
//! connection's last response header map, emptied, for the next request's headers, so what a
//! connection holds between requests depends on them (`bench/rss-idle-connections.sh`).
//!
//! With `PAGE=FILE` it answers `GET /users` with that file's bytes as `application/json` (the
//! benchmark writes the warm page there): what hyper alone costs to send the page we send, the
//! floor beside nginx's `sendfile` of the same bytes. Any other path gets `GET /`'s answer.

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::{Request, Response, service::service_fn};
use hyper_util::rt::TokioIo;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BODY: &[u8] = b"Hello, Docker Multi-Container!";
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
/// The length of the UUIDs userstack sends; the value does not matter.
const REQUEST_ID: &str = "00000000-0000-4000-8000-000000000000";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other("PORT must be a port number"))?;
    let with_headers = match std::env::var("HEADERS").as_deref() {
        Err(_) => false,
        Ok("userstack") => true,
        Ok(other) => {
            return Err(std::io::Error::other(format!(
                "HEADERS must be 'userstack' or unset, not '{other}'"
            )));
        }
    };
    // Read once; each answer shares these bytes, as userstack's cached pages are shared.
    let page = match std::env::var_os("PAGE") {
        None => None,
        Some(path) => Some(Bytes::from(std::fs::read(&path).map_err(|e| {
            std::io::Error::other(format!("PAGE={}: {e}", path.to_string_lossy()))
        })?)),
    };
    // The backlog of userstack's `LISTEN_BACKLOG` default and of the benchmark's nginx: the
    // sweep's clients connect all at once.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(([127, 0, 0, 1], port).into())?;
    let listener = socket.listen(4096)?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let page = page.clone();
        tokio::spawn(async move {
            let hello = service_fn(move |request: Request<Incoming>| {
                // The page always carries userstack's headers; `GET /`'s with HEADERS=userstack.
                let (body, content_type) = match &page {
                    Some(page) if request.uri().path() == "/users" => (page.clone(), Some(JSON)),
                    _ => (Bytes::from_static(BODY), with_headers.then_some(TEXT_PLAIN)),
                };
                async move {
                    let mut response = Response::new(Full::new(body));
                    if let Some(content_type) = content_type {
                        let headers = response.headers_mut();
                        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                        headers.insert("x-request-id", HeaderValue::from_static(REQUEST_ID));
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), hello)
                .await;
        });
    }
}
