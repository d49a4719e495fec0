//! `/users`: list (keyset pages), create, read, replace, update, delete.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use userstack_core::{NewUser, PageRequest, User, UserId, UserPatch, UserService};

use crate::error::{ApiError, Json, Path, Problem, Query};
use crate::openapi::User as UserDoc;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// Most users in the page (1–1000, default 100). Out-of-range values are a 400, never
    /// clamped.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Only users with an id greater than this; the `Link` header of the previous page carries it.
    #[param(minimum = 0)]
    after: Option<i64>,
}

// The documented patterns are at most as permissive as `userstack_core`'s validation, so what
// the document calls valid is accepted. Names: at least one character that is neither
// whitespace nor a control character, and no control character. Emails: printable ASCII, one
// `@`, 1–64 characters before it, a dotted domain whose labels neither start nor end with `-`.
// The service also accepts surrounding whitespace (trimmed) and non-ASCII addresses of at most
// 64 bytes before the `@`, which a pattern cannot bound in bytes.

/// A full user as clients send it (create, replace). Unknown fields are rejected: a misspelt
/// field silently ignored is a lost update.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UserInput)]
pub(super) struct UserBody {
    /// Trimmed; 1–100 characters, no control characters.
    #[schema(
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    /// Trimmed; unique regardless of ASCII case.
    #[schema(
        max_length = 254,
        pattern = r"^[!-?A-~]{1,64}@[!-,/-?A-~](?:[!-\-/-?A-~]*[!-,/-?A-~])?(?:\.[!-,/-?A-~](?:[!-\-/-?A-~]*[!-,/-?A-~])?)+$"
    )]
    email: String,
}

/// The fields to change; at least one. `null` is not a value: a field is sent or left out.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UserPatch, min_properties = 1)]
pub(super) struct PatchBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(
        nullable = false,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        required = false
    )]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(
        nullable = false,
        max_length = 254,
        pattern = r"^[!-?A-~]{1,64}@[!-,/-?A-~](?:[!-\-/-?A-~]*[!-,/-?A-~])?(?:\.[!-,/-?A-~](?:[!-\-/-?A-~]*[!-,/-?A-~])?)+$",
        required = false
    )]
    email: Option<String>,
}

/// A field that, when sent, must be a string: `{"name": null}` is a 422, not a patch that
/// silently changes nothing.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

// The error answers of the users' routes, each described once; an operation lists those it can
// give. Documentation only: the bodies are made by `crate::error`, the one mapping to HTTP.

/// A path or query parameter that does not parse or is out of range.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 400,
    description = "Malformed or out-of-range path or query parameters",
    content_type = "application/problem+json"
)]
#[expect(dead_code, reason = "documents a response; never built")]
struct BadParameters(Problem);

/// A request body refused before the service sees it, or refused by its validation.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "documents responses; never built")]
enum BodyRejected {
    #[response(
        status = 400,
        description = "Malformed JSON or path parameter",
        content_type = "application/problem+json"
    )]
    Malformed(Problem),
    #[response(
        status = 413,
        description = "Body larger than BODY_LIMIT_BYTES",
        content_type = "application/problem+json"
    )]
    TooLarge(Problem),
    #[response(
        status = 415,
        description = "Body is not `application/json`",
        content_type = "application/problem+json"
    )]
    NotJson(Problem),
    #[response(
        status = 422,
        description = "Invalid fields, each named with the reason, or a body of the wrong shape",
        content_type = "application/problem+json"
    )]
    Invalid(Problem),
}

#[derive(utoipa::IntoResponses)]
#[response(
    status = 404,
    description = "No user with this id",
    content_type = "application/problem+json"
)]
#[expect(dead_code, reason = "documents a response; never built")]
struct NoSuchUser(Problem);

#[derive(utoipa::IntoResponses)]
#[response(
    status = 409,
    description = "Another user has this email (compared ignoring ASCII case)",
    content_type = "application/problem+json"
)]
#[expect(dead_code, reason = "documents a response; never built")]
struct EmailTaken(Problem);

#[derive(utoipa::IntoResponses)]
#[response(status = 503, description = "The database is unavailable, the request outlived REQUEST_TIMEOUT_SECS, or the server is at MAX_IN_FLIGHT", content_type = "application/problem+json",
    headers(("Retry-After" = String, description = "Seconds to wait before retrying")))]
#[expect(dead_code, reason = "documents a response; never built")]
struct DatabaseUnavailable(Problem);

/// A JSON array of users, as the original application answered; the next page, if any, is in a
/// `Link: <…>; rel="next"` header.
#[utoipa::path(get, path = "/users", tag = "users", params(ListParams),
    responses(
        (status = 200, description = "Users in ascending id order", body = [UserDoc],
            headers(("Link" = String, description = "`</users?limit=…&after=…>; rel=\"next\"` when there are more users"))),
        BadParameters,
        DatabaseUnavailable,
    ))]
pub(super) async fn list(
    State(service): State<UserService>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let request = PageRequest::new(params.limit, params.after).map_err(ApiError::bad_query)?;
    let page = service.list_users_json(request).await?;
    let mut response = json_body(page.body);
    if let Some(next) = page.next_after {
        let link = format!(
            "</users?limit={}&after={next}>; rel=\"next\"",
            request.limit()
        );
        let link = HeaderValue::from_str(&link).expect("digits and ASCII punctuation");
        response.headers_mut().insert(header::LINK, link);
    }
    Ok(response)
}

#[utoipa::path(post, path = "/users", tag = "users", request_body = UserBody,
    responses(
        (status = 201, description = "Created", body = UserDoc,
            headers(("Location" = String, description = "`/users/{id}` of the new user"))),
        BodyRejected,
        EmailTaken,
        DatabaseUnavailable,
    ))]
pub(super) async fn create(
    State(service): State<UserService>,
    Json(body): Json<UserBody>,
) -> Result<Response, ApiError> {
    let user = service
        .create_user(NewUser::parse(&body.name, &body.email)?)
        .await?;
    let location = HeaderValue::from_str(&format!("/users/{}", user.id)).expect("digits");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(user),
    )
        .into_response())
}

#[utoipa::path(get, path = "/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = UserDoc),
        BadParameters,
        NoSuchUser,
        DatabaseUnavailable,
    ))]
pub(super) async fn get(
    State(service): State<UserService>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    Ok(json_body(service.get_user_json(UserId(id)).await?))
}

/// A 200 whose body the service already serialised (and, on a cache hit, never parsed).
fn json_body(body: Bytes) -> Response {
    let json = HeaderValue::from_static("application/json");
    ([(header::CONTENT_TYPE, json)], body).into_response()
}

#[utoipa::path(put, path = "/users/{id}", tag = "users", request_body = UserBody,
    params(("id" = i64, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The replaced user", body = UserDoc),
        BodyRejected,
        NoSuchUser,
        EmailTaken,
        DatabaseUnavailable,
    ))]
pub(super) async fn replace(
    State(service): State<UserService>,
    Path(id): Path<i64>,
    Json(body): Json<UserBody>,
) -> Result<Json<User>, ApiError> {
    let user = NewUser::parse(&body.name, &body.email)?;
    Ok(Json(service.replace_user(UserId(id), user).await?))
}

#[utoipa::path(patch, path = "/users/{id}", tag = "users", request_body = PatchBody,
    params(("id" = i64, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The updated user", body = UserDoc),
        BodyRejected,
        NoSuchUser,
        EmailTaken,
        DatabaseUnavailable,
    ))]
pub(super) async fn update(
    State(service): State<UserService>,
    Path(id): Path<i64>,
    Json(body): Json<PatchBody>,
) -> Result<Json<User>, ApiError> {
    let patch = UserPatch::parse(body.name.as_deref(), body.email.as_deref())?;
    Ok(Json(service.update_user(UserId(id), patch).await?))
}

#[utoipa::path(delete, path = "/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "The user's id")),
    responses(
        (status = 204, description = "Deleted"),
        BadParameters,
        NoSuchUser,
        DatabaseUnavailable,
    ))]
pub(super) async fn delete(
    State(service): State<UserService>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    service.delete_user(UserId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
