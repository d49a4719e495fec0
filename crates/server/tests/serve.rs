//! `serve`: graceful shutdown drains in-flight requests, under a deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use userstack_core::memory::{InMemoryCache, InMemoryUserRepository};
use userstack_core::{ServiceConfig, UserService};
use userstack_server::{AppState, HttpConfig, serve, with_layers};

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_millis(800)).await;
    "done"
}

async fn very_slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(60)).await;
    "never"
}

/// Serves a slow route; returns its address, the shutdown trigger and the server task.
async fn start(
    drain: Duration,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let service = UserService::new(
        Arc::new(InMemoryUserRepository::new()),
        Arc::new(InMemoryCache::new()),
        ServiceConfig::default(),
    );
    let routes = Router::new()
        .route("/slow", get(slow))
        .route("/very-slow", get(very_slow));
    let http = HttpConfig {
        request_timeout_secs: 120,
        ..HttpConfig::default()
    };
    let router = with_layers(routes, &AppState::without_pools(service), &http);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (trigger, shutdown) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        router,
        async move {
            let _ = shutdown.await;
        },
        drain,
    ));
    (address, trigger, server)
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_refuses_new_ones() {
    let (address, trigger, server) = start(Duration::from_secs(10)).await;
    let in_flight = tokio::spawn(reqwest::get(format!("{address}/slow")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    trigger.send(()).unwrap();

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.text().await.unwrap(), "done");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns once drained")
        .unwrap()
        .unwrap();
    assert!(
        reqwest::get(format!("{address}/slow")).await.is_err(),
        "no new connections after shutdown"
    );
}

#[tokio::test]
async fn a_request_outliving_the_drain_deadline_does_not_hold_the_process() {
    let drain = Duration::from_millis(500);
    let (address, trigger, server) = start(drain).await;
    let _stuck = tokio::spawn(reqwest::get(format!("{address}/very-slow")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    trigger.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returns after the drain deadline")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() >= drain,
        "it did wait for the drain deadline"
    );
}
