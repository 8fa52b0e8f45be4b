//! CORS, off by default: with no `--cors-origin` the API sends no CORS header at all;
//! with origins (or `*`) it answers browsers from those origins, for GET only. The
//! origins are parsed in `weathervane_core::cors` (the upload server takes the same).

use axum::Router;
use axum::http::Method;
use tower_http::cors::{AllowOrigin, CorsLayer};
pub use weathervane_core::cors::CorsOrigins;

/// `router` answering CORS requests from `origins` (unchanged when off).
pub fn allow(router: Router, origins: &CorsOrigins) -> Router {
    let allow_origin = match origins {
        CorsOrigins::Off => return router,
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(list.clone()),
    };
    router.layer(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET])
            .allow_headers([axum::http::header::ACCEPT])
            .expose_headers([axum::http::header::RETRY_AFTER]),
    )
}
