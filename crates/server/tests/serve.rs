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
        shutdown_timeout_secs: drain.as_secs(),
        ..HttpConfig::default()
    };
    let router = with_layers(routes, &AppState::without_pools(service), &http);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (trigger, shutdown) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        serve(
            listener,
            router,
            async move {
                let _ = shutdown.await;
            },
            &http,
            Default::default(),
        )
        .await
    });
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
    let drain = Duration::from_secs(1);
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

/// Behind a load balancer: a stop first fails readiness while new connections are still served,
/// and only after the delay does the listener close.
#[tokio::test]
async fn a_stop_fails_readiness_first_and_keeps_serving_for_the_delay() {
    let service = UserService::new(
        Arc::new(InMemoryUserRepository::new()),
        Arc::new(InMemoryCache::new()),
        ServiceConfig::default(),
    );
    let state = AppState::without_pools(service);
    let delay = Duration::from_millis(1500);
    let router = userstack_server::app(state.clone(), &HttpConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (trigger, signal) = tokio::sync::oneshot::channel::<()>();
    let draining = state.draining.clone();
    let server = tokio::spawn(async move {
        let http = HttpConfig {
            shutdown_timeout_secs: 5,
            ..HttpConfig::default()
        };
        let shutdown = userstack_server::drain::after_readiness_fails(
            async move {
                let _ = signal.await;
            },
            draining,
            delay,
        );
        serve(listener, router, shutdown, &http, Default::default()).await
    });
    // A fresh connection per request: what a load balancer opening new ones would see.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let get = |path: &str| client.get(format!("{address}{path}")).send();
    assert_eq!(get("/readyz").await.unwrap().status(), 200);

    let stopped = Instant::now();
    trigger.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let readyz = get("/readyz")
        .await
        .expect("still accepting after the stop");
    assert_eq!(
        readyz.status(),
        503,
        "readiness fails as soon as the stop comes"
    );
    assert!(readyz.text().await.unwrap().contains("draining"));
    let hello = get("/")
        .await
        .expect("new connections are served during the delay");
    assert_eq!(hello.status(), 200);
    assert!(stopped.elapsed() < delay, "the checks ran inside the delay");

    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returns after the delay")
        .unwrap()
        .unwrap();
    assert!(
        stopped.elapsed() >= delay,
        "the listener stayed open for the delay"
    );
    assert!(
        get("/").await.is_err(),
        "no new connections after the delay"
    );
}
