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
//!   wait in the kernel's listen backlog rather than cost a socket and a task each.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::config::HttpConfig;

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting and lets
/// in-flight requests finish for at most `http.shutdown_timeout()` before returning. Idle
/// connections are closed at once on shutdown; busy ones after their current response.
///
/// Any number of listeners can be served this way at once (each call has its own connection
/// cap); pass each the same shutdown signal.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    http: &HttpConfig,
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
        let connection = Connection {
            builder: builder.clone(),
            router: router.clone(),
            timeouts,
            stop: stop_rx.clone(),
        };
        tokio::spawn(async move {
            connection.run(stream).await;
            drop(slot);
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

/// Zero in a setting means "off".
fn nonzero(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

struct Connection {
    builder: http1::Builder,
    router: Router,
    timeouts: Timeouts,
    stop: watch::Receiver<bool>,
}

/// The two waits a connection may spend on its client, each `None` when off.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    /// From the first byte of a request head to its last.
    header_read: Option<Duration>,
    /// From the end of the last response (or the accept) to the first byte of the next request.
    idle: Option<Duration>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream) {
        // Responses are written whole; Nagle would only delay the last segment.
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
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
        let stream = Watched {
            inner: stream,
            activity: activity.clone(),
        };
        let connection = self.builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => return log_end(result),
            why = activity.expired(self.timeouts) => {
                // No request is being handled: dropping the connection loses nothing.
                tracing::debug!(why, "closing a connection");
                return;
            }
            _ = self.stop.wait_for(|stop| *stop) => {},
        }
        // Finishes the response being written, if any, then closes.
        connection.as_mut().graceful_shutdown();
        log_end(connection.await);
    }
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        // Clients hanging up, sending garbage or timing out: their problem, logged for debugging.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// What one connection is doing, as far as its timeouts care: requests in flight, when it last
/// became idle, and when the head of the next request started to arrive.
///
/// hyper's own header-read timeout is not used: it also runs while a keep-alive connection waits
/// for its next request, so an idle connection would be closed after the header timeout and an
/// idle timeout longer than it could not exist.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    times: Mutex<Times>,
    head_started: tokio::sync::Notify,
    /// Wakes `expired` while it waits for the requests in flight to end. Notified with
    /// `notify_waiters`, which stores no permit: a request answered without waiting on anything
    /// ends before anyone waits for it, and then wakes nobody.
    ended: tokio::sync::Notify,
}

#[derive(Debug, Clone, Copy)]
struct Times {
    idle_since: Instant,
    head_started: Option<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            times: Mutex::new(Times {
                idle_since: Instant::now(),
                head_started: None,
            }),
            head_started: tokio::sync::Notify::new(),
            ended: tokio::sync::Notify::new(),
        }
    }
}

struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut times = self.0.times.lock().expect("never poisoned");
        times.idle_since = Instant::now();
        times.head_started = None;
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify_waiters();
    }
}

impl Activity {
    /// A request head was read whole: the handler runs now.
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.times.lock().expect("never poisoned").head_started = None;
        Busy(self.clone())
    }

    /// Bytes came in. Between requests, they are the start of the next request's head.
    fn bytes_arrived(&self) {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return; // a body, or a pipelined request: the handler's timeout governs
        }
        let mut times = self.times.lock().expect("never poisoned");
        if times.head_started.is_none() {
            times.head_started = Some(Instant::now());
            self.head_started.notify_one();
        }
    }

    /// Completes, with the reason, when the connection has waited too long for its client:
    /// idle for `idle`, or `header_read` since a request head started without it being whole.
    async fn expired(&self, timeouts: Timeouts) -> &'static str {
        loop {
            let times = *self.times.lock().expect("never poisoned");
            let (deadline, why) = match times.head_started {
                Some(started) => (
                    timeouts.header_read.map(|t| started + t),
                    "header-read timeout",
                ),
                None => (timeouts.idle.map(|t| times.idle_since + t), "idle timeout"),
            };
            if self.in_flight.load(Ordering::Acquire) > 0 {
                // A request is being handled; its own timeout bounds it. The clock starts again
                // when it ends, and the next head gets its whole header-read timeout, no more.
                let ended = self.ended.notified();
                tokio::pin!(ended);
                ended.as_mut().enable();
                // Looked at again once the wait is registered: an end in between is not missed.
                if self.in_flight.load(Ordering::Acquire) > 0 {
                    ended.await;
                }
                continue;
            }
            match deadline {
                Some(deadline) if Instant::now() >= deadline => return why,
                Some(deadline) => tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = self.head_started.notified() => {}
                },
                None => self.head_started.notified().await,
            }
        }
    }
}

/// The client's socket, telling [`Activity`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
