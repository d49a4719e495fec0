//! The routes: which path and method reach which handler, and the OpenAPI document that
//! describes them, built together so that they cannot disagree.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error;
use crate::openapi::{ApiDoc, DOCUMENT};
use crate::state::AppState;

mod demo;
mod health;
mod metrics;
mod users;

/// Every route, each registered with its description.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(demo::hello))
        .routes(routes!(demo::cache))
        .routes(routes!(users::list, users::create))
        .routes(routes!(
            users::get,
            users::replace,
            users::update,
            users::delete
        ))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(metrics::metrics))
        .routes(routes!(openapi_json))
}

pub(crate) fn router(state: AppState) -> Router {
    let (router, _) = api().split_for_parts();
    router.fallback(error::not_found).with_state(state)
}

pub(crate) fn document() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
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
