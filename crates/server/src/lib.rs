//! The userstack HTTP server: axum routes and tower-http layers over
//! [`userstack_core::UserService`], wired to PostgreSQL and Redis. The binary (`userstack`) is a
//! thin command line over this library.
//!
//! Tests and embedding programs build the same application over any adapters and own the
//! socket, in the manner of mini-redis's `run(listener, shutdown)`:
//!
//! ```
//! use std::sync::Arc;
//! use userstack_core::memory::{InMemoryCache, InMemoryUserRepository};
//! use userstack_core::{ServiceConfig, UserService};
//! use userstack_server::{AppState, HttpConfig, app, serve};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let service = UserService::new(
//!     Arc::new(InMemoryUserRepository::new()),
//!     Arc::new(InMemoryCache::new()),
//!     ServiceConfig::default(),
//! );
//! let http = HttpConfig::default();
//! let router = app(AppState::without_pools(service), &http);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! // Shut down at once: a real program passes a signal future instead.
//! serve(listener, router, async {}, &http, Default::default()).await
//! # }
//! ```

mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod drain;
mod error;
pub mod metrics;
pub mod openapi;
mod overload;
mod routes;
mod serve;
pub mod startup;
mod state;

pub use app::{admin_app, app, public_app, with_layers};
pub use auth::Auth;
pub use config::{Config, HttpConfig};
pub use drain::Draining;
pub use serve::{Connections, listen, serve};
pub use state::AppState;

/// Completes on SIGTERM (`docker stop`) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
