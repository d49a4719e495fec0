//! Redis adapter of userstack: [`RedisCache`] implements [`userstack_core::Cache`] on a bb8-redis
//! pool of multiplexed connections.
//!
//! - Every key gets a prefix ([`RedisSettings::key_prefix`]), so applications can share a server.
//! - Values expire (`SET … PX`); counters (`INCR`) do not.
//! - A connection that failed at the connection level is dropped from the pool, so the cache
//!   comes back by itself after Redis restarts.
//!
//! ```no_run
//! use std::time::Duration;
//! use userstack_cache_redis::{RedisCache, RedisSettings};
//! use userstack_core::Cache;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = RedisCache::new(RedisSettings {
//!     url: "redis://localhost:6379".into(),
//!     ..RedisSettings::default()
//! })?;
//! cache.set("greeting", b"hello", Duration::from_secs(60)).await?;
//! assert_eq!(cache.get_many(&["greeting"]).await?, vec![Some(b"hello".to_vec())]);
//! # Ok(())
//! # }
//! ```

mod cache;
mod error;
mod pool;
#[cfg(feature = "testing")]
pub mod testing;

pub use cache::{RedisCache, RedisSettings};
pub use error::Error;
