//! Load shedding: at most `MAX_IN_FLIGHT` requests are handled at once; past it a request is
//! answered `503` with `Retry-After` at once. A queue in front of a saturated server only turns
//! every request into a slow one (and, past the request timeout, into a failed one); a fast
//! refusal lets clients and load balancers go elsewhere or come back.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Probes must answer however loaded the server is: a liveness probe shed under load would get
/// a busy replica restarted, and metrics are how an operator sees the overload.
const EXEMPT: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The in-flight request budget shared by every connection of one listener.
#[derive(Debug, Clone)]
pub(crate) struct InFlight(Arc<Semaphore>);

impl InFlight {
    pub(crate) fn new(limit: usize) -> Self {
        Self(Arc::new(Semaphore::new(limit.max(1))))
    }
}

pub(crate) async fn shed(State(limit): State<InFlight>, request: Request, next: Next) -> Response {
    if EXEMPT.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    match limit.0.try_acquire() {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::overloaded().into_response(),
    }
}
