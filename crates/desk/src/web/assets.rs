//! The console's script, style, icon and web-app manifest, compiled into the binary: a
//! precinct network may reach nothing else, and a page never loads anything from elsewhere.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const FILES: &[(&str, &str, &str)] = &[
    (
        "desk.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/desk.css"),
    ),
    (
        "desk.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/desk.js"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../../assets/icon.svg"),
    ),
];

/// `GET /assets/{name}`.
pub async fn serve(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "No such file.\n").into_response(),
    }
}

/// `GET /manifest.webmanifest`: what makes the console installable as an app.
pub async fn manifest() -> Response {
    (
        [(header::CONTENT_TYPE, "application/manifest+json")],
        include_str!("../../assets/manifest.webmanifest"),
    )
        .into_response()
}
