//! The console's pages: the live feed, an event, the stores. Rendered by maud, which escapes
//! every value it is given, so nothing a store sent can become markup.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use alertclip_wire::command::{Disposition, ResponseState};
use alertclip_wire::payload::{TriggerInfo, TriggerKind};
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use futures_util::Stream;
use maud::{DOCTYPE, Markup, html};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use uuid::Uuid;

use super::AppState;
use super::auth::Signed;
use crate::accounts::Role;
use crate::audit::{self, Entry};
use crate::events::{self, Event, Verification};
use crate::params;
use crate::sites::{self, Site};

/// Alerts the feed shows.
const FEED_LENGTH: u32 = 100;

/// A moment (Unix seconds) as the page shows it: the time, and how long ago (desk.js).
pub(super) fn time(at: i64) -> Markup {
    let at = jiff::Timestamp::from_second(at)
        .map(|t| t.to_string())
        .unwrap_or_default();
    html! { time datetime=(at) data-age { (at) } }
}

pub(super) fn layout(title: &str, signed: Option<&Signed>, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="theme-color" content="#14213d";
                    title { (title) }
                    link rel="stylesheet" href="/assets/desk.css";
                    link rel="manifest" href="/manifest.webmanifest";
                    link rel="icon" href="/assets/icon.svg" type="image/svg+xml";
                    script src="/assets/desk.js" defer {}
                }
                body {
                    header.top {
                        a.brand href="/" { "alertclip desk" }
                        @if let Some(signed) = signed {
                            nav {
                                a href="/" { "Alerts" }
                                a href="/sites" { "Stores" }
                                @if signed.user.role >= Role::Admin {
                                    a href="/users" { "Accounts" }
                                    a href="/audit" { "Audit" }
                                }
                                span.who { (signed.user.name) " · " (signed.user.role.as_str()) }
                                form method="post" action="/logout" {
                                    input type="hidden" name="csrf" value=(signed.csrf);
                                    button type="submit" { "Log out" }
                                }
                            }
                        }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// A page with one message.
pub fn message(title: &str, text: &str) -> Html<String> {
    layout(
        title,
        None,
        html! { h1 { (title) } p { (text) } p { a href="/" { "Back to the alerts" } } },
    )
}

/// The login form, with why the last attempt failed.
pub fn login(csrf: &str, problem: Option<&str>) -> Html<String> {
    layout(
        "Log in · alertclip desk",
        None,
        html! {
            form.login method="post" action="/login" {
                h1 { "Log in" }
                @if let Some(problem) = problem { p.problem role="alert" { (problem) } }
                label { "Name" input name="name" autocomplete="username" required autofocus; }
                label { "Password" input name="password" type="password" autocomplete="current-password" required; }
                input type="hidden" name="csrf" value=(csrf);
                button type="submit" { "Log in" }
            }
        },
    )
}

fn trigger_text(trigger: &TriggerInfo) -> String {
    let what = match trigger.kind {
        TriggerKind::Button => format!("Panic button {}", trigger.source),
        TriggerKind::Detection => {
            let seen: Vec<String> = trigger
                .detections
                .iter()
                .map(|d| match &d.zone {
                    Some(zone) => format!("{} {:.0}% in {zone}", d.label, d.score * 100.0),
                    None => format!("{} {:.0}%", d.label, d.score * 100.0),
                })
                .collect();
            if seen.is_empty() {
                format!("Detection on {}", trigger.source)
            } else {
                format!("Detection on {}: {}", trigger.source, seen.join(", "))
            }
        }
        TriggerKind::Manual => format!("Raised by hand ({})", trigger.source),
        TriggerKind::Remote => format!("Footage requested by {}", trigger.source),
        TriggerKind::Test => format!("Test ({})", trigger.source),
    };
    match &trigger.note {
        Some(note) => format!("{what}: {note}"),
        None => what,
    }
}

/// A link to the store on a map: its coordinates, else its address.
fn map_link(site: Option<&Site>, address: Option<&str>) -> Option<String> {
    if let Some((lat, lon)) = site.and_then(|s| s.latitude.zip(s.longitude)) {
        return Some(format!(
            "https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=18/{lat}/{lon}"
        ));
    }
    let address = site.and_then(|s| s.address.as_deref()).or(address)?;
    let query: String = address
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    Some(format!(
        "https://www.openstreetmap.org/search?query={query}"
    ))
}

fn verification_badge(verification: &Verification) -> Markup {
    match verification {
        Verification::Verified => {
            html! { span.badge.verified title="Signed by the store's enrolled key, chain unbroken, clock synchronised" { "verified" } }
        }
        Verification::Unverified(reasons) => html! {
            span.badge.unverified title=(reasons.join("; ")) { "unverified" }
        },
        Verification::Arriving(None) => html! { span.badge.arriving { "arriving" } },
        Verification::Arriving(Some(p)) => html! {
            span.badge.arriving data-chunks=(p.chunks) {
                // Chunks the manifest does not name (a forgery's) are counted too: never
                // more than it names.
                "arriving: " (p.total.map_or(p.chunks, |t| p.chunks.min(t)))
                @if let Some(total) = p.total { " of " (total) " chunks" } @else { " chunks so far" }
                ", " (megabytes(p.bytes))
            }
        },
    }
}

/// What officers last responded and how far it got, or the button to acknowledge.
fn response_markup(event: &Event, site: Option<&Site>, csrf: &str) -> Markup {
    html! {
        @if let Some(last) = event.responses.last() {
            p.response data-state=(last.command.state.as_str()) {
                span.badge.response { (last.command.state.words()) }
                " by " (last.command.by)
                " · " span.delivery data-outcome=(last.outcome.as_deref().unwrap_or("pending")) { (last.delivery()) }
            }
        } @else if site.is_some() {
            form.respond.acknowledge method="post" action={ "/events/" (event.id) "/respond" } {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="state" value="acknowledged";
                button type="submit" { "Acknowledge" }
            }
        }
    }
}

fn card_markup(event: &Event, site: Option<&Site>, csrf: &str) -> Markup {
    let alert = &event.alert;
    let name = site
        .map(|s| s.name.as_str())
        .unwrap_or(alert.site.name.as_str());
    let address = site
        .and_then(|s| s.address.as_deref())
        .or(alert.site.address.as_deref());
    let alert_reasons = event.alert_reasons();
    html! {
        article.card id={ "event-" (event.id) } data-event=(event.id) {
            header {
                h2 { a href={ "/events/" (event.id) } { (name) } }
                @if alert.test { span.badge.test { "test" } }
                @if site.is_none() { span.badge.unverified title="No store is enrolled under this id" { "not enrolled" } }
                @if event.hold { span.badge.hold { "evidence hold" } }
            }
            p.trigger { (trigger_text(&alert.trigger)) }
            @for (update, signature) in &event.updates {
                p.trigger.joined {
                    "Then: " (trigger_text(&update.trigger)) " at " (update.triggered_at)
                    @if signature != "valid" { " " span.badge.unverified title={ "signature " (signature) } { "unverified" } }
                }
            }
            p.meta {
                time datetime=(alert.triggered_at) data-age { (alert.triggered_at) }
                @if let Some(address) = address {
                    " · "
                    @if let Some(link) = map_link(site, Some(address)) {
                        a href=(link) rel="noreferrer" target="_blank" { (address) }
                    } @else { (address) }
                }
                @if let Some(phone) = site.and_then(|s| s.phone.as_deref()) {
                    " · " a href={ "tel:" (phone) } { (phone) }
                }
            }
            @if !alert_reasons.is_empty() {
                ul.problems { @for reason in &alert_reasons { li { (reason) } } }
            }
            (response_markup(event, site, csrf))
            div.cameras {
                @for camera in &event.cameras {
                    figure.camera data-camera=(camera.id) {
                        @if camera.snapshot {
                            a href={ "/events/" (event.id) } {
                                img src={ "/media/" (event.id) "/" (camera.id) "/snapshot" } alt={ "Snapshot from " (camera.id) } loading="lazy";
                            }
                        } @else {
                            div.placeholder { "no snapshot yet" }
                        }
                        figcaption { (camera.id) " " (verification_badge(&event.verification(camera))) }
                    }
                }
            }
        }
    }
}

async fn load(state: &AppState, id: Uuid) -> Result<Option<(Event, Option<Site>)>, Response> {
    state
        .db
        .call(move |c| {
            let Some(event) = events::get(c, id)? else {
                return Ok(None);
            };
            let site = sites::get(c, &event.site)?;
            Ok(Some((event, site)))
        })
        .await
        .map_err(|error| {
            tracing::error!(%error, "cannot read an event");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "The desk cannot read its database.\n",
            )
                .into_response()
        })
}

/// `GET /`: the live feed, newest first.
pub async fn feed(State(state): State<Arc<AppState>>, signed: Signed) -> Response {
    let found = state
        .db
        .call(|c| {
            let mut cards = Vec::new();
            for id in events::recent(c, FEED_LENGTH)? {
                if let Some(event) = events::get(c, id)? {
                    let site = sites::get(c, &event.site)?;
                    cards.push((event, site));
                }
            }
            Ok(cards)
        })
        .await;
    let cards = match found {
        Ok(cards) => cards,
        Err(error) => {
            tracing::error!(%error, "cannot read the feed");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "The desk cannot read its database.\n",
            )
                .into_response();
        }
    };
    layout(
        "Alerts · alertclip desk",
        Some(&signed),
        html! {
            h1 { "Alerts" }
            p.live data-live { "Live: new alerts appear here as they arrive." }
            section #feed {
                @for (event, site) in &cards { (card_markup(event, site.as_ref(), &signed.csrf)) }
                @if cards.is_empty() { p.empty { "No alerts yet." } }
            }
        },
    )
    .into_response()
}

/// `GET /events/{id}/card`: one card, for the feed to replace or add.
pub async fn card(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(id): Path<Uuid>,
) -> Response {
    match load(&state, id).await {
        Ok(Some((event, site))) => {
            Html(card_markup(&event, site.as_ref(), &signed.csrf).into_string()).into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, "No such event.\n").into_response(),
        Err(response) => response,
    }
}

/// `GET /feed`: server-sent events, one per change, naming what to fetch again.
pub async fn stream(
    State(state): State<Arc<AppState>>,
    _signed: Signed,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let changes = BroadcastStream::new(state.feed.subscribe()).map(|change| {
        Ok(match change {
            // The desk missed the other desks' changes: the page loads itself again.
            Ok(change) if change.kind == crate::ingest::Change::MISSED => {
                SseEvent::default().event("reload").data("{}")
            }
            Ok(change) => SseEvent::default()
                .event("change")
                .data(serde_json::to_string(&change).unwrap_or_default()),
            // This console fell behind the feed: likewise.
            Err(_) => SseEvent::default().event("reload").data("{}"),
        })
    });
    let until_stopped =
        futures_util::StreamExt::take_until(changes, state.stopping.clone().cancelled_owned());
    Sse::new(until_stopped).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// `GET /events/{id}`: everything about one event.
pub async fn event(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(id): Path<Uuid>,
) -> Response {
    let (user, client, target) = (
        signed.user.name.clone(),
        signed.client.clone(),
        id.to_string(),
    );
    let recorded = state
        .db
        .call(move |c| {
            audit::by(c, &user, "view_event", Some(&target), &client)?;
            events::history(c, &target)
        })
        .await;
    let history = recorded.unwrap_or_default();
    let (event, site) = match load(&state, id).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                message("No such event", "The desk has no event with this id."),
            )
                .into_response();
        }
        Err(response) => return response,
    };
    let alert = &event.alert;
    layout(
        &format!("{} · alertclip desk", site.as_ref().map(|s| s.name.as_str()).unwrap_or(&alert.site.name)),
        Some(&signed),
        html! {
            (card_markup(&event, site.as_ref(), &signed.csrf))
            (responses_section(&event, site.as_ref(), &signed.csrf))
            (requests_section(&event, site.as_ref(), &signed.csrf))
            section.clips {
                h2 { "Clips" }
                @for camera in &event.cameras {
                    div.clip data-camera=(camera.id) {
                        h3 { (camera.id) " " (verification_badge(&event.verification(camera))) }
                        @match event.verification(camera) {
                            Verification::Unverified(reasons) => ul.problems { @for r in &reasons { li { (r) } } },
                            _ => {}
                        }
                        @if let Some(clip) = &camera.clip {
                            @let original = format!("/media/{}/{}/clip", event.id, camera.id);
                            @let h265 = clip.manifest.as_ref().is_some_and(|m| m.codec == "h265");
                            @if h265 && camera.view {
                                video controls preload="metadata" playsinline src={ "/media/" (event.id) "/" (camera.id) "/view" } {}
                                p.derived {
                                    "Viewing copy: converted to H.264 by the desk so that browsers can play it. The evidence is the original H.265 clip: "
                                    a href=(original) download { "download the original" } "."
                                }
                            } @else if h265 {
                                p.derived {
                                    "This clip is H.265, which most browsers cannot play. "
                                    @if state.converter { "The desk is making an H.264 viewing copy: reload in a moment. " }
                                    @else { "Install ffmpeg on the desk for an H.264 viewing copy. " }
                                    a href=(original) download { "Download the original" } "."
                                }
                                video controls preload="metadata" playsinline src=(original) {}
                            } @else {
                                video controls preload="metadata" playsinline src=(original) {}
                            }
                            @if let Some(manifest) = &clip.manifest {
                                dl {
                                    dt { "From" } dd { (manifest.start) }
                                    dt { "To" } dd { (manifest.end) }
                                    dt { "Codec" } dd { (manifest.codec) @if let (Some(w), Some(h)) = (manifest.width, manifest.height) { " " (w) "×" (h) } }
                                    dt { "Size" } dd { (manifest.bytes) " bytes in " (manifest.chunks) " chunks" }
                                    dt { "SHA-256" } dd.hash { (manifest.sha256) }
                                }
                            }
                        } @else {
                            p { "The clip has not arrived yet." }
                        }
                    }
                }
            }
            section.alert {
                h2 { "Alert" }
                dl {
                    dt { "Event" } dd.hash { (event.id) }
                    dt { "Store id" } dd { (event.site) }
                    dt { "Triggered" } dd { (alert.triggered_at) }
                    dt { "Trigger" } dd { (trigger_text(&alert.trigger)) }
                    dt { "Box clock" } dd {
                        @match alert.clock.synchronized { Some(true) => "synchronised", Some(false) => "not synchronised", None => "unknown" }
                        @if let Some(source) = &alert.clock.source { " (" (source) ")" }
                    }
                    dt { "Sequence" } dd { (alert.sequence) }
                    dt { "Signature" } dd { (event.signature) @if let Some(d) = &event.signature_detail { " (" (d) ")" } }
                    dt { "Box version" } dd { (alert.device_version) }
                    @if let Some(site) = &site {
                        dt { "Enrolled key" } dd.hash { (site.fingerprint().unwrap_or_default()) }
                    }
                }
                @if !event.problems.is_empty() {
                    h3 { "Refused or failed messages" }
                    ul.problems { @for p in &event.problems { li { (p) } } }
                }
            }
            p.export {
                a.button href={ "/events/" (event.id) "/export" } download { "Export evidence (zip)" }
                " The original clips, manifests, alert and snapshots, the store's key, a verification report and the chain of custody."
            }
            @if signed.user.role >= Role::Supervisor {
                form.hold method="post" action={ "/events/" (event.id) "/hold" } {
                    input type="hidden" name="csrf" value=(signed.csrf);
                    input type="hidden" name="hold" value=(if event.hold { "0" } else { "1" });
                    button type="submit" { @if event.hold { "Release the evidence hold" } @else { "Place under evidence hold" } }
                }
            }
            section.history {
                h2 { "History" }
                table {
                    thead { tr { th { "When" } th { "Who" } th { "What" } } }
                    tbody { @for (at, who, what) in &history { tr { td { (at) } td { (who) } td { (what) } } } }
                }
            }
        },
    )
    .into_response()
}

/// An event's responses: what was sent and what the store's box made of it, and the forms
/// for the next.
fn responses_section(event: &Event, site: Option<&Site>, csrf: &str) -> Markup {
    let action = format!("/events/{}/respond", event.id);
    html! {
        section.responses {
            h2 { "Response" }
            @if event.responses.is_empty() {
                p { "No response yet: the store's staff see only that their alert was delivered." }
            } @else {
                table {
                    thead { tr { th { "Given" } th { "By" } th { "Response" } th { "At the store" } } }
                    tbody {
                        @for sent in &event.responses {
                            tr data-command=(sent.command.command_id) {
                                td { (time(sent.created)) }
                                td { (sent.command.by) }
                                td {
                                    (sent.command.summary().split_once(", by ").map_or("", |(what, _)| what))
                                    @if let Some(note) = &sent.command.note { br; span.note { (note) } }
                                }
                                td.delivery data-outcome=(sent.outcome.as_deref().unwrap_or("pending")) { (sent.delivery()) }
                            }
                        }
                    }
                }
            }
            @if site.is_none() {
                p { "This store is not enrolled: its box does not take the desk's responses." }
            } @else {
                div.respond {
                    form.respond method="post" action=(action) data-state="acknowledged" {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="state" value="acknowledged";
                        button type="submit" { "Acknowledge" }
                    }
                    form.respond method="post" action=(action) data-state="dispatched" {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="state" value="dispatched";
                        label { "ETA (minutes) " input type="number" name="eta" min="0" max="1440" inputmode="numeric"; }
                        button type="submit" { "Dispatched / en route" }
                    }
                    form.respond method="post" action=(action) data-state="on_scene" {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="state" value="on_scene";
                        button type="submit" { "On scene" }
                    }
                    form.respond method="post" action=(action) data-state="closed" {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="state" value="closed";
                        label { "Disposition "
                            select name="disposition" required {
                                @for d in Disposition::ALL { option value=(d.as_str()) { (d.words()) } }
                            }
                        }
                        label { "Note " input type="text" name="note" maxlength="1000"; }
                        button type="submit" { "Close" }
                    }
                }
            }
        }
    }
}

/// The footage asked for from this event's page, and the form to ask the store's box for
/// more: other cameras, the minutes before.
fn requests_section(event: &Event, site: Option<&Site>, csrf: &str) -> Markup {
    html! {
        section.requests {
            h2 { "More footage" }
            @if !event.requests.is_empty() {
                table {
                    thead { tr { th { "Asked" } th { "By" } th { "Cameras and time" } th { "At the store" } } }
                    tbody {
                        @for asked in &event.requests {
                            tr data-command=(asked.command.command_id) {
                                td { (time(asked.created)) }
                                td { (asked.command.by) }
                                td {
                                    (asked.command.cameras.join(", ")) ": " (asked.command.from) " to " (asked.command.to)
                                    br; span.note { (asked.command.reason) }
                                }
                                td.delivery data-outcome=(asked.outcome.as_deref().unwrap_or("pending")) {
                                    (asked.delivery())
                                    @if let Some(opened) = asked.opened { " " a href={ "/events/" (opened) } { "see the clip" } }
                                }
                            }
                        }
                    }
                }
            }
            @if site.is_none() {
                p { "This store is not enrolled: its box does not take the desk's requests." }
            } @else {
                form.request method="post" action={ "/events/" (event.id) "/request" } {
                    input type="hidden" name="csrf" value=(csrf);
                    fieldset {
                        legend { "Cameras" }
                        @for camera in &event.cameras {
                            label { input type="checkbox" name="camera" value=(camera.id) checked; " " (camera.id) }
                        }
                    }
                    label { "From (minutes ago) " input type="number" name="minutes" min="0" max="60" step="any" value="2" required; }
                    label { "Length (seconds) " input type="number" name="seconds" min="1" max="600" value="60" required; }
                    label { "Reason " input type="text" name="reason" maxlength="1000" required; }
                    button type="submit" { "Ask the store's box" }
                }
                p.derived { "The box sends what it still holds of that time (its memory is a few minutes at most), as an event of its own." }
            }
        }
    }
}

/// `POST /events/{id}/request`: an officer asks the store's box for footage (the cameras
/// ticked, from so many minutes ago, for so many seconds), signed and sent.
pub async fn request(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(id): Path<Uuid>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    if let Err(refusal) = signed.check_csrf(&field("csrf")) {
        return *refusal;
    }
    let bad =
        |text: &str| (StatusCode::BAD_REQUEST, message("Request not sent", text)).into_response();
    let cameras: Vec<String> = fields
        .iter()
        .filter(|(k, _)| k == "camera")
        .map(|(_, v)| v.clone())
        .collect();
    if cameras.is_empty() {
        return bad("Tick at least one camera.");
    }
    let Some(minutes) = field("minutes")
        .parse::<f64>()
        .ok()
        .filter(|m| (0.0..=60.0).contains(m))
    else {
        return bad("From: a number of minutes ago, 0 to 60.");
    };
    let Ok(seconds) = field("seconds").parse::<u64>() else {
        return bad("Length: a number of seconds, 1 to 600.");
    };
    if !(1..=600).contains(&seconds) {
        return bad("Length: a number of seconds, 1 to 600.");
    }
    let asked = crate::respond::Asked {
        cameras,
        back: Duration::from_secs_f64(minutes * 60.0),
        length: Duration::from_secs(seconds),
        reason: field("reason"),
    };
    let event = match enrolled(&state, id, "Request not sent", "requests").await {
        Ok(event) => event,
        Err(response) => return response,
    };
    let (signer, site_id) = (state.signer.clone(), event.site.clone());
    let (user, client) = (signed.user.name.clone(), signed.client.clone());
    let recorded = state
        .db
        .call(move |c| {
            crate::respond::record_request(c, &signer, &site_id, id, &user, &client, &asked)
        })
        .await;
    match recorded {
        Ok(Ok(_)) => {
            state.respond.notify_one();
            Redirect::to(&format!("/events/{id}")).into_response()
        }
        Ok(Err(problem)) => bad(&problem),
        Err(error) => {
            tracing::error!(%error, "cannot record a footage request");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Event `id`, if its store is enrolled: otherwise the page saying why nothing was sent
/// (`title`), naming what its box does not take (`what`: responses, requests).
async fn enrolled(state: &AppState, id: Uuid, title: &str, what: &str) -> Result<Event, Response> {
    match load(state, id).await? {
        None => Err((
            StatusCode::NOT_FOUND,
            message("No such event", "The desk has no event with this id."),
        )
            .into_response()),
        Some((_, None)) => Err((
            StatusCode::CONFLICT,
            message(
                title,
                &format!("This store is not enrolled: its box does not take the desk's {what}."),
            ),
        )
            .into_response()),
        Some((event, Some(_))) => Ok(event),
    }
}

/// What a response form sends.
#[derive(serde::Deserialize)]
pub struct Respond {
    csrf: String,
    state: String,
    #[serde(default)]
    eta: String,
    #[serde(default)]
    disposition: String,
    #[serde(default)]
    note: String,
}

/// `POST /events/{id}/respond`: an officer's response, signed and sent to the store's box.
pub async fn respond(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(id): Path<Uuid>,
    Form(form): Form<Respond>,
) -> Response {
    if let Err(refusal) = signed.check_csrf(&form.csrf) {
        return *refusal;
    }
    let bad =
        |text: &str| (StatusCode::BAD_REQUEST, message("Response not sent", text)).into_response();
    let Some(response_state) = ResponseState::parse(&form.state) else {
        return bad("Unknown response: expected acknowledged, dispatched, on_scene or closed.");
    };
    let eta_minutes = match (response_state, form.eta.trim()) {
        (_, "") => None,
        (ResponseState::Dispatched, eta) => match eta.parse::<u32>() {
            Ok(minutes) if minutes <= 1440 => Some(minutes),
            _ => return bad("The ETA is a number of minutes, 0 to 1440."),
        },
        _ => return bad("Only a dispatch has an ETA."),
    };
    let disposition = match (response_state, form.disposition.trim()) {
        (ResponseState::Closed, word) => match Disposition::parse(word) {
            Some(d) => Some(d),
            None => {
                return bad(
                    "Closing needs a disposition: arrest, gone on arrival, false alarm, test or other.",
                );
            }
        },
        (_, "") => None,
        _ => return bad("Only a closed event has a disposition."),
    };
    let note = Some(form.note.trim().to_owned()).filter(|n| !n.is_empty());
    let given = crate::respond::Given {
        state: response_state,
        eta_minutes,
        disposition,
        note,
    };
    let event = match enrolled(&state, id, "Response not sent", "responses").await {
        Ok(event) => event,
        Err(response) => return response,
    };
    let (signer, site_id) = (state.signer.clone(), event.site.clone());
    let (user, client) = (signed.user.name.clone(), signed.client.clone());
    let recorded = state
        .db
        .call(move |c| crate::respond::record(c, &signer, &site_id, id, &user, &client, &given))
        .await;
    match recorded {
        Ok(Ok(_)) => {
            state.respond.notify_one();
            let _ = state.announce.send(crate::ingest::Change {
                kind: "response",
                site: event.site,
                event: Some(id),
            });
            Redirect::to(&format!("/events/{id}")).into_response()
        }
        Ok(Err(problem)) => bad(&problem),
        Err(error) => {
            tracing::error!(%error, "cannot record a response");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// What the hold form sends.
#[derive(serde::Deserialize)]
pub struct Hold {
    csrf: String,
    hold: u8,
}

/// `POST /events/{id}/hold`: a supervisor places or releases an evidence hold.
pub async fn hold(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Path(id): Path<Uuid>,
    Form(form): Form<Hold>,
) -> Response {
    if let Err(refusal) = signed
        .check_csrf(&form.csrf)
        .and_then(|_| signed.require(Role::Supervisor))
    {
        return *refusal;
    }
    let (user, client, target) = (signed.user.name, signed.client, id.to_string());
    let held = form.hold == 1;
    let done = state
        .db
        .call(move |c| {
            c.transaction(|tx| {
                let changed = tx.execute(
                    "UPDATE events SET hold = ?2 WHERE id = ?1",
                    params![target, held],
                )?;
                if changed > 0 {
                    let action = if held { "hold" } else { "release_hold" };
                    audit::by(tx, &user, action, Some(&target), &client)?;
                }
                Ok(changed)
            })
        })
        .await;
    match done {
        Ok(0) => (StatusCode::NOT_FOUND, "No such event.\n").into_response(),
        Ok(_) => Redirect::to(&format!("/events/{id}")).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot change a hold");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// `GET /sites`: the enrolled stores and their boxes' state.
pub async fn sites(State(state): State<Arc<AppState>>, signed: Signed) -> Response {
    sites_page(&state, &signed, None, StatusCode::OK).await
}

async fn sites_page(
    state: &AppState,
    signed: &Signed,
    problem: Option<&str>,
    status: StatusCode,
) -> Response {
    let found = state
        .db
        .call(|c| Ok((sites::all(c)?, sites::box_states(c)?)))
        .await;
    let Ok((all, states)) = found else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "The desk cannot read its database.\n",
        )
            .into_response();
    };
    (
        status,
        layout(
            "Stores · alertclip desk",
            Some(signed),
            html! {
                h1 { "Stores" }
                table.sites {
                    thead { tr { th { "Store" } th { "Id" } th { "Address" } th { "Phone" } th { "Key fingerprint" } th { "Box" } th { "Cameras" } th { "Outbox" } } }
                    tbody {
                        @for site in &all {
                            tr {
                                td { (site.name) }
                                td { (site.id) }
                                td { (site.address.as_deref().unwrap_or("")) }
                                td { (site.phone.as_deref().unwrap_or("")) }
                                td.hash { (site.fingerprint().unwrap_or_default()) }
                                @match states.get(&site.id) {
                                    Some(found) => { (box_cells(found)) }
                                    None => { td.offline { "not heard from" } td {} td {} }
                                }
                            }
                        }
                    }
                }
                @if signed.user.role >= Role::Admin {
                    form.enrol method="post" action="/sites" {
                        h2 { "Enrol a store" }
                        @if let Some(problem) = problem { p.problem role="alert" { (problem) } }
                        input type="hidden" name="csrf" value=(signed.csrf);
                        label { "Site id (the box's site.id)" input name="id" required; }
                        label { "Name" input name="name" required; }
                        label { "Address" input name="address"; }
                        label { "Latitude" input name="latitude" inputmode="decimal"; }
                        label { "Longitude" input name="longitude" inputmode="decimal"; }
                        label { "Phone" input name="phone" type="tel"; }
                        label { "Public key (paste what alertclip key show prints on the box)" textarea name="public_key" rows="4" required {} }
                        button type="submit" { "Enrol" }
                    }
                }
            },
        ),
    )
        .into_response()
}

/// A store's box, camera and outbox cells: what its last status said.
fn box_cells(found: &sites::BoxState) -> Markup {
    let (down, down_count, cameras) = found.cameras_down();
    let online = found.state == "online";
    html! {
        td class=(if online { "online" } else { "offline" }) {
            (found.state) " since " (time(found.since))
            @if let Some(updated) = found.updated {
                br; small { "last report " (time(updated)) }
            }
        }
        td {
            @if cameras == 0 {
                "none reported"
            } @else if down_count == 0 {
                (cameras) " streaming"
            } @else {
                span.offline { (cameras - down_count) " of " (cameras) " streaming" }
                ul.down {
                    @for (id, state) in &down { li { (id) ": " (state) } }
                    @if down_count > down.len() { li { "and " (down_count - down.len()) " more" } }
                }
            }
        }
        td {
            @match found.backlog() {
                Some(o) if o.events > 0 => {
                    span.offline { (o.events) " events, " (megabytes(o.bytes)) " waiting" }
                }
                Some(_) => "empty",
                None => "",
            }
        }
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// What the enrolment form sends.
#[derive(serde::Deserialize)]
pub struct Enrol {
    csrf: String,
    id: String,
    name: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    latitude: String,
    #[serde(default)]
    longitude: String,
    #[serde(default)]
    phone: String,
    public_key: String,
}

fn optional(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

/// `POST /sites`: an admin enrols a store; the receiver starts again trusting its key.
pub async fn enrol(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    Form(form): Form<Enrol>,
) -> Response {
    if let Err(refusal) = signed
        .check_csrf(&form.csrf)
        .and_then(|_| signed.require(Role::Admin))
    {
        return *refusal;
    }
    let number = |field: &str, text: &str| -> Result<Option<f64>, String> {
        optional(text)
            .map(|t| {
                t.parse::<f64>()
                    .map_err(|_| format!("{field}: expected a number of degrees, found \"{t}\""))
            })
            .transpose()
    };
    let (latitude, longitude) = match (
        number("latitude", &form.latitude),
        number("longitude", &form.longitude),
    ) {
        (Ok(lat), Ok(lon)) => (lat, lon),
        (Err(e), _) | (_, Err(e)) => {
            return sites_page(&state, &signed, Some(&e), StatusCode::BAD_REQUEST).await;
        }
    };
    let site = Site {
        id: form.id.trim().to_owned(),
        name: form.name,
        address: optional(&form.address),
        latitude,
        longitude,
        phone: optional(&form.phone),
        public_key: form.public_key,
    };
    let (keys, user, client) = (
        state.keys.clone(),
        signed.user.name.clone(),
        signed.client.clone(),
    );
    let done = state
        .db
        .call(move |c| {
            c.transaction(|tx| {
                let result = sites::enrol(tx, &keys, &site).map_err(|e| e.to_string());
                if result.is_ok() {
                    audit::record(
                        tx,
                        &Entry {
                            user: Some(&user),
                            action: "enrol",
                            target: Some(&site.id),
                            client: Some(&client),
                        },
                    )?;
                }
                Ok(result)
            })
        })
        .await;
    match done {
        Ok(Ok(())) => {
            state.restart.notify_one();
            Redirect::to("/sites").into_response()
        }
        Ok(Err(problem)) => {
            sites_page(&state, &signed, Some(&problem), StatusCode::BAD_REQUEST).await
        }
        Err(error) => {
            tracing::error!(%error, "cannot enrol a store");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// Audit rows the admin page shows, newest first.
const AUDIT_PAGE: u32 = 500;

/// `GET /audit`: the audit log, newest first, and whether its chain is intact (admins).
pub async fn audit_log(State(state): State<Arc<AppState>>, signed: Signed) -> Response {
    if let Err(refusal) = signed.require(Role::Admin) {
        return *refusal;
    }
    let found = state
        .db
        .call(|c| {
            let intact = audit::verify(c)?;
            let rows = c.query_map(
                "SELECT id, at, COALESCE(\"user\", '-'), action, COALESCE(target, ''), COALESCE(client, '')
                 FROM audit ORDER BY id DESC LIMIT ?1",
                params![AUDIT_PAGE],
                |r| {
                    Ok((
                        r.get::<i64>(0)?,
                        r.get::<String>(1)?,
                        r.get::<String>(2)?,
                        r.get::<String>(3)?,
                        r.get::<String>(4)?,
                        r.get::<String>(5)?,
                    ))
                },
            )?;
            Ok((intact, rows))
        })
        .await;
    let Ok((intact, rows)) = found else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "The desk cannot read its database.\n",
        )
            .into_response();
    };
    layout(
        "Audit log · alertclip desk",
        Some(&signed),
        html! {
            h1 { "Audit log" }
            @match &intact {
                Ok(count) => p.intact { "Chain intact: " (count) " rows, none changed or deleted." },
                Err(broken) => p.problem role="alert" { "Chain BROKEN: " (broken.to_string()) },
            }
            table.audit {
                thead { tr { th { "#" } th { "When" } th { "Who" } th { "What" } th { "On" } th { "From" } } }
                tbody {
                    @for (id, at, who, what, target, client) in &rows {
                        tr {
                            td { (id) } td { (at) } td { (who) } td { (what) }
                            td {
                                @if uuid::Uuid::parse_str(target).is_ok() { a href={ "/events/" (target) } { (target) } }
                                @else { (target) }
                            }
                            td { (client) }
                        }
                    }
                }
            }
        },
    )
    .into_response()
}
