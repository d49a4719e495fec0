//! `/users`: list (keyset pages), create, read, replace, update, delete.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use userstack_core::{NewUser, PageRequest, User, UserId, UserPatch, UserService};

use crate::error::{ApiError, Json, Path, Query};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    limit: Option<i64>,
    after: Option<i64>,
}

/// A full user as clients send it (create, replace). Unknown fields are rejected: a misspelt
/// field silently ignored is a lost update.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserBody {
    name: String,
    email: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PatchBody {
    name: Option<String>,
    email: Option<String>,
}

/// A JSON array of users, as the original application answered; the next page, if any, is in a
/// `Link: <…>; rel="next"` header.
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

pub(super) async fn get(
    State(service): State<UserService>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    Ok(json_body(service.get_user_json(UserId(id)).await?))
}

/// A 200 whose body the service already serialised (and, on a cache hit, never parsed).
fn json_body(body: Vec<u8>) -> Response {
    let json = HeaderValue::from_static("application/json");
    ([(header::CONTENT_TYPE, json)], body).into_response()
}

pub(super) async fn replace(
    State(service): State<UserService>,
    Path(id): Path<i64>,
    Json(body): Json<UserBody>,
) -> Result<Json<User>, ApiError> {
    let user = NewUser::parse(&body.name, &body.email)?;
    Ok(Json(service.replace_user(UserId(id), user).await?))
}

pub(super) async fn update(
    State(service): State<UserService>,
    Path(id): Path<i64>,
    Json(body): Json<PatchBody>,
) -> Result<Json<User>, ApiError> {
    let patch = UserPatch::parse(body.name.as_deref(), body.email.as_deref())?;
    Ok(Json(service.update_user(UserId(id), patch).await?))
}

pub(super) async fn delete(
    State(service): State<UserService>,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    service.delete_user(UserId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
