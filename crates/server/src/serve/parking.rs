//! Parking idle connections: while more than `PARK_IDLE_ABOVE` connections are open, a
//! connection that turns idle hands its socket back from hyper, and hyper's buffers (about 10 KB
//! per connection, which hyper keeps for a connection's whole life) are freed until the client
//! sends again; then a new hyper connection is built. The decision is taken right after each
//! poll of hyper (`Connection::serve_until_parked`): below that count, one atomic read. A
//! connection that turned idle before the count rose stays as it is until its next request or
//! its idle timeout: at most `PARK_IDLE_ABOVE` connections hold hyper's buffers while idle, and
//! none for longer than `IDLE_TIMEOUT_SECS`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The client connections of one [`serve`](super::serve) call: how many are open and how many
/// of them are parked (shown by `/metrics`).
#[derive(Debug, Default)]
pub struct Connections {
    open: AtomicUsize,
    parked: AtomicUsize,
}

impl Connections {
    /// Client connections open now, parked or not.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Open connections that are parked now: idle, holding a socket and no hyper buffers.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }

    /// Counts a new connection until the guard is dropped.
    pub(super) fn opened(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::Relaxed);
        Open(self.clone())
    }

    /// Whether more than `park_above` connections are open.
    pub(super) fn crowded(&self, park_above: usize) -> bool {
        self.open() > park_above
    }

    /// Counts a parked connection until the guard is dropped.
    pub(super) fn parking(&self) -> Parked<'_> {
        self.parked.fetch_add(1, Ordering::Relaxed);
        Parked(self)
    }
}

/// An open connection, counted until dropped.
pub(super) struct Open(Arc<Connections>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A parked connection, counted until dropped.
pub(super) struct Parked<'a>(&'a Connections);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.parked.fetch_sub(1, Ordering::Relaxed);
    }
}
