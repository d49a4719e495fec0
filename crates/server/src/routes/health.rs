//! Liveness and readiness.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use userstack_core::UserService;

/// The process is up and serving HTTP; says nothing of its dependencies (a liveness probe that
/// failed with the database would get healthy replicas restarted for nothing).
pub(super) async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// Ready to serve users: PostgreSQL answers. Redis down only degrades (reads fall back to the
/// database), so it is reported but does not fail readiness.
pub(super) async fn readyz(State(service): State<UserService>) -> Response {
    let readiness = service.readiness().await;
    let database = if readiness.store.is_ok() {
        "ok"
    } else {
        "unavailable"
    };
    let cache = if readiness.cache.is_ok() {
        "ok"
    } else {
        "degraded"
    };
    let (status, code) = match (&readiness.store, &readiness.cache) {
        (Ok(()), Ok(())) => ("ready", StatusCode::OK),
        (Ok(()), Err(_)) => ("degraded", StatusCode::OK),
        (Err(_), _) => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
    };
    let body = json!({ "status": status, "checks": { "database": database, "cache": cache } });
    let mut response = (code, axum::Json(body)).into_response();
    if code == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    }
    response
}
