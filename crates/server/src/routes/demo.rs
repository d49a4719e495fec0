//! The original application's two text routes, byte for byte.

use axum::extract::State;
use userstack_core::{CacheDemo, UserService};

use crate::error::{ApiError, Problem};

#[utoipa::path(get, path = "/", tag = "demo",
    responses(
        (status = 200, description = "The greeting", body = String, content_type = "text/plain",
            example = "Hello, Docker Multi-Container!"),
        (status = 503, description = "The request outlived REQUEST_TIMEOUT_SECS or the server is at MAX_IN_FLIGHT", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
    ))]
pub(super) async fn hello() -> &'static str {
    "Hello, Docker Multi-Container!"
}

#[utoipa::path(get, path = "/cache", tag = "demo",
    responses(
        (status = 200, description = "`Cache Miss: Key Set` the first time, then `Cache Hit: Hello from Redis Cache!`", body = String, content_type = "text/plain"),
        (status = 503, description = "Redis is unavailable, the request outlived REQUEST_TIMEOUT_SECS, or the server is at MAX_IN_FLIGHT", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
    ))]
pub(super) async fn cache(State(service): State<UserService>) -> Result<String, ApiError> {
    Ok(match service.cache_demo().await? {
        CacheDemo::Miss => "Cache Miss: Key Set".to_owned(),
        CacheDemo::Hit(value) => format!("Cache Hit: {value}"),
    })
}
