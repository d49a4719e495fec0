//! The routes: which path and method reach which handler.

use axum::Router;
use axum::routing::get;

use crate::error;
use crate::state::AppState;

mod demo;
mod health;
mod metrics;
mod users;

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(demo::hello))
        .route("/cache", get(demo::cache))
        .route("/users", get(users::list).post(users::create))
        .route(
            "/users/{id}",
            get(users::get)
                .put(users::replace)
                .patch(users::update)
                .delete(users::delete),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .fallback(error::not_found)
        .with_state(state)
}
