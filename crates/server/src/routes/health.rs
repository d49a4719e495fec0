//! Liveness and readiness.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use userstack_core::UserService;

use crate::drain::Draining;

/// Liveness or readiness, and for readiness each dependency's state.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // describes the JSON the handlers build
pub(super) struct Health {
    /// `ok` (liveness); `ready`, `degraded`, `unavailable` or `draining` (readiness).
    status: String,
    /// `database`: `ok` or `unavailable`; `cache`: `ok` or `degraded`.
    #[schema(value_type = Option<Object>)]
    checks: Option<serde_json::Value>,
}

/// The process is up and serving HTTP; says nothing of its dependencies (a liveness probe that
/// failed with the database would get healthy replicas restarted for nothing).
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process serves HTTP", body = Health)))]
pub(super) async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// Ready to serve users: PostgreSQL answers and no stop was requested. Redis down only degrades
/// (reads fall back to the database), so it is reported but does not fail readiness.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "`ready`, or `degraded` while Redis is down", body = Health),
        (status = 503, description = "`unavailable` (PostgreSQL does not answer) or `draining` (stopping)", body = Health,
            headers(("Retry-After" = String, description = "Seconds to wait before asking again"))),
    ))]
pub(super) async fn readyz(
    State(service): State<UserService>,
    State(draining): State<Draining>,
) -> Response {
    if draining.is_draining() {
        return unavailable(json!({ "status": "draining" }));
    }
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
    if code == StatusCode::SERVICE_UNAVAILABLE {
        return unavailable(body);
    }
    (code, axum::Json(body)).into_response()
}

fn unavailable(body: serde_json::Value) -> Response {
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    response
}
