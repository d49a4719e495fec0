//! The accept loop: hyper's HTTP/1 connection builder with a timer, so that slow or idle clients
//! cannot hold connections forever, and a cap on how many connections are open at once.
//!
//! `axum::serve` builds hyper without a timer, which leaves hyper's header-read timeout off and
//! lets an idle keep-alive connection live forever; a few hundred slowloris clients would then
//! hold as many sockets for as long as they like. Here each connection gets:
//! - a header-read timeout (`HEADER_READ_TIMEOUT_SECS`): once the first byte of a request head
//!   arrives, the whole head must arrive within it, or the connection is closed;
//! - an idle timeout (`IDLE_TIMEOUT_SECS`): a connection on which no request arrives for that
//!   long after the last response (or the accept) is closed;
//! - a slot among `MAX_CONNECTIONS`: past the cap the loop stops accepting, so further clients
//!   wait in the kernel's listen backlog rather than cost a socket and a task each;
//! - past `PARK_IDLE_ABOVE` open connections, parking whenever it is idle (see `parking`).

mod activity;
mod parking;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use crate::config::HttpConfig;
use activity::{Activity, Timeouts, Watched};
pub use parking::Connections;

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting and lets
/// in-flight requests finish for at most `http.shutdown_timeout()` before returning. Idle
/// connections are closed at once on shutdown; busy ones after their current response.
///
/// Any number of listeners can be served this way at once (each call has its own connection
/// cap); pass each the same shutdown signal. `connections` counts this call's connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    http: &HttpConfig,
    connections: Arc<Connections>,
) -> std::io::Result<()> {
    let max_connections = http.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = http1::Builder::new();
    // The header-read timeout is this module's (see `Activity`), not hyper's; hyper still gets a
    // timer for its other waits.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    let timeouts = Timeouts {
        header_read: nonzero(http.header_read_timeout()),
        idle: nonzero(http.idle_timeout()),
    };

    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // EMFILE and ECONNABORTED are transient; pausing lets descriptors free up
                    // instead of spinning on the same error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let open = connections.opened();
        let connection = Connection {
            builder: builder.clone(),
            router: router.clone(),
            timeouts,
            stop: stop_rx.clone(),
            connections: connections.clone(),
            park_above: http.park_idle_above,
        };
        tokio::spawn(async move {
            connection.run(stream).await;
            drop((open, slot));
        });
    }

    drop(listener);
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    let _ = stop_tx.send(true);
    let drain = http.shutdown_timeout();
    let all_closed = slots.acquire_many(u32::try_from(max_connections).unwrap_or(u32::MAX));
    if tokio::time::timeout(drain, all_closed).await.is_err() {
        tracing::warn!(
            ?drain,
            "in-flight requests did not finish in time; exiting anyway"
        );
    }
    Ok(())
}

/// Listens on `address` (`host:port`, the first of its addresses that binds) with `backlog`
/// handshakes held for the accept loop.
///
/// `TcpListener::bind` listens with the standard library's backlog, 128: of 10 000 clients
/// connecting at once, thousands overflowed it and waited a second or more for their retry
/// (the benchmark's sweep counts them, `docs/performance.md`).
pub async fn listen(address: &str, backlog: u32) -> std::io::Result<TcpListener> {
    let mut failed = None;
    for addr in tokio::net::lookup_host(address).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As `TcpListener::bind` does: a restarted server binds its port again at once.
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(backlog)) {
            Ok(listener) => return Ok(listener),
            Err(e) => failed = Some(e),
        }
    }
    Err(failed.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{address} resolves to no address"),
        )
    }))
}

/// Zero in a setting means "off".
fn nonzero(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

struct Connection {
    builder: http1::Builder,
    router: Router,
    timeouts: Timeouts,
    stop: watch::Receiver<bool>,
    connections: Arc<Connections>,
    park_above: usize,
}

/// How serving a socket through one hyper connection ended.
enum Served {
    /// The connection is over; the socket is dropped.
    Over,
    /// The connection was parked: hyper handed back the socket and the bytes it had read early.
    Parked(TcpStream, Bytes),
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        // Responses are written whole; Nagle would only delay the last segment.
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let (mut stream, mut early) = (stream, Bytes::new());
        // Accepted into a crowd: no hyper connection until the client has sent something.
        let mut parked = self.connections.crowded(self.park_above);
        loop {
            if parked && early.is_empty() {
                let _parked = self.connections.parking();
                tokio::select! {
                    readable = stream.readable() => if readable.is_err() { return },
                    () = activity.parked_expired(self.timeouts) => {
                        tracing::debug!("closing a parked connection: idle timeout");
                        return;
                    }
                    _ = self.stop.wait_for(|stop| *stop) => return,
                }
            }
            let io = Watched::new(stream, early, activity.clone());
            // Boxed: while parked, the task keeps only this loop's own state, not room for a
            // hyper connection.
            (stream, early) = match Box::pin(self.serve_until_parked(io, &activity)).await {
                Served::Over => return,
                Served::Parked(stream, early) => (stream, early),
            };
            parked = true;
        }
    }

    /// Serves requests on `io` with a new hyper connection until the client or a timeout ends
    /// it, the server stops, or it parks.
    async fn serve_until_parked(&mut self, io: Watched, activity: &Arc<Activity>) -> Served {
        let service = {
            let activity = activity.clone();
            let router = self.router.clone();
            hyper::service::service_fn(move |request| {
                let busy = activity.begin();
                let router = router.clone();
                // Boxed: hyper keeps a slot the size of this future (592 bytes) for the
                // connection's whole life; a box is one pointer, allocated per request and freed
                // with the response.
                Box::pin(async move {
                    let response = router.oneshot(request).await;
                    drop(busy);
                    response
                })
            })
        };
        let mut connection = self.builder.serve_connection(TokioIo::new(io), service);
        let mut parking = false;
        loop {
            let event = tokio::select! {
                event = std::future::poll_fn(|cx| {
                    if parking {
                        return connection.poll_without_shutdown(cx).map(Event::Ended);
                    }
                    match Pin::new(&mut connection).poll(cx) {
                        Poll::Ready(result) => Poll::Ready(Event::Ended(result)),
                        // Decided right after hyper's poll, in the task's same turn: hyper's
                        // buffers are not kept while the task waits for its next one.
                        Poll::Pending
                            if self.connections.crowded(self.park_above) && activity.is_idle() =>
                        {
                            Poll::Ready(Event::Park)
                        }
                        Poll::Pending => Poll::Pending,
                    }
                }) => event,
                why = activity.expired(self.timeouts) => Event::Expired(why),
                _ = self.stop.wait_for(|stop| *stop) => Event::Stop,
            };
            match event {
                Event::Ended(Ok(())) if parking => {
                    let parts = connection.into_parts();
                    let (stream, unread) = parts.io.into_inner().into_parts();
                    return Served::Parked(stream, joined(parts.read_buf, unread));
                }
                Event::Ended(result) => {
                    log_end(result);
                    return Served::Over;
                }
                Event::Expired(why) => {
                    // No request is being handled: dropping the connection loses nothing.
                    tracing::debug!(why, "closing a connection");
                    return Served::Over;
                }
                Event::Stop => {
                    // Finishes the response being written, if any, then closes.
                    Pin::new(&mut connection).graceful_shutdown();
                    log_end(connection.await);
                    return Served::Over;
                }
                Event::Park => {
                    // hyper is idle: it closes at once, without shutting the socket down.
                    Pin::new(&mut connection).graceful_shutdown();
                    parking = true;
                }
            }
        }
    }
}

/// What ended a wait of [`Connection::serve_until_parked`].
enum Event {
    Ended(Result<(), hyper::Error>),
    Expired(&'static str),
    Stop,
    Park,
}

/// hyper's unread bytes, then those it never got to, in a buffer of their own: hyper's read
/// buffer comes back whole (8 KiB) even when empty, and keeping it would keep most of what
/// parking frees.
fn joined(read: Bytes, unread: Bytes) -> Bytes {
    if read.is_empty() && unread.is_empty() {
        Bytes::new()
    } else {
        [read, unread].concat().into()
    }
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        // Clients hanging up, sending garbage or timing out: their problem, logged for debugging.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use hyper::body::Bytes;

    use super::joined;

    /// What hyper hands back: its read buffer frozen, with `unread` bytes left in it.
    fn hyper_read_buffer(unread: &[u8]) -> Bytes {
        let mut buffer = BytesMut::with_capacity(8192);
        buffer.extend_from_slice(unread);
        buffer.freeze()
    }

    #[test]
    fn parking_keeps_none_of_hypers_read_buffer() {
        for unread in [&b""[..], b"GET / HTTP/1.1\r\nHo"] {
            let read = hyper_read_buffer(unread);
            let early = joined(read.clone(), Bytes::new());
            assert_eq!(early, unread);
            assert!(
                read.is_unique(),
                "the bytes kept ({}) hold hyper's 8 KiB buffer",
                early.len()
            );
        }
        assert_eq!(
            joined(Bytes::from_static(b"ab"), Bytes::from_static(b"cd")),
            "abcd"
        );
    }
}
