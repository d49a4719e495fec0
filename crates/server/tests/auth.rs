//! The API's door, over the in-memory adapters: which routes need a bearer token, what a
//! refusal looks like, that a refused write changes nothing, and which listener serves what.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use userstack_core::memory::{InMemoryCache, InMemoryUserRepository};
use userstack_core::{NewUser, ServiceConfig, UserService};
use userstack_server::{AppState, Auth, HttpConfig, admin_app, app, public_app};

const OLD: &str = "old-token-0123456789abcdef";
const NEW: &str = "new-token-0123456789abcdef";

fn state() -> AppState {
    let service = UserService::new(
        Arc::new(InMemoryUserRepository::new()),
        Arc::new(InMemoryCache::new()),
        ServiceConfig::default(),
    );
    AppState::without_pools(service).with_auth(Auth::from_tokens(&[OLD, NEW]).unwrap())
}

async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, Vec<(String, String)>, String) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = if uri.starts_with("/users") {
        request = request.header(header::CONTENT_TYPE, "application/json");
        Body::from(r#"{"name":"Mallory","email":"mallory@example.com"}"#)
    } else {
        Body::empty()
    };
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn every_user_route_refuses_a_missing_or_wrong_token_with_a_401_problem_and_changes_nothing()
{
    let state = state();
    let existing = state
        .service
        .create_user(NewUser::parse("Ada", "ada@example.com").unwrap())
        .await
        .unwrap();
    let router = public_app(state.clone(), &HttpConfig::default());
    let one = format!("/users/{}", existing.id);
    let routes = [
        (Method::GET, "/users"),
        (Method::POST, "/users"),
        (Method::GET, one.as_str()),
        (Method::PUT, one.as_str()),
        (Method::PATCH, one.as_str()),
        (Method::DELETE, one.as_str()),
    ];
    for (method, uri) in &routes {
        let (status, headers, body) = call(&router, method.clone(), uri, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(
            header(&headers, "www-authenticate"),
            Some(r#"Bearer realm="userstack""#)
        );
        assert_eq!(
            header(&headers, "content-type"),
            Some("application/problem+json")
        );
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["status"], 401);
        assert_eq!(problem["type"], "urn:userstack:problem:unauthorized");

        let (status, headers, _) = call(
            &router,
            method.clone(),
            uri,
            Some("not-a-token-of-ours-123"),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {uri} wrong token"
        );
        assert_eq!(
            header(&headers, "www-authenticate"),
            Some(r#"Bearer realm="userstack", error="invalid_token""#)
        );
    }
    // Nothing was created, replaced or deleted by the refused requests.
    let page = state
        .service
        .list_users(userstack_core::PageRequest::new(None, None).unwrap())
        .await
        .unwrap();
    assert_eq!(page.users, vec![existing]);
}

#[tokio::test]
async fn both_tokens_of_a_rotation_are_accepted() {
    let router = public_app(state(), &HttpConfig::default());
    for token in [OLD, NEW] {
        let (status, _, _) = call(&router, Method::GET, "/users", Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{token}");
    }
    let (status, headers, _) = call(&router, Method::POST, "/users", Some(NEW)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(header(&headers, "location").is_some());
}

#[tokio::test]
async fn the_original_routes_and_healthz_stay_open_and_unknown_routes_stay_404() {
    let router = public_app(state(), &HttpConfig::default());
    let (status, _, body) = call(&router, Method::GET, "/", None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "Hello, Docker Multi-Container!")
    );
    let (status, _, body) = call(&router, Method::GET, "/cache", None).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "Cache Miss: Key Set")
    );
    let (status, _, _) = call(&router, Method::GET, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&router, Method::GET, "/nowhere", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn operational_routes_live_on_the_admin_listener_or_behind_the_token() {
    let state = state();
    let public = public_app(state.clone(), &HttpConfig::default());
    let admin = admin_app(state.clone(), &HttpConfig::default());
    let single = app(state, &HttpConfig::default());
    for path in ["/readyz", "/metrics"] {
        let (status, _, _) = call(&public, Method::GET, path, Some(NEW)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "public {path}");
        let (status, _, _) = call(&admin, Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "admin {path}");
        // One listener for everything (ADMIN_PORT=0): behind the token.
        let (status, _, _) = call(&single, Method::GET, path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "single {path}");
        let (status, _, _) = call(&single, Method::GET, path, Some(OLD)).await;
        assert_eq!(status, StatusCode::OK, "single {path} with a token");
    }
    let (status, _, _) = call(&admin, Method::GET, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&admin, Method::GET, "/users", Some(NEW)).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no user routes on the admin listener"
    );
}

#[tokio::test]
async fn without_tokens_the_api_is_open_as_the_original_was() {
    let service = UserService::new(
        Arc::new(InMemoryUserRepository::new()),
        Arc::new(InMemoryCache::new()),
        ServiceConfig::default(),
    );
    let router = public_app(AppState::without_pools(service), &HttpConfig::default());
    let (status, _, _) = call(&router, Method::GET, "/users", None).await;
    assert_eq!(status, StatusCode::OK);
}
