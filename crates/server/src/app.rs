//! The HTTP application: routes plus one stack of tower / tower-http layers.

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode, header};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::HttpConfig;
use crate::error;
use crate::metrics;
use crate::overload::ShedLayer;
use crate::routes;
use crate::state::AppState;

/// The whole application over `state` on one listener: the public routes and the operational
/// ones (`/readyz`, `/metrics`), the latter behind the token like the users' routes.
pub fn app(state: AppState, http: &HttpConfig) -> Router {
    let layers_state = state.clone();
    with_layers(routes::all(state), &layers_state, http)
}

/// The public listener when an admin listener serves the operational routes: `/`, `/cache`,
/// `/healthz` and the users' routes.
pub fn public_app(state: AppState, http: &HttpConfig) -> Router {
    let layers_state = state.clone();
    with_layers(routes::public(state), &layers_state, http)
}

/// The admin listener: `/healthz`, `/readyz`, `/metrics`, no token (it is reachable only from
/// the container network). Its requests are counted in the same metrics.
pub fn admin_app(state: AppState, http: &HttpConfig) -> Router {
    let layers_state = state.clone();
    with_layers(routes::admin(state), &layers_state, http)
}

/// Wraps `router` in the middleware stack. Public so tests can wrap routes of their own (a
/// handler that panics, one that outlasts the timeout) in exactly the production stack.
///
/// From the outside in: request id (set, then echoed on the response), tracing, problem bodies
/// for bare errors, compression, body limit, metrics, load shedding, timeout, panic catching.
/// Metrics sit inside the problem layer but outside the shedding, the timeout and the panic
/// catcher, so shed, timed-out and panicking requests are counted with the status the client got.
pub fn with_layers(router: Router, state: &AppState, http: &HttpConfig) -> Router {
    let stack = ServiceBuilder::new()
        // Marked sensitive before anything could log or record it.
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", method = %request.method(), uri = %request.uri(), request_id = %id)
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .map_response(error::problem_for_bare_errors)
        // Only bodies worth it: a 30-byte greeting costs more to compress than to send.
        .layer(CompressionLayer::new().compress_when(DefaultPredicate::new().and(SizeAbove::new(1024))))
        .layer(RequestBodyLimitLayer::new(http.body_limit_bytes))
        // The limit above is the one in force; axum's own default would be a second, different one.
        .layer(DefaultBodyLimit::disable())
        .layer(metrics::TrackLayer(state.metrics.clone()))
        .layer(ShedLayer::new(http.max_in_flight))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            http.request_timeout().max(Duration::from_millis(1)),
        ))
        .layer(CatchPanicLayer::custom(error::panic_response));
    // One `layer` call: axum boxes each route's service once per call and, on each request,
    // clones every box below the one it calls; a second call would cost every request a few
    // more allocations.
    router.layer(stack)
}
