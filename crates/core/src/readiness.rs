//! Readiness: can the store and the cache be reached now?

use std::time::Duration;

use crate::cache_aside::CacheAside;
use crate::error::{Error, Result};
use crate::repository::UserRepository;

/// The outcome of the readiness probes.
#[derive(Debug)]
pub struct Readiness {
    pub store: Result<()>,
    pub cache: Result<()>,
}

/// Probes the store and the cache concurrently, each with its own bound.
pub(crate) async fn probe(
    repo: &dyn UserRepository,
    store_timeout: Duration,
    cache: &CacheAside,
) -> Readiness {
    let store = async {
        tokio::time::timeout(store_timeout, repo.ping())
            .await
            .unwrap_or_else(|_| Err(Error::store_unavailable("ping timed out")))
    };
    let (store, cache) = tokio::join!(store, cache.bounded(cache.port().ping()));
    Readiness { store, cache }
}
