//! Leaving a load balancer's rotation before the listener closes.
//!
//! Behind a load balancer that health-checks `/readyz` (HAProxy in `deploy/swarm`), closing the
//! listener on SIGTERM is too early: the balancer still sends new connections to this task until
//! its next failed check, and those are refused. So a stop first flips readiness to 503, keeps
//! serving for `SHUTDOWN_DELAY_SECS` (longer than the balancer needs to notice), and only then
//! stops accepting and drains what is in flight.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set once a stop was requested; `/readyz` answers 503 `draining` from then on.
#[derive(Debug, Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn begin(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Completes `delay` after `signal` did, having marked `draining` at once: pass it as the
/// shutdown future of [`crate::serve`], so the listener stays open while readiness is failing.
pub async fn after_readiness_fails(
    signal: impl Future<Output = ()>,
    draining: Draining,
    delay: Duration,
) {
    signal.await;
    draining.begin();
    if !delay.is_zero() {
        tracing::info!(
            ?delay,
            "stop requested: readiness is 503, still serving until load balancers have noticed"
        );
        tokio::time::sleep(delay).await;
    }
}
