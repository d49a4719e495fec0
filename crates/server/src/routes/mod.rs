//! The routes: which path and method reach which handler, on which listener, behind which door,
//! and the OpenAPI document that describes them, built together so that they cannot disagree.
//!
//! Open to anyone: `/` and `/cache` (the original application's routes), `/healthz` and
//! `/openapi.json`. Behind the bearer token when one is configured: everything about users. The
//! operational routes (`/readyz`, `/metrics`) belong to the admin listener; served on the public
//! port instead (`ADMIN_PORT=0`), they are behind the token too.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth;
use crate::error;
use crate::openapi::{ApiDoc, DOCUMENT};
use crate::state::AppState;

mod demo;
mod health;
mod metrics;
mod users;

/// The routes anyone may call.
fn open() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(demo::hello))
        .routes(routes!(demo::cache))
        .routes(routes!(health::healthz))
        .routes(routes!(openapi_json))
}

/// The users' routes: behind the token.
fn users() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(users::list, users::create))
        .routes(routes!(
            users::get,
            users::replace,
            users::update,
            users::delete
        ))
}

/// The operational routes: on the admin listener.
fn operational() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::readyz))
        .routes(routes!(metrics::metrics))
}

/// The document: every route, each registered with its description; the guarded ones (users,
/// and the operational routes when they share the public listener) carry the bearer requirement
/// and their 401, added to exactly the routes that `protected` wraps.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    let (_, mut guarded) = users().merge(operational()).split_for_parts();
    crate::openapi::require_bearer(&mut guarded);
    let (_, mut document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(open())
        .split_for_parts();
    document.merge(guarded);
    document
}

/// The public listener's routes.
pub(crate) fn public(state: AppState) -> Router {
    let (open, _) = open().split_for_parts();
    let (users, _) = users().split_for_parts();
    open.merge(protected(users, &state))
        .fallback(error::not_found)
        .with_state(state)
}

/// The admin listener's routes: for the container network, never published.
pub(crate) fn admin(state: AppState) -> Router {
    let (operational, _) = operational()
        .routes(routes!(health::healthz))
        .split_for_parts();
    operational.fallback(error::not_found).with_state(state)
}

/// Every route on one listener (no admin listener).
pub(crate) fn all(state: AppState) -> Router {
    let (open, _) = open().split_for_parts();
    let (guarded, _) = users().merge(operational()).split_for_parts();
    open.merge(protected(guarded, &state))
        .fallback(error::not_found)
        .with_state(state)
}

/// `routes` answer 401 without an accepted token. A route layer: unknown paths stay 404.
fn protected(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    routes.route_layer(axum::middleware::from_fn_with_state(
        state.auth.clone(),
        auth::require_token,
    ))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)))]
async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}
