//! What one connection is doing, as far as its timeouts and its parking care, and the socket
//! wrapper that tells it when bytes arrive.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The two waits a connection may spend on its client, each `None` when off.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// From the first byte of a request head to its last.
    pub(super) header_read: Option<Duration>,
    /// From the end of the last response (or the accept) to the first byte of the next request.
    pub(super) idle: Option<Duration>,
}

/// Requests in flight, when the connection last became idle and when the head of the next
/// request started to arrive.
///
/// hyper's own header-read timeout is not used: it also runs while a keep-alive connection waits
/// for its next request, so an idle connection would be closed after the header timeout and an
/// idle timeout longer than it could not exist.
///
/// Nothing here wakes the connection's task when a request starts or ends: each wake-up costs the
/// task a poll of its whole connection, two per request, about a tenth of a cached page's
/// instructions. [`Activity::expired`] looks at the times again on a timer instead.
#[derive(Debug)]
pub(super) struct Activity {
    /// Requests whose handler runs (until the response head is handed to hyper).
    in_flight: AtomicUsize,
    times: Mutex<Times>,
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
        }
    }
}

/// A request whose handler runs; dropped when the handler has answered.
pub(super) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut times = self.0.times.lock().expect("never poisoned");
        times.idle_since = Instant::now();
        times.head_started = None;
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    /// A request head was read whole: the handler runs now.
    pub(super) fn begin(self: &Arc<Self>) -> Busy {
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
        }
    }

    /// No request being read or handled. Told to close now, hyper loses nothing: a handler
    /// done, its response head is in hyper's buffer already (hyper writes it in the poll that
    /// gets it), so it goes out without `connection: close`, and hyper only closes at once when
    /// idle, which it turns once a response is flushed.
    pub(super) fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self
                .times
                .lock()
                .expect("never poisoned")
                .head_started
                .is_none()
    }

    /// Completes, with the reason, when the connection has waited too long for its client:
    /// idle for `idle`, or `header_read` since a request head started without it being whole.
    ///
    /// It sleeps until the deadline it sees, but never longer than the shorter timeout: whatever
    /// starts or ends meanwhile (a head, a request) makes a deadline at least that far from now,
    /// so looking again then is never late. A request being handled has no deadline here; its
    /// own timeout bounds it, and the next head gets its whole header-read timeout, no more.
    pub(super) async fn expired(&self, timeouts: Timeouts) -> &'static str {
        let Some(look_again) = [timeouts.header_read, timeouts.idle]
            .into_iter()
            .flatten()
            .min()
        else {
            return std::future::pending().await;
        };
        loop {
            let now = Instant::now();
            let (deadline, why) = if self.in_flight.load(Ordering::Acquire) > 0 {
                (None, "")
            } else {
                let times = *self.times.lock().expect("never poisoned");
                match times.head_started {
                    Some(started) => (
                        timeouts.header_read.map(|t| started + t),
                        "header-read timeout",
                    ),
                    None => (timeouts.idle.map(|t| times.idle_since + t), "idle timeout"),
                }
            };
            match deadline {
                Some(deadline) if now >= deadline => return why,
                Some(deadline) => tokio::time::sleep_until(deadline.min(now + look_again)).await,
                None => tokio::time::sleep_until(now + look_again).await,
            }
        }
    }

    /// Completes when a parked connection has been idle for `idle`. Parked, nothing is read
    /// and nothing is handled, so its deadline cannot move: one sleep to it, with none of
    /// [`Activity::expired`]'s looking again (at ten thousand parked connections, a few
    /// milliseconds of CPU every second for nothing).
    pub(super) async fn parked_expired(&self, timeouts: Timeouts) {
        let Some(idle) = timeouts.idle else {
            return std::future::pending().await;
        };
        let idle_since = self.times.lock().expect("never poisoned").idle_since;
        tokio::time::sleep_until(idle_since + idle).await;
    }
}

/// The client's socket, telling [`Activity`] when bytes arrive; bytes read before the
/// connection was parked are read again first.
pub(super) struct Watched {
    inner: TcpStream,
    early: Bytes,
    activity: Arc<Activity>,
}

impl Watched {
    pub(super) fn new(inner: TcpStream, early: Bytes, activity: Arc<Activity>) -> Self {
        if !early.is_empty() {
            // A head has started: its first bytes are in hand. The header-read timeout runs,
            // and the connection does not park again before that request.
            activity.bytes_arrived();
        }
        Self {
            inner,
            early,
            activity,
        }
    }

    /// The socket, and the bytes of `early` not read yet.
    pub(super) fn into_parts(self) -> (TcpStream, Bytes) {
        (self.inner, self.early)
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.early.is_empty() {
            let n = self.early.len().min(buf.remaining());
            buf.put_slice(&self.early.split_to(n));
            self.activity.bytes_arrived();
            return Poll::Ready(Ok(()));
        }
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
