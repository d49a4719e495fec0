//! `GET /openapi.json`: an OpenAPI 3.1 document of every route. The router and the document are
//! built from the same annotations (see `userstack_server::openapi`); this checks the document
//! from the outside: every documented operation is routed, and the shared parts are there.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use userstack_core::memory::{InMemoryCache, InMemoryUserRepository};
use userstack_core::{ServiceConfig, UserService};
use userstack_server::{AppState, HttpConfig, app};

fn router() -> axum::Router {
    let service = UserService::new(
        Arc::new(InMemoryUserRepository::new()),
        Arc::new(InMemoryCache::new()),
        ServiceConfig::default(),
    );
    app(AppState::without_pools(service), &HttpConfig::default())
}

async fn call(method: Method, uri: &str) -> (u16, Value, String) {
    let response = router()
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, json, content_type)
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_names_every_route() {
    let (status, doc, content_type) = call(Method::GET, "/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    let mut operations: Vec<String> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    operations.sort();
    assert_eq!(
        operations,
        [
            "DELETE /users/{id}",
            "GET /",
            "GET /cache",
            "GET /healthz",
            "GET /metrics",
            "GET /openapi.json",
            "GET /readyz",
            "GET /users",
            "GET /users/{id}",
            "PATCH /users/{id}",
            "POST /users",
            "PUT /users/{id}",
        ]
    );

    // The problem schema, and a 503 with Retry-After on every user-facing operation.
    let problem = &doc["components"]["schemas"]["Problem"];
    for field in ["type", "title", "status"] {
        assert!(
            problem["required"]
                .as_array()
                .unwrap()
                .contains(&Value::from(field)),
            "{problem}"
        );
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        if ["/healthz", "/readyz", "/metrics", "/openapi.json"].contains(&path.as_str()) {
            continue;
        }
        for (method, operation) in item.as_object().unwrap() {
            let unavailable = &operation["responses"]["503"];
            assert!(
                unavailable["headers"]["Retry-After"].is_object(),
                "{method} {path} documents 503 with Retry-After"
            );
            assert!(
                unavailable["content"]["application/problem+json"].is_object(),
                "{method} {path}: 503 is a problem"
            );
        }
    }
}

#[tokio::test]
async fn the_guarded_operations_require_the_bearer_token_and_document_their_401() {
    let (_, doc, _) = call(Method::GET, "/openapi.json").await;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for (path, item) in doc["paths"].as_object().unwrap() {
        let guarded = path.starts_with("/users") || path == "/readyz" || path == "/metrics";
        for (method, operation) in item.as_object().unwrap() {
            assert_eq!(
                operation["security"].is_array(),
                guarded,
                "{method} {path}: bearer requirement"
            );
            assert_eq!(
                operation["responses"]["401"]["headers"]["WWW-Authenticate"].is_object(),
                guarded,
                "{method} {path}: 401"
            );
        }
    }
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let (_, doc, _) = call(Method::GET, "/openapi.json").await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let uri = path.replace("{id}", "1");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, body, _) = call(method.clone(), &uri).await;
            assert!(
                !(status == 404 && body["detail"] == "no such route") && status != 405,
                "{method} {uri} is documented but not routed ({status})"
            );
        }
    }
}
