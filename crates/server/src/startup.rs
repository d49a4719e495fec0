//! Building the adapters and the service from the configuration, and waiting for PostgreSQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use userstack_cache_redis::RedisCache;
use userstack_core::UserService;
use userstack_storage_pg::{Error as PgError, PgUserRepository};

use crate::config::{Config, ConfigError};
use crate::metrics::{AdapterSample, BatchSample, PoolSample};
use crate::state::AppState;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("invalid REDIS_URL: {0}")]
    Redis(#[source] userstack_cache_redis::Error),
    #[error("PostgreSQL did not become reachable within {0:?}: {1}")]
    DatabaseTimeout(Duration, #[source] PgError),
    #[error(transparent)]
    Migration(PgError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Serve(#[source] std::io::Error),
}

/// Applies migrations, retrying with bounded exponential backoff while PostgreSQL is not
/// reachable yet (containers start in any order); other failures end at once.
pub async fn migrate_when_reachable(
    repo: &PgUserRepository,
    limit: Duration,
) -> Result<Vec<i32>, StartupError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        match repo.migrate().await {
            Ok(applied) => return Ok(applied),
            Err(e @ (PgError::Connect(_) | PgError::ConnectTimeout(_))) if !e.is_permanent() => {
                if started.elapsed() + delay > limit {
                    return Err(StartupError::DatabaseTimeout(limit, e));
                }
                tracing::warn!(error = %e, retry_in = ?delay, "PostgreSQL not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(StartupError::Migration(e)),
        }
    }
}

/// The real adapters, migrated, wired into the application state.
pub async fn build_state(config: &Config) -> Result<AppState, StartupError> {
    let pg_settings = config.database.settings()?;
    let pg_max = pg_settings.pool_size;
    let repo = PgUserRepository::new(pg_settings);
    let applied = migrate_when_reachable(&repo, config.database.startup_timeout()).await?;
    tracing::info!(?applied, "database schema is up to date");

    let redis_settings = config.cache.settings()?;
    let redis_max = redis_settings.pool_size;
    // Not awaited: Redis being down must not stop the service from starting.
    let cache = RedisCache::new(redis_settings).map_err(StartupError::Redis)?;

    let service = UserService::new(
        Arc::new(repo.clone()),
        Arc::new(cache.clone()),
        config.cache.service()?,
    );
    let adapters = Arc::new(move || {
        let pg = repo.pool_state();
        let (redis_connections, redis_idle) = cache.pool_state();
        let batches = repo.batch_counts();
        AdapterSample {
            pools: vec![
                PoolSample {
                    pool: "postgres",
                    connections: pg.connections,
                    idle: pg.idle_connections,
                    max: pg_max,
                },
                PoolSample {
                    pool: "redis",
                    connections: redis_connections,
                    idle: redis_idle,
                    max: redis_max,
                },
            ],
            batches: [
                ("create", batches.creates),
                ("user", batches.users),
                ("page", batches.pages),
            ]
            .map(|(kind, counts)| BatchSample {
                kind,
                batches: counts.batches,
                jobs: counts.jobs,
            })
            .into(),
        }
    });
    Ok(AppState::new(service, adapters))
}
