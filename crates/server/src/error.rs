//! The one place where errors become HTTP responses: RFC 9457 `application/problem+json`.
//!
//! Handlers return [`ApiError`]; extractor rejections are turned into it by the `Json`, `Query`
//! and `Path` wrappers below; and [`problem_for_bare_errors`] gives a problem body to the error
//! responses that layers and the router make themselves (405, 408/503 timeouts, 413).

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use userstack_core::{Error as CoreError, FieldError, Invalid};

use crate::auth::Denied;

const PROBLEM_JSON: &str = "application/problem+json";
/// Seconds a client should wait before retrying when the database is unreachable.
const RETRY_AFTER_SECS: &str = "5";
/// Seconds a client should wait before retrying a request shed under overload: a moment is
/// enough for in-flight requests to drain, and spreading retries wider only idles the server.
const OVERLOAD_RETRY_AFTER_SECS: &str = "1";

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Problem {
    /// A URI naming the kind of problem (`urn:userstack:problem:…`), or `about:blank` when the
    /// status says it all.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The status's reason phrase.
    title: &'static str,
    /// The HTTP status code.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What went wrong, for a human.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    detail: Option<String>,
    /// For validation problems: each invalid field and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<crate::openapi::FieldErrorDoc>, required = false)]
    errors: Vec<FieldError>,
}

/// An error on its way to becoming a problem response.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    problem: Problem,
    retry_after: &'static str,
    /// `WWW-Authenticate` of a 401 (RFC 6750 §3).
    challenge: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, detail: Option<String>) -> Self {
        Self {
            status,
            problem: Problem {
                kind,
                title: status.canonical_reason().unwrap_or("Error"),
                status: status.as_u16(),
                detail,
                errors: Vec::new(),
            },
            retry_after: RETRY_AFTER_SECS,
            challenge: None,
        }
    }

    /// More requests are in flight than `MAX_IN_FLIGHT`: this one is refused at once rather
    /// than queued behind them.
    pub(crate) fn overloaded() -> Self {
        Self {
            retry_after: OVERLOAD_RETRY_AFTER_SECS,
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "urn:userstack:problem:overloaded",
                Some("the server is at its in-flight request limit; retry shortly".into()),
            )
        }
    }

    /// A request to a protected route without an accepted bearer token. The body and the
    /// challenge say whether a token was missing or wrong, never which tokens exist.
    pub(crate) fn unauthorized(denied: Denied) -> Self {
        let (detail, challenge) = match denied {
            Denied::Missing => (
                "this route requires Authorization: Bearer <token>",
                r#"Bearer realm="userstack""#,
            ),
            Denied::Invalid => (
                "the bearer token is not valid",
                r#"Bearer realm="userstack", error="invalid_token""#,
            ),
        };
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "urn:userstack:problem:unauthorized",
            Some(detail.to_owned()),
        );
        e.challenge = Some(challenge);
        e
    }

    /// A bare HTTP-level problem (`about:blank`: the status says it all).
    pub(crate) fn status(status: StatusCode, detail: impl Into<Option<String>>) -> Self {
        Self::new(status, "about:blank", detail.into())
    }

    /// Query parameters that parsed but are out of range: 400, not 422, because the request line
    /// itself is wrong, not the entity it carries.
    pub(crate) fn bad_query(error: CoreError) -> Self {
        match error {
            CoreError::Validation(fields) => {
                let mut e = Self::new(
                    StatusCode::BAD_REQUEST,
                    "urn:userstack:problem:invalid-query",
                    Some("invalid query parameters".into()),
                );
                e.problem.errors = fields;
                e
            }
            other => other.into(),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        CoreError::from(invalid).into()
    }
}

impl From<CoreError> for ApiError {
    fn from(error: CoreError) -> Self {
        match error {
            CoreError::Validation(fields) => {
                let mut e = Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "urn:userstack:problem:validation",
                    Some("the request body has invalid fields".into()),
                );
                e.problem.errors = fields;
                e
            }
            CoreError::NotFound(id) => Self::new(
                StatusCode::NOT_FOUND,
                "urn:userstack:problem:user-not-found",
                Some(format!("no user with id {id}")),
            ),
            CoreError::DuplicateEmail(email) => Self::new(
                StatusCode::CONFLICT,
                "urn:userstack:problem:duplicate-email",
                Some(format!("a user with email {email:?} already exists")),
            ),
            CoreError::StoreUnavailable(source) => {
                tracing::warn!(error = %source, "user store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "urn:userstack:problem:store-unavailable",
                    Some("the database is unavailable; retry later".into()),
                )
            }
            CoreError::CacheUnavailable(source) => {
                tracing::warn!(error = %source, "cache unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "urn:userstack:problem:cache-unavailable",
                    Some("the cache is unavailable; retry later".into()),
                )
            }
            CoreError::Internal(source) => {
                // The details are for the logs only.
                tracing::error!(error = %source, source = ?source, "internal error");
                Self::status(StatusCode::INTERNAL_SERVER_ERROR, None)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(challenge) = self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(self.retry_after),
            );
        }
        response
    }
}

fn rejection(status: StatusCode, detail: String) -> ApiError {
    ApiError::status(status, detail)
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // axum picks the right status: 400 syntax, 415 content type, 413 size, 422 shape.
        let mut e = rejection(r.status(), r.body_text());
        if r.status() == StatusCode::UNPROCESSABLE_ENTITY {
            e.problem.kind = "urn:userstack:problem:validation";
        }
        e
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        rejection(StatusCode::BAD_REQUEST, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        rejection(StatusCode::BAD_REQUEST, r.body_text())
    }
}

/// `axum::Json` whose rejections are problems.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query` whose rejections are problems.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct Query<T>(pub T);

/// `axum::extract::Path` whose rejections are problems.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct Path<T>(pub T);

/// Unknown routes.
pub(crate) async fn not_found() -> ApiError {
    ApiError::status(StatusCode::NOT_FOUND, Some("no such route".to_owned()))
}

/// A panicking handler answers 500 without details; the server keeps serving.
pub(crate) fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, None).into_response()
}

/// Gives a problem body to error responses made by layers and the router (405 with its `Allow`
/// header, timeouts, oversized bodies): those come with no body or a plain-text one, which no
/// handler here ever sends for an error. Status and headers are kept.
pub(crate) fn problem_for_bare_errors<B>(response: axum::http::Response<B>) -> Response
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let status = response.status();
    let bare = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !bare {
        return response.map(Body::new);
    }
    let (mut parts, _) = response.into_parts();
    let problem = ApiError::status(status, None).into_response();
    let (problem_parts, body) = problem.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.extend(problem_parts.headers);
    Response::from_parts(parts, body)
}
