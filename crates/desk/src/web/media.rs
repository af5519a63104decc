//! Snapshots and clips, to a signed-in browser only: Range requests (a video element seeks
//! by them) and conditional requests served by tower-http, every path checked to lie inside
//! the media directory, and each first look recorded in the audit log.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;
use uuid::Uuid;

use super::AppState;
use super::auth::Signed;
use crate::audit;
use crate::events;

/// `GET /media/{event}/{camera}/{snapshot|clip|view}` (`view`: an H.265 clip's viewing copy).
pub async fn serve(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path((event, camera, kind)): Path<(Uuid, String, String)>,
    request: Request,
) -> Response {
    if !["snapshot", "clip", "view"].contains(&kind.as_str()) {
        return (StatusCode::NOT_FOUND, "No such media.\n").into_response();
    }
    let range = request
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let first_look = range.as_deref().is_none_or(|r| r.starts_with("bytes=0-"));
    let (user, client, target) = (signed.user.name, signed.client, event.to_string());
    let action = if kind == "clip" {
        "view_clip"
    } else {
        "view_snapshot"
    };
    let (camera_key, kind_key) = (camera.clone(), kind.clone());
    let found = state
        .db
        .call(move |c| {
            let path = events::media_path(c, event, &camera_key, &kind_key)?;
            if path.is_some() && first_look {
                audit::by(c, &user, action, Some(&target), &client)?;
            }
            Ok(path)
        })
        .await;
    let relative = match found {
        Ok(Some(relative)) => relative,
        Ok(None) => return (StatusCode::NOT_FOUND, "No such media.\n").into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot look media up");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    // The receiver names files after checked ids; this holds even if the database was edited.
    let root = state.media.clone();
    let path = match tokio::task::spawn_blocking(move || {
        let root = root.canonicalize().ok()?;
        let path = root.join(relative).canonicalize().ok()?;
        path.starts_with(&root).then_some(path)
    })
    .await
    {
        Ok(Some(path)) => path,
        _ => return (StatusCode::NOT_FOUND, "No such media.\n").into_response(),
    };
    match ServeFile::new(path).oneshot(request).await {
        Ok(response) => {
            let mut response = response.map(Body::new);
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-cache"),
            );
            response
        }
        Err(error) => {
            tracing::error!(%error, "cannot serve media");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
