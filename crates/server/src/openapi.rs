//! The OpenAPI 3.1 document served at `GET /openapi.json`.
//!
//! It cannot drift from the router: routes are registered through `utoipa_axum`'s
//! `routes!` (see `routes::api`), which takes each handler's path and method from the same
//! `#[utoipa::path]` attribute that documents it, so a route without a description does not
//! exist. What the attributes cannot prove (that the bodies match the schemas) schemathesis
//! checks against the running server (`tests/fuzz/schemathesis.sh`).
//!
//! The schemas of requests are at most as permissive as the validation in `userstack-core`:
//! whatever the document says is valid is accepted.

use std::sync::LazyLock;

use utoipa::openapi::OpenApi as Document;
use utoipa::{OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "userstack",
        description = "A users service over PostgreSQL (the system of record) and Redis (a cache). \
            Errors are RFC 9457 problem documents (`application/problem+json`); every 503 carries \
            `Retry-After`.",
        license(name = "MIT OR Apache-2.0")
    ),
    components(schemas(User, crate::error::Problem, FieldErrorDoc)),
    tags(
        (name = "users", description = "Users, paged by id"),
        (name = "demo", description = "The original application's text routes"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub(crate) struct ApiDoc;

/// The document, built once from the routes.
pub(crate) static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    serde_json::to_string(&crate::routes::document()).expect("the document serialises")
});

/// Builds the document (for tests and for the `/openapi.json` route).
pub fn document() -> Document {
    crate::routes::document()
}

/// A user as the API shows it.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // a description of `userstack_core::User`'s JSON, never built
pub(crate) struct User {
    /// Assigned by the server; ascending in creation order.
    #[schema(format = Int64, minimum = 1)]
    id: i64,
    name: String,
    email: String,
    /// RFC 3339.
    #[schema(format = DateTime)]
    created_at: String,
    /// RFC 3339.
    #[schema(format = DateTime)]
    updated_at: String,
}

/// Why one input field was rejected.
#[derive(Debug, ToSchema)]
#[schema(as = FieldError)]
#[allow(dead_code)] // describes `userstack_core::FieldError`
pub(crate) struct FieldErrorDoc {
    /// The field as the client named it (`name`, `email`, `limit`, `after`, `body`).
    field: String,
    message: String,
}

/// Marks every operation of `guarded` as needing a bearer token (when `API_TOKEN_FILE` configures
/// tokens; without, the API is open), documents its 401, and declares the scheme.
pub(crate) fn require_bearer(guarded: &mut Document) {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, ResponseBuilder, Type};

    let unauthorized = ResponseBuilder::new()
        .description(
            "No `Authorization: Bearer …` header, or a token that is not accepted (only when \
             API_TOKEN_FILE configures tokens)",
        )
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new().schema_type(Type::String),
                ))
                .description(Some("`Bearer` with the error, as RFC 6750 describes"))
                .build(),
        )
        .build();
    for item in guarded.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            operation
                .responses
                .responses
                .insert("401".to_owned(), unauthorized.clone().into());
            operation.security = Some(vec![SecurityRequirement::new(
                "bearer",
                Vec::<String>::new(),
            )]);
        }
    }
    let components = guarded.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
}
