//! What every handler can reach.

use std::sync::Arc;

use axum::extract::FromRef;
use userstack_core::UserService;

use crate::metrics::{Metrics, PoolProbe};

#[derive(Debug, Clone)]
pub struct AppState {
    pub service: UserService,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// State for `service`; `pools` reports connection pools to `/metrics`.
    pub fn new(service: UserService, pools: PoolProbe) -> Self {
        let metrics = Arc::new(Metrics::new(service.clone(), pools));
        Self { service, metrics }
    }

    /// State without pools to report, e.g. over the in-memory adapters.
    pub fn without_pools(service: UserService) -> Self {
        Self::new(service, Arc::new(Vec::new))
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
