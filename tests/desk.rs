//! The officer desk end to end: a real box daemon and test camera publish through a real
//! mosquitto to `alertclip-desk` in-process, and an HTTPS client behaves as an officer's
//! browser does (cookies, forms with their CSRF token, the live feed, Range requests).

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/desk.rs"]
mod desk_rig;

use alertclip::demo::teststream::TestStream;
use alertclip::trigger::{Trigger, TriggerKind};
use alertclip_desk::accounts::Role;
use common::broker::Broker;
use common::*;
use desk_rig::{DeskRig, Feed, PASSWORD, csrf_of, site, wait_subscribed};
use reqwest::StatusCode;

const ROLLS: &str = "pre_roll = \"2s\"\npost_roll = \"1s\"";

/// A page's text, as the browser would show it.
async fn page(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// A form sent as the browser would send it.
async fn post(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    form: &[(&str, &str)],
) -> reqwest::Response {
    client.post(url).form(form).send().await.unwrap()
}

fn mqtt(broker: &Broker) -> String {
    format!("[mqtt]\nurl = \"{}\"\n", broker.url())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_reaches_the_console_live_with_its_snapshot_and_a_verified_clip_that_plays_by_range()
 {
    let broker = Broker::start("");
    let mut rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &mqtt(&broker)).await;
    let key = std::fs::read_to_string(rig.dir.path().join("evidence/device.pub")).unwrap();
    let desk = DeskRig::start(
        &broker.url(),
        &[("ana", Role::Supervisor)],
        &[site("test-site", "Deli & Grocery <b>", &key)],
    )
    .await;
    let (officer, csrf) = desk.signed_in("ana").await;
    let mut feed = Feed::open(&officer, &desk).await;
    wait_subscribed(&mut feed, broker.port).await;

    wait_buffered(rig.camera(0), 2.5).await;
    let event = rig
        .fire(Trigger::now(TriggerKind::Button, "register-2"))
        .await;
    let id = event.to_string();
    let local = rig.next_clip().await;

    // The alert, the snapshot and the clip each appear on the live feed (alerts and media
    // come on sessions of their own, so in either order).
    let mut pending = vec!["alert", "snapshot", "clip"];
    while !pending.is_empty() {
        let change = feed.wait_for(|c| c["event"] == id.as_str()).await;
        pending.retain(|kind| change["kind"] != *kind);
    }
    // The card names the store, escaped.
    let card = page(&officer, desk.at(&format!("/events/{id}/card"))).await;
    assert!(card.contains("Deli &amp; Grocery &lt;b&gt;"), "{card}");
    assert!(!card.contains("<b>"), "a store's name never becomes markup");
    assert!(card.contains("Panic button register-2"), "{card}");
    assert!(card.contains("openstreetmap.org/?mlat=40.7128"), "{card}");

    // The snapshot is shown, and the clip verified.
    assert!(
        card.contains(&format!("/media/{id}/cam/snapshot")),
        "{card}"
    );
    // Verified needs the box's clock synchronised too, which is this machine's kernel clock
    // state: where it is not, the clock is the one reason given.
    if alertclip::clock::provenance().synchronized == Some(true) {
        assert!(
            card.contains("badge verified"),
            "the clip is verified: {card}"
        );
    } else {
        assert!(
            card.contains("<span class=\"badge unverified\" title=\"the box's clock was not synchronised: times may be off\">"),
            "the signature and chain hold, only the clock is unsynchronised: {card}"
        );
    }

    let snapshot = officer
        .get(desk.at(&format!("/media/{id}/cam/snapshot")))
        .send()
        .await
        .unwrap();
    assert_eq!(snapshot.status(), StatusCode::OK);
    assert_eq!(snapshot.headers()["content-type"], "image/jpeg");
    assert_eq!(&snapshot.bytes().await.unwrap()[..2], &[0xFF, 0xD8]);

    // A video element seeks by Range requests: a part, then the whole, which is the very
    // file the box cut.
    let clip = desk.at(&format!("/media/{id}/cam/clip"));
    let part = officer
        .get(&clip)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-type"], "video/mp4");
    let total = std::fs::metadata(&local.mp4).unwrap().len();
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 100-199/{total}").as_str()
    );
    let local_bytes = std::fs::read(&local.mp4).unwrap();
    assert_eq!(part.bytes().await.unwrap(), &local_bytes[100..200]);
    let whole = officer.get(&clip).send().await.unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.bytes().await.unwrap(), local_bytes.as_slice());

    // The event page: the clip to play, the alert's fields, and the history with this view.
    let event_page = page(&officer, desk.at(&format!("/events/{id}"))).await;
    assert!(
        event_page.contains(&format!(
            "<video controls preload=\"metadata\" playsinline src=\"/media/{id}/cam/clip\""
        )),
        "{event_page}"
    );
    assert!(
        event_page.contains(&local.record.sha256),
        "the manifest's hash is shown"
    );
    assert!(
        event_page.contains("view_clip") && event_page.contains("view_event"),
        "{event_page}"
    );

    // A supervisor's hold needs the form's token: without it, refused and nothing changes.
    let hold = desk.at(&format!("/events/{id}/hold"));
    let refused = post(&officer, &hold, &[("csrf", "forged"), ("hold", "1")]).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let cross_site = officer
        .post(&hold)
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf.as_str()), ("hold", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    let held = post(&officer, &hold, &[("csrf", csrf.as_str()), ("hold", "1")]).await;
    assert_eq!(held.status(), StatusCode::SEE_OTHER);
    let held_page = page(&officer, desk.at(&format!("/events/{id}"))).await;
    assert!(
        held_page.contains("badge hold") && held_page.contains("Release the evidence hold"),
        "{held_page}"
    );

    // Media without a session: refused.
    let stranger = desk.client();
    let response = stranger
        .get(&clip)
        .header("accept", "video/mp4")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // The audit log holds it all, unbroken.
    let rows = desk
        .desk
        .db
        .call(|c| alertclip_desk::audit::verify(c))
        .await
        .unwrap()
        .unwrap();
    assert!(rows >= 5, "{rows} audit rows");
    rig.stop().await;
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logins_fail_lock_and_roles_and_sessions_are_held_to() {
    let broker = Broker::start("");
    let desk = DeskRig::start(
        &broker.url(),
        &[("olu", Role::Officer), ("ada", Role::Admin)],
        &[],
    )
    .await;
    // A page without a session asks to log in; the live feed without one is refused.
    let client = desk.client();
    let response = client.get(desk.at("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/login");
    let response = client
        .get(desk.at("/feed"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // A login form from elsewhere (no matching token) is refused before any password check.
    let response = post(
        &client,
        desk.at("/login"),
        &[("name", "olu"), ("password", PASSWORD), ("csrf", "x")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // Wrong passwords lock the account, and then even the right one fails; an unknown name
    // gets the very same answer, so that answers do not tell which names exist.
    let failed = |body: &str| {
        body.contains("Wrong name or password. After 5 failures in a row an account is locked")
    };
    for attempt in 1..=alertclip_desk::accounts::MAX_FAILURES {
        let response = desk.login(&client, "olu", "not the password").await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
        assert!(failed(&response.text().await.unwrap()));
    }
    for name in ["olu", "nobody"] {
        let response = desk.login(&client, name, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert!(failed(&response.text().await.unwrap()), "{name}");
    }
    let actions: Vec<String> = desk
        .desk
        .db
        .call(|c| {
            let mut rows = c.prepare("SELECT action FROM audit WHERE user = 'olu' ORDER BY id")?;
            rows.query_map([], |r| r.get(0))?.collect()
        })
        .await
        .unwrap();
    let expected: Vec<&str> = ["login_failed"; 5]
        .into_iter()
        .chain(["locked", "login_locked"])
        .collect();
    assert_eq!(
        actions, expected,
        "the lock, and the refusal of the right password, are recorded"
    );

    // An officer may not enrol a store; an admin may, and a bad key is named.
    let ada_key = "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n";
    let (admin, csrf) = desk.signed_in("ada").await;
    let response = post(
        &admin,
        desk.at("/sites"),
        &[
            ("csrf", csrf.as_str()),
            ("id", "s1"),
            ("name", "Shop"),
            ("public_key", ada_key),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("public key: expected the PEM public key")
    );

    let dir = tempfile::tempdir().unwrap();
    let key = alertclip::evidence::DeviceKey::load_or_create(dir.path())
        .unwrap()
        .public_pem();
    let response = post(
        &admin,
        desk.at("/sites"),
        &[
            ("csrf", csrf.as_str()),
            ("id", "s1"),
            ("name", "Shop"),
            ("public_key", key.as_str()),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let sites = page(&admin, desk.at("/sites")).await;
    assert!(
        sites.contains("Shop") && sites.contains("not heard from"),
        "{sites}"
    );

    // Logging out ends the session on the desk, not just in the browser: the old cookie,
    // sent again by hand, no longer works.
    let cookie = desk.session_cookie("ada").await;
    let bare = desk.client();
    let with_cookie = |request: reqwest::RequestBuilder| request.header("cookie", cookie.as_str());
    let response = with_cookie(bare.get(desk.at("/sites")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let token = csrf_of(&response.text().await.unwrap());
    let response = with_cookie(bare.post(desk.at("/logout")))
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let response = with_cookie(bare.get(desk.at("/sites")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/login");
    // The admin's other session is untouched.
    let response = admin.get(desk.at("/sites")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // The officer's session (once the lock is lifted) may not enrol.
    desk.desk
        .db
        .call(|c| {
            c.execute(
                "UPDATE users SET locked_until = NULL WHERE name = 'olu'",
                [],
            )
        })
        .await
        .unwrap();
    let (officer, csrf) = desk.signed_in("olu").await;
    let response = post(
        &officer,
        desk.at("/sites"),
        &[
            ("csrf", csrf.as_str()),
            ("id", "s2"),
            ("name", "Shop"),
            ("public_key", key.as_str()),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let page = page(&officer, desk.at("/sites")).await;
    assert!(
        !page.contains("Enrol a store"),
        "no enrolment form for an officer"
    );
    assert_eq!(csrf_of(&page), csrf);
    desk.stop().await;
}
