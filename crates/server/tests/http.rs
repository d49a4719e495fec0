//! The HTTP contract of every route, over the in-memory adapters (fast, no servers); the same
//! routes run against PostgreSQL and Redis in `e2e.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use userstack_core::memory::{InMemoryCache, InMemoryUserRepository};
use userstack_core::{ServiceConfig, UserService};
use userstack_server::{AppState, HttpConfig, app, with_layers};

struct Fixture {
    repo: Arc<InMemoryUserRepository>,
    cache: Arc<InMemoryCache>,
    state: AppState,
}

impl Fixture {
    fn new() -> Self {
        let repo = Arc::new(InMemoryUserRepository::new());
        let cache = Arc::new(InMemoryCache::new());
        let config = ServiceConfig {
            cache_backoff: Duration::ZERO,
            ..ServiceConfig::default()
        };
        let service = UserService::new(repo.clone(), cache.clone(), config);
        Self {
            repo,
            cache,
            state: AppState::without_pools(service),
        }
    }

    fn app(&self) -> Router {
        app(self.state.clone(), &HttpConfig::default())
    }

    async fn send(&self, request: Request<Body>) -> Response {
        self.app().oneshot(request).await.unwrap()
    }

    async fn get(&self, uri: &str) -> Response {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn json(&self, method: Method, uri: &str, body: Value) -> Response {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(request).await
    }

    async fn create(&self, name: &str, email: &str) -> Value {
        let response = self
            .json(
                Method::POST,
                "/users",
                json!({ "name": name, "email": email }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        body_json(response).await
    }
}

async fn body_bytes(response: Response) -> Vec<u8> {
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec()
}

async fn body_json(response: Response) -> Value {
    serde_json::from_slice(&body_bytes(response).await).unwrap()
}

/// Asserts an RFC 9457 problem with `status`, and returns its body.
async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let body = body_json(response).await;
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"].is_string() && body["title"].is_string(),
        "{body}"
    );
    body
}

#[tokio::test]
async fn root_answers_the_original_greeting_byte_for_byte() {
    let f = Fixture::new();
    let response = f.get("/").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        body_bytes(response).await,
        b"Hello, Docker Multi-Container!"
    );
}

#[tokio::test]
async fn cache_demo_misses_then_hits_and_is_503_without_a_cache() {
    let f = Fixture::new();
    assert_eq!(
        body_bytes(f.get("/cache").await).await,
        b"Cache Miss: Key Set"
    );
    assert_eq!(
        body_bytes(f.get("/cache").await).await,
        b"Cache Hit: Hello from Redis Cache!"
    );
    f.cache.set_failing(true);
    let response = f.get("/cache").await;
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
}

#[tokio::test]
async fn users_list_is_a_json_array_with_named_fields() {
    let f = Fixture::new();
    assert_eq!(body_bytes(f.get("/users").await).await, b"[]");
    let ada = f.create("Ada", "ada@example.com").await;
    let response = f.get("/users").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let users = body_json(response).await;
    assert_eq!(users, json!([ada]));
    let keys: Vec<_> = ada.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["created_at", "email", "id", "name", "updated_at"]);
}

#[tokio::test]
async fn users_pages_by_key_with_a_link_to_the_next_page() {
    let f = Fixture::new();
    for i in 0..5 {
        f.create(&format!("U{i}"), &format!("u{i}@example.com"))
            .await;
    }
    let response = f.get("/users?limit=2").await;
    let link = response.headers()[header::LINK]
        .to_str()
        .unwrap()
        .to_owned();
    let page: Vec<Value> = serde_json::from_value(body_json(response).await).unwrap();
    assert_eq!(page.len(), 2);
    let last_id = page[1]["id"].as_i64().unwrap();
    assert_eq!(
        link,
        format!("</users?limit=2&after={last_id}>; rel=\"next\"")
    );

    let uri = link.trim_start_matches('<').split('>').next().unwrap();
    let rest = f.get(&format!("{uri}0")).await; // after=<id>0: past the end
    assert_eq!(rest.status(), StatusCode::OK);
    assert!(rest.headers().get(header::LINK).is_none());
    assert_eq!(body_json(rest).await, json!([]));
    let response = f.get(&format!("/users?limit=10&after={last_id}")).await;
    assert!(
        response.headers().get(header::LINK).is_none(),
        "last page has no next link"
    );
    assert_eq!(body_json(response).await.as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn bad_pagination_parameters_are_400_problems_not_clamped() {
    let f = Fixture::new();
    for uri in [
        "/users?limit=0",
        "/users?limit=1001",
        "/users?limit=-5",
        "/users?after=-1",
    ] {
        let body = problem(f.get(uri).await, StatusCode::BAD_REQUEST).await;
        assert!(body["errors"][0]["field"].is_string(), "{uri}: {body}");
    }
    for uri in ["/users?limit=abc", "/users?after=1.5", "/users?lmit=10"] {
        problem(f.get(uri).await, StatusCode::BAD_REQUEST).await;
    }
}

#[tokio::test]
async fn create_answers_201_with_location_and_the_user() {
    let f = Fixture::new();
    let response = f
        .json(
            Method::POST,
            "/users",
            json!({"name": " Ada ", "email": "ada@example.com"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let user = body_json(response).await;
    assert_eq!(location, format!("/users/{}", user["id"]));
    assert_eq!(user["name"], "Ada", "names are trimmed");
    assert_eq!(body_json(f.get(&location).await).await, user);
}

#[tokio::test]
async fn create_rejects_bad_input_with_the_right_status() {
    let f = Fixture::new();
    f.create("Ada", "ada@example.com").await;

    let dup = f
        .json(
            Method::POST,
            "/users",
            json!({"name": "Eve", "email": "ADA@example.com"}),
        )
        .await;
    problem(dup, StatusCode::CONFLICT).await;

    let invalid = f
        .json(Method::POST, "/users", json!({"name": "", "email": "nope"}))
        .await;
    let body = problem(invalid, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["errors"][0]["field"], "name");
    assert_eq!(body["errors"][1]["field"], "email");

    for shape in [
        json!({"name": "Bob"}),
        json!({"name": "Bob", "email": "b@example.com", "admin": true}),
        json!({"name": 5, "email": "b@example.com"}),
        json!([1, 2]),
    ] {
        let response = f.json(Method::POST, "/users", shape.clone()).await;
        problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    }

    let malformed = Request::post("/users")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"name\": "))
        .unwrap();
    problem(f.send(malformed).await, StatusCode::BAD_REQUEST).await;

    let no_type = Request::post("/users")
        .body(Body::from(r#"{"name":"Bob","email":"b@example.com"}"#))
        .unwrap();
    problem(f.send(no_type).await, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    let huge = json!({"name": "x".repeat(70 * 1024), "email": "b@example.com"});
    problem(
        f.json(Method::POST, "/users", huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    // Nothing of the rejected requests was stored.
    assert_eq!(
        body_json(f.get("/users").await)
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn read_replace_update_delete_one_user() {
    let f = Fixture::new();
    let ada = f.create("Ada", "ada@example.com").await;
    let uri = format!("/users/{}", ada["id"]);
    f.create("Bob", "bob@example.com").await;

    assert_eq!(body_json(f.get(&uri).await).await, ada);

    let replaced = f
        .json(
            Method::PUT,
            &uri,
            json!({"name": "Ada L.", "email": "ada.l@example.com"}),
        )
        .await;
    assert_eq!(replaced.status(), StatusCode::OK);
    let replaced = body_json(replaced).await;
    assert_eq!(
        (replaced["name"].as_str(), replaced["email"].as_str()),
        (Some("Ada L."), Some("ada.l@example.com"))
    );
    problem(
        f.json(Method::PUT, &uri, json!({"name": "Ada"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;

    let patched = body_json(
        f.json(Method::PATCH, &uri, json!({"name": "Countess"}))
            .await,
    )
    .await;
    assert_eq!(patched["name"], "Countess");
    assert_eq!(patched["email"], "ada.l@example.com");
    problem(
        f.json(Method::PATCH, &uri, json!({})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    problem(
        f.json(Method::PATCH, &uri, json!({"email": "BOB@example.com"}))
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(
        body_json(f.get(&uri).await).await,
        patched,
        "failed writes change nothing"
    );

    let deleted = f
        .send(Request::delete(&uri).body(Body::empty()).unwrap())
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    problem(f.get(&uri).await, StatusCode::NOT_FOUND).await;
    let again = f
        .send(Request::delete(&uri).body(Body::empty()).unwrap())
        .await;
    problem(again, StatusCode::NOT_FOUND).await;
    problem(
        f.json(Method::PATCH, &uri, json!({"name": "Ghost"})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn malformed_ids_unknown_routes_and_wrong_methods_are_problems() {
    let f = Fixture::new();
    problem(f.get("/users/abc").await, StatusCode::BAD_REQUEST).await;
    problem(f.get("/nope").await, StatusCode::NOT_FOUND).await;
    let response = f
        .send(Request::delete("/").body(Body::empty()).unwrap())
        .await;
    assert_eq!(response.headers()[header::ALLOW], "GET,HEAD");
    problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn an_unreachable_database_is_a_503_with_retry_after() {
    let f = Fixture::new();
    f.repo.set_unavailable(true);
    let response = f.get("/users").await;
    assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    let body = problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["type"], "urn:userstack:problem:store-unavailable");
    let create = f
        .json(
            Method::POST,
            "/users",
            json!({"name": "Ada", "email": "ada@example.com"}),
        )
        .await;
    problem(create, StatusCode::SERVICE_UNAVAILABLE).await;
}

#[tokio::test]
async fn a_failing_cache_does_not_fail_user_requests() {
    let f = Fixture::new();
    let ada = f.create("Ada", "ada@example.com").await;
    f.cache.set_failing(true);
    assert_eq!(body_json(f.get("/users").await).await, json!([ada]));
    assert_eq!(
        body_json(f.get(&format!("/users/{}", ada["id"])).await).await,
        ada
    );
    f.create("Bob", "bob@example.com").await;
}

#[tokio::test]
async fn health_and_readiness() {
    let f = Fixture::new();
    let health = f.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(body_json(health).await, json!({"status": "ok"}));

    let ready = f.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(
        body_json(ready).await,
        json!({"status": "ready", "checks": {"database": "ok", "cache": "ok"}})
    );

    f.cache.set_failing(true);
    let degraded = f.get("/readyz").await;
    assert_eq!(
        degraded.status(),
        StatusCode::OK,
        "a cache outage only degrades"
    );
    assert_eq!(body_json(degraded).await["checks"]["cache"], "degraded");

    f.repo.set_unavailable(true);
    let down = f.get("/readyz").await;
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body_json(down).await["status"], "unavailable");
    assert_eq!(
        f.get("/healthz").await.status(),
        StatusCode::OK,
        "liveness ignores dependencies"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_the_cache() {
    let f = Fixture::new();
    let ada = f.create("Ada", "ada@example.com").await;
    f.get(&format!("/users/{}", ada["id"])).await;
    f.get(&format!("/users/{}", ada["id"])).await;
    f.get("/users/999").await;
    let response = f.get("/metrics").await;
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8(body_bytes(response).await).unwrap();
    for line in [
        r#"userstack_http_requests_total{method="GET",route="/users/{id}",status="200"} 2"#,
        r#"userstack_http_requests_total{method="GET",route="/users/{id}",status="404"} 1"#,
        r#"userstack_http_requests_total{method="POST",route="/users",status="201"} 1"#,
        r#"userstack_cache_operations_total{result="miss"} 2"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    // The second read of Ada is a hit, from Redis or from memory (once the watch is set up).
    let hits: u64 = ["hit", "memory_hit"]
        .iter()
        .map(|result| {
            let prefix = format!(r#"userstack_cache_operations_total{{result="{result}"}} "#);
            let line = text.lines().find_map(|l| l.strip_prefix(prefix.as_str()));
            line.expect("a cache hit counter").parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(hits, 1, "{text}");
    assert!(text.contains("userstack_http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn request_ids_are_generated_or_propagated() {
    let f = Fixture::new();
    let generated = f.get("/").await;
    let id = generated.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let given = Request::get("/")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    assert_eq!(f.send(given).await.headers()["x-request-id"], "abc-123");
    let failed = f.get("/nope").await;
    assert!(
        failed.headers().contains_key("x-request-id"),
        "errors carry the id too"
    );
}

#[tokio::test]
async fn large_responses_are_compressed_when_the_client_accepts_it() {
    let f = Fixture::new();
    for i in 0..30 {
        f.create(&format!("User {i}"), &format!("user{i}@example.com"))
            .await;
    }
    let request = Request::get("/users")
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(Body::empty())
        .unwrap();
    let response = f.send(request).await;
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    let tiny = Request::get("/")
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(Body::empty())
        .unwrap();
    assert!(
        f.send(tiny)
            .await
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_none()
    );
}

async fn panicking() -> &'static str {
    panic!("boom: secret internals")
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_server_keeps_serving() {
    let f = Fixture::new();
    let routes = Router::new()
        .route("/panic", get(panicking))
        .route("/ok", get(|| async { "fine" }));
    let app = with_layers(routes, &f.state, &HttpConfig::default());
    let response = app
        .clone()
        .oneshot(Request::get("/panic").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let body = problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert!(
        !body.to_string().contains("secret"),
        "no internals leak: {body}"
    );
    let after = app
        .oneshot(Request::get("/ok").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_request_that_outlives_the_timeout_is_a_503_problem() {
    let f = Fixture::new();
    let routes = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late"
        }),
    );
    let http = HttpConfig {
        request_timeout_secs: 1,
        ..HttpConfig::default()
    };
    let app = with_layers(routes, &f.state, &http);
    let response = app
        .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
        .await
        .unwrap();
    problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
}
