//! The accept loop: hyper's HTTP/1 connection builder with a timer, so that slow or idle clients
//! cannot hold connections forever, and a cap on how many connections are open at once.
//!
//! `axum::serve` builds hyper without a timer, which leaves hyper's header-read timeout off and
//! lets an idle keep-alive connection live forever; a few hundred slowloris clients would then
//! hold as many sockets for as long as they like. Here each connection gets:
//! - a header-read timeout (`HEADER_READ_TIMEOUT_SECS`): a request head must arrive in full
//!   within it, or the connection is closed;
//! - an idle timeout (`IDLE_TIMEOUT_SECS`): a keep-alive connection with no request in flight
//!   for that long is closed;
//! - a slot among `MAX_CONNECTIONS`: past the cap the loop stops accepting, so further clients
//!   wait in the kernel's listen backlog rather than cost a socket and a task each.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
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
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(nonzero(http.header_read_timeout()))
        .keep_alive(true);
    let idle = nonzero(http.idle_timeout());

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
            idle,
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
    idle: Option<Duration>,
    stop: watch::Receiver<bool>,
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
                async move {
                    let response = router.oneshot(request).await;
                    drop(busy);
                    response
                }
            })
        };
        let connection = self.builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let idle = activity.idle_for(self.idle);
        tokio::select! {
            result = connection.as_mut() => return log_end(result),
            () = idle => tracing::debug!("closing an idle connection"),
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

/// Requests in flight on one connection, and when the last one ended.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    last_end: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last_end: Mutex::new(Instant::now()),
        }
    }
}

struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last_end.lock().expect("never poisoned") = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Completes once the connection has had no request in flight for `limit` (never if `None`).
    async fn idle_for(&self, limit: Option<Duration>) {
        let Some(limit) = limit else {
            return std::future::pending().await;
        };
        loop {
            let deadline = *self.last_end.lock().expect("never poisoned") + limit;
            if self.in_flight.load(Ordering::Acquire) > 0 {
                // A request is being handled; its own timeout bounds it. Look again later.
                tokio::time::sleep(limit).await;
            } else if Instant::now() >= deadline {
                return;
            } else {
                tokio::time::sleep_until(deadline).await;
            }
        }
    }
}
