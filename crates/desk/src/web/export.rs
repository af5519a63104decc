//! `GET /events/{id}/export`: the event's evidence zip, recorded in the audit log before it
//! is made (so the custody log inside it names this export), built on a blocking thread into
//! an unnamed temporary file and streamed from it.

use std::io::{Seek, SeekFrom};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_util::io::ReaderStream;
use uuid::Uuid;

use super::AppState;
use super::auth::Signed;
use crate::export::{self, Export};
use crate::{audit, events, sites};

/// `GET /events/{id}/export`.
pub async fn export(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(id): Path<Uuid>,
) -> Response {
    let (user, client, target) = (signed.user.name.clone(), signed.client, id.to_string());
    let loaded = state
        .db
        .call(move |c| {
            let Some(event) = events::get(c, id)? else {
                return Ok(None);
            };
            audit::by(c, &user, "export", Some(&target), &client)?;
            let site = sites::get(c, &event.site)?;
            let custody = events::history(c, &target)?;
            Ok(Some((event, site, custody)))
        })
        .await;
    let (event, site, custody) = match loaded {
        Ok(Some(found)) => found,
        Ok(None) => return (StatusCode::NOT_FOUND, "No such event.\n").into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot read an event to export");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    // The receiver made this directory from checked names; checked again, as it becomes a path.
    if alertclip_wire::id::check(&event.site).is_err() {
        return (StatusCode::NOT_FOUND, "No such event.\n").into_response();
    }
    let filename = format!("alertclip-{}-{}.zip", event.site, event.id);
    let (media, scratch, by) = (state.media.clone(), state.scratch.clone(), signed.user.name);
    let built = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let dir = media.join(&event.site).join(event.id.to_string());
        let mut file = tempfile::tempfile_in(&scratch)?;
        let export = Export {
            event: &event,
            site: site.as_ref(),
            dir: &dir,
            custody: &custody,
            by: &by,
        };
        export::write(&export, file.try_clone()?)?;
        file.seek(SeekFrom::Start(0))?;
        Ok(file)
    })
    .await;
    let file = match built {
        Ok(Ok(file)) => file,
        Ok(Err(error)) => {
            tracing::error!(%error, event = %id, "cannot build an export");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("The export could not be built: {error}.\n"),
            )
                .into_response();
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let body = Body::from_stream(ReaderStream::new(tokio::fs::File::from_std(file)));
    (
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (header::CONTENT_LENGTH, length.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        body,
    )
        .into_response()
}
