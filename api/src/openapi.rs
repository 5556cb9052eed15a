//! The OpenAPI 3.1 document's header (the paths come from the handlers'
//! annotations, see `crate::routes::document`) and the docs page that
//! renders it. The Swagger UI assets are compiled into the binary, so
//! `/docs` works offline.

use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::error::ErrorBody;
use crate::state::AppState;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api-docs/openapi.json";
/// Where the docs page is served.
pub const DOCS_PATH: &str = "/docs";

/// The document's header; the paths are added by the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Coupon issuance service",
        description = "First-come coupon issuance: the api accepts issue requests and queues \
            them (Redis or Kafka); workers decide them in arrival order into MySQL. \
            Every error answer is `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "MIT", identifier = "MIT"),
    ),
    components(schemas(ErrorBody)),
    modifiers(&AdminToken),
    tags(
        (name = "issue", description = "Issue requests and their results"),
        (name = "coupons", description = "Coupon state"),
        (name = "admin", description = "Operator endpoints; need `Authorization: Bearer ADMIN_TOKEN`"),
        (name = "dashboard", description = "Live view of sales in progress; no token, no user ids"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

/// Declares the bearer tokens: `adminToken` (the admin token) and
/// `userToken` (a user's JWT, required by the issue call and lookups when
/// `AUTH_JWT_*` is set).
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "adminToken",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "userToken",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A user's JWT (HS256, RS256 or ES256 per the api's settings); its `sub` \
                         is the user id. Required only when the api sets AUTH_JWT_SECRET or \
                         AUTH_JWT_PUBLIC_KEY_FILE.",
                    ))
                    .build(),
            ),
        );
    }
}

/// `GET /api-docs/openapi.json` and the Swagger UI at `GET /docs`.
pub fn docs(doc: utoipa::openapi::OpenApi) -> Router<AppState> {
    SwaggerUi::new(DOCS_PATH)
        .url(OPENAPI_PATH, doc)
        // No badge fetched from swagger.io: the page makes no outside request.
        .config(Config::default().validator_url("none"))
        .into()
}
