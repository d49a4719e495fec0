//! The original application's two text routes, byte for byte.

use axum::extract::State;
use userstack_core::{CacheDemo, UserService};

use crate::error::ApiError;

pub(super) async fn hello() -> &'static str {
    "Hello, Docker Multi-Container!"
}

pub(super) async fn cache(State(service): State<UserService>) -> Result<String, ApiError> {
    Ok(match service.cache_demo().await? {
        CacheDemo::Miss => "Cache Miss: Key Set".to_owned(),
        CacheDemo::Hit(value) => format!("Cache Hit: {value}"),
    })
}
