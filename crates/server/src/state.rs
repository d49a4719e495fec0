//! What every handler can reach.

use std::sync::Arc;

use axum::extract::FromRef;
use userstack_core::UserService;

use crate::auth::Auth;
use crate::drain::Draining;
use crate::metrics::{AdapterProbe, AdapterSample, Metrics};
use crate::serve::Connections;

#[derive(Debug, Clone)]
pub struct AppState {
    pub service: UserService,
    pub metrics: Arc<Metrics>,
    /// Set when a stop was requested (readiness answers 503 from then on).
    pub draining: Draining,
    /// The bearer tokens the protected routes require (none: open).
    pub auth: Auth,
    /// The public listener's connections; `serve` counts them, `/metrics` shows them.
    pub connections: Arc<Connections>,
}

impl AppState {
    /// State for `service`; `adapters` reports connection pools and batches to `/metrics`.
    pub fn new(service: UserService, adapters: AdapterProbe) -> Self {
        let connections = Arc::new(Connections::default());
        let metrics = Arc::new(Metrics::new(service.clone(), adapters, connections.clone()));
        Self {
            service,
            metrics,
            connections,
            draining: Draining::default(),
            auth: Auth::open(),
        }
    }

    /// The same state with the protected routes behind `auth`.
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// State without pools or batches to report, e.g. over the in-memory adapters.
    pub fn without_pools(service: UserService) -> Self {
        Self::new(service, Arc::new(AdapterSample::default))
    }
}

impl FromRef<AppState> for UserService {
    fn from_ref(state: &AppState) -> Self {
        state.service.clone()
    }
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

impl FromRef<AppState> for Draining {
    fn from_ref(state: &AppState) -> Self {
        state.draining.clone()
    }
}

impl FromRef<AppState> for Auth {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}
