//! The console over HTTPS: pages rendered on the server (every value a store sent escaped
//! by the template), a little JavaScript for the live feed, every asset served from the
//! binary itself, and every route but the login page behind a session.

mod assets;
mod auth;
mod export;
mod media;
mod pages;
mod users;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Notify, broadcast};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::db::Db;
use crate::ingest::Change;

/// What every request handler shares.
pub struct AppState {
    /// The database.
    pub db: Db,
    /// Changes, for the live feeds: every desk's, in a cluster.
    pub feed: broadcast::Sender<Change>,
    /// Where this desk announces what it changed (the same channel as `feed` when alone).
    pub announce: broadcast::Sender<Change>,
    /// Where received files are.
    pub media: PathBuf,
    /// Where exports are built (the storage directory: the same file system as the media).
    pub scratch: PathBuf,
    /// Where enrolled stores' keys are written.
    pub keys: PathBuf,
    /// Whether H.265 clips get H.264 viewing copies (ffmpeg is installed).
    pub converter: bool,
    /// Seconds a session may stay unused.
    pub idle_s: i64,
    /// Tells the receiver to start again with the registry's keys.
    pub restart: Arc<Notify>,
    /// Cancelled when the desk stops: live feeds end with it.
    pub stopping: tokio_util::sync::CancellationToken,
    /// Signs and addresses what officers send the boxes.
    pub signer: Arc<crate::respond::Signer>,
    /// Wakes the task that publishes responses.
    pub respond: Arc<Notify>,
}

/// The console's routes.
pub fn router(state: Arc<AppState>) -> Router {
    let pages = Router::new()
        .route("/", get(pages::feed))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/events/{id}", get(pages::event))
        .route("/events/{id}/card", get(pages::card))
        .route("/events/{id}/hold", post(pages::hold))
        .route("/events/{id}/respond", post(pages::respond))
        .route("/events/{id}/request", post(pages::request))
        .route("/events/{id}/export", get(export::export))
        .route("/feed", get(pages::stream))
        .route("/sites", get(pages::sites).post(pages::enrol))
        .route("/audit", get(pages::audit_log))
        .route("/users", get(users::users).post(users::add))
        .route("/users/{name}", post(users::edit))
        .route("/media/{id}/{camera}/{kind}", get(media::serve))
        .route("/assets/{name}", get(assets::serve))
        .route("/manifest.webmanifest", get(assets::manifest))
        .with_state(state);
    let header = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    pages
        .layer(middleware::from_fn(same_origin_writes))
        .layer(header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self'; media-src 'self'; script-src 'self'; \
             style-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; \
             base-uri 'none'",
        ))
        .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // Not no-referrer: under it a browser sends its own forms with `Origin: null`.
        .layer(header(header::REFERRER_POLICY, "same-origin"))
        .layer(header(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000",
        ))
        .layer(header(header::X_FRAME_OPTIONS, "DENY"))
}

/// Refuses a state-changing request another site's page sent (the browser says so in
/// `Sec-Fetch-Site` or `Origin`): the first of two CSRF defences, the form's token being the
/// second.
async fn same_origin_writes(request: Request, next: Next) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let headers = request.headers();
        let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        // HTTP/2 carries the host in the request's authority, not a Host header.
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()));
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        // A browser that sends Sec-Fetch-Site is believed (a page cannot forge it); one that
        // does not is judged by its Origin.
        let foreign = match site {
            Some(site) => site != "same-origin" && site != "none",
            None => matches!((origin, host), (Some(origin), Some(host))
                if origin.split_once("://").map(|(_, h)| h) != Some(host)),
        };
        if foreign {
            tracing::warn!(
                path = %request.uri().path(),
                sec_fetch_site = site.unwrap_or("-"),
                origin = origin.unwrap_or("-"),
                host = host.unwrap_or("-"),
                "refused a form another site sent"
            );
            return refused("this form was sent from another site");
        }
    }
    next.run(request).await
}

/// A 403 with a sentence a person can act on.
fn refused(why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("Refused: {why}. Reload the page and try again.\n"),
    )
        .into_response()
}

/// The client's address, for the audit log.
pub struct ClientAddress(pub String);

impl<S: Sync> axum::extract::FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(client(parts)))
    }
}

fn client(request: &axum::http::request::Parts) -> String {
    request
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip().to_string())
        .unwrap_or_else(|| "-".into())
}
