//! The original application's `/cache` demo: read a key, set it when absent.
//!
//! Unlike user reads this *does* fail when the cache is down: the cache is what it demonstrates.

use std::time::Duration;

use crate::cache_aside::CacheAside;
use crate::error::Result;

/// The key and value of the demo, as the original application had them.
pub const DEMO_KEY: &str = "demo:my_key";
pub const DEMO_VALUE: &str = "Hello from Redis Cache!";
/// An hour, not forever: the demo key must not pin memory on a shared Redis.
const DEMO_TTL: Duration = Duration::from_secs(3600);

/// What `/cache` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheDemo {
    /// The key was absent and has now been set.
    Miss,
    /// The key held this value.
    Hit(String),
}

pub(crate) async fn run(cache: &CacheAside) -> Result<CacheDemo> {
    let mut found = cache.bounded(cache.port().get_many(&[DEMO_KEY])).await?;
    match found.pop().flatten() {
        Some(value) => Ok(CacheDemo::Hit(String::from_utf8_lossy(&value).into_owned())),
        None => {
            cache
                .bounded(cache.port().set(DEMO_KEY, DEMO_VALUE.as_bytes(), DEMO_TTL))
                .await?;
            Ok(CacheDemo::Miss)
        }
    }
}
