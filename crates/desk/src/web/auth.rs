//! Signing in and out, the session every other route needs, and the CSRF token its forms
//! carry. The session cookie is `__Host-` prefixed (HTTPS only, this host only), HttpOnly
//! and SameSite=Strict; its token is kept in the database only as a hash.

use std::sync::{Arc, OnceLock};

use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::{AppState, ClientAddress, client, pages, refused};
use crate::accounts::{self, Role, User};
use crate::audit;
use crate::db::now;

const SESSION: &str = "__Host-alertclip-session";
const LOGIN: &str = "__Host-alertclip-login";

/// A signed-in request.
pub struct Signed {
    /// Who.
    pub user: User,
    /// The token every form of theirs must carry.
    pub csrf: String,
    /// Their address.
    pub client: String,
}

impl Signed {
    /// Refuses unless the user's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), Box<Response>> {
        if self.user.role >= role {
            Ok(())
        } else {
            Err(Box::new(
                (
                    StatusCode::FORBIDDEN,
                    pages::message(
                        "Not allowed",
                        &format!("This needs the {} role.", role.as_str()),
                    ),
                )
                    .into_response(),
            ))
        }
    }

    /// Refuses a form whose token is not this session's.
    pub fn check_csrf(&self, token: &str) -> Result<(), Box<Response>> {
        if accounts::same_secret(token, &self.csrf) {
            Ok(())
        } else {
            Err(Box::new(refused(
                "the form's security token is missing or stale",
            )))
        }
    }
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// No session: a page asks to log in, anything else gets 401.
pub struct NotSignedIn {
    page: bool,
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        if self.page {
            Redirect::to("/login").into_response()
        } else {
            (StatusCode::UNAUTHORIZED, "Sign in first.\n").into_response()
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Signed {
    type Rejection = NotSignedIn;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let page = parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
        let rejection = NotSignedIn { page };
        let Some(token) = cookie(&parts.headers, SESSION).map(str::to_owned) else {
            return Err(rejection);
        };
        let idle = state.idle_s;
        match state
            .db
            .call(move |c| accounts::session(c, &token, now(), idle))
            .await
        {
            Ok(Some((user, csrf))) => Ok(Signed {
                user,
                csrf,
                client: client(parts),
            }),
            Ok(None) => Err(rejection),
            Err(error) => {
                tracing::error!(%error, "cannot read a session");
                Err(rejection)
            }
        }
    }
}

/// The login form.
pub async fn login_page() -> Response {
    let token = accounts::token();
    (
        [(
            header::SET_COOKIE,
            format!("{LOGIN}={token}; Path=/; Secure; HttpOnly; SameSite=Strict"),
        )],
        pages::login(&token, None),
    )
        .into_response()
}

/// What the login form sends.
#[derive(serde::Deserialize)]
pub struct Login {
    name: String,
    password: String,
    csrf: String,
}

/// A hash to check unknown names against, so that they take as long as known ones.
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| accounts::hash_password(&accounts::token()).unwrap_or_default())
}

/// Password checks at once: each takes argon2's memory (19 MiB) and a core for tens of
/// milliseconds, so a flood of logins waits here instead of exhausting the machine.
pub(super) static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The one answer to every failed login (wrong password, unknown name, locked account), so
/// that the answer does not tell which names exist.
const FAILED: &str =
    "Wrong name or password. After 5 failures in a row an account is locked for 15 minutes.";

/// Checks a login: a session and the feed, or the form again saying why not.
pub async fn login(
    State(state): State<Arc<AppState>>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    Form(form): Form<Login>,
) -> Response {
    let expected = cookie(&headers, LOGIN).unwrap_or_default();
    if expected.is_empty() || !accounts::same_secret(expected, &form.csrf) {
        return refused("the login form expired");
    }
    let again = |status: StatusCode, why: &str| {
        let token = accounts::token();
        (
            status,
            [(
                header::SET_COOKIE,
                format!("{LOGIN}={token}; Path=/; Secure; HttpOnly; SameSite=Strict"),
            )],
            pages::login(&token, Some(why)),
        )
            .into_response()
    };
    let unavailable = "The desk cannot read its accounts: try again.";
    let name = form.name.trim().to_owned();
    let lookup = name.clone();
    let candidate = match state
        .db
        .call(move |c| accounts::candidate(c, &lookup))
        .await
    {
        Ok(candidate) => candidate,
        Err(error) => {
            tracing::error!(%error, "cannot read accounts");
            return again(StatusCode::SERVICE_UNAVAILABLE, unavailable);
        }
    };
    let hash = candidate.as_ref().map(|c| c.hash.clone());
    let password = form.password;
    let Ok(_permit) = HASHING.acquire().await else {
        return again(StatusCode::SERVICE_UNAVAILABLE, unavailable);
    };
    let matches = tokio::task::spawn_blocking(move || {
        let hash = hash.as_deref().unwrap_or_else(|| decoy());
        accounts::password_matches(hash, &password)
    })
    .await
    .unwrap_or(false);
    drop(_permit);
    let (user, client) = (name.clone(), address.clone());
    let outcome = state
        .db
        .call(move |c| {
            c.transaction(|tx| {
                let at = now();
                let result = match candidate {
                    Some(candidate) => {
                        // Read again here: another attempt may have locked it meanwhile.
                        let locked = accounts::candidate(tx, &user)?
                            .and_then(|c| c.locked_until)
                            .is_some_and(|until| until > at);
                        if locked {
                            audit::by(tx, &user, "login_locked", None, &client)?;
                            None
                        } else if matches {
                            accounts::record_success(tx, candidate.user.id)?;
                            let (token, _) =
                                accounts::open_session(tx, candidate.user.id, &client, at)?;
                            audit::by(tx, &user, "login", None, &client)?;
                            Some(token)
                        } else {
                            let locked = accounts::record_failure(tx, candidate.user.id, at)?;
                            audit::by(tx, &user, "login_failed", None, &client)?;
                            if locked.is_some() {
                                audit::by(tx, &user, "locked", None, &client)?;
                            }
                            None
                        }
                    }
                    None => {
                        audit::by(tx, &user, "login_failed", None, &client)?;
                        None
                    }
                };
                Ok(result)
            })
        })
        .await;
    match outcome {
        Ok(Some(token)) => (
            [(
                header::SET_COOKIE,
                format!("{SESSION}={token}; Path=/; Secure; HttpOnly; SameSite=Strict"),
            )],
            Redirect::to("/"),
        )
            .into_response(),
        Ok(None) => again(StatusCode::UNAUTHORIZED, FAILED),
        Err(error) => {
            tracing::error!(%error, "cannot record a login");
            again(
                StatusCode::SERVICE_UNAVAILABLE,
                "The desk cannot record the login: try again.",
            )
        }
    }
}

/// What a form carrying only its token sends.
#[derive(serde::Deserialize)]
pub struct Token {
    /// The session's CSRF token.
    pub csrf: String,
}

/// Ends the session.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<Token>,
) -> Response {
    if let Err(refusal) = signed.check_csrf(&form.csrf) {
        return *refusal;
    }
    if let Some(token) = cookie(&headers, SESSION).map(str::to_owned) {
        let (user, client) = (signed.user.name.clone(), signed.client.clone());
        let _ = state
            .db
            .call(move |c| {
                accounts::close_session(c, &token)?;
                audit::by(c, &user, "logout", None, &client)
            })
            .await;
    }
    (
        [(
            header::SET_COOKIE,
            format!("{SESSION}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
        )],
        Redirect::to("/login"),
    )
        .into_response()
}
