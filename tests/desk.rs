//! The officer desk end to end: a real box daemon and test camera publish through a real
//! mosquitto to `alertclip-desk` in-process, and an HTTPS client behaves as an officer's
//! browser does (cookies, forms with their CSRF token, the live feed, Range requests).

// A test or benchmark that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]
// Where precinct servers run; the Raspberry Pi build leaves the desk's web stack out.
#![cfg(target_arch = "x86_64")]

#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/desk.rs"]
mod desk_rig;

use alertclip::clip::ClipDone;
use alertclip::demo::teststream::TestStream;
use alertclip::trigger::{Trigger, TriggerKind};
use alertclip_desk::accounts::Role;
use alertclip_desk::params;
use browser::Browser;
use common::broker::Broker;
use common::*;
use desk_rig::{ClusterRig, Database, DeskRig, Feed, PASSWORD, csrf_of, site, wait_subscribed};
use reqwest::StatusCode;
use serde_json::json;

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

/// The enrolment form, sent as an admin's browser sends it: a shop under `id` with `key`.
async fn enrol(
    desk: &DeskRig,
    client: &reqwest::Client,
    csrf: &str,
    id: &str,
    key: &str,
) -> reqwest::Response {
    let form = [
        ("csrf", csrf),
        ("id", id),
        ("name", "Shop"),
        ("public_key", key),
    ];
    post(client, desk.at("/sites"), &form).await
}

/// The box's broker; clips go in 16 KiB chunks, so that even a short one takes several.
fn mqtt(broker: &Broker) -> String {
    format!(
        "[mqtt]\nurl = \"{}\"\nchunk_size = \"16KiB\"\n",
        broker.url()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_reaches_the_console_live_with_its_snapshot_and_a_verified_clip_that_plays_by_range()
 {
    an_alert_reaches_the_console_live_with_its_snapshot_and_a_verified_clip_that_plays_by_range_on(
        Database::Sqlite,
    )
    .await;
}

/// The same on a PostgreSQL database.
#[tokio::test(flavor = "multi_thread")]
async fn on_postgresql_an_alert_reaches_the_console_live_with_its_snapshot_and_a_verified_clip_that_plays_by_range()
 {
    an_alert_reaches_the_console_live_with_its_snapshot_and_a_verified_clip_that_plays_by_range_on(
        Database::Postgres,
    )
    .await;
}

async fn an_alert_reaches_the_console_live_with_its_snapshot_and_a_verified_clip_that_plays_by_range_on(
    database: Database,
) {
    let broker = Broker::start("");
    let mut rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &mqtt(&broker)).await;
    let key = std::fs::read_to_string(rig.dir.path().join("evidence/device.pub")).unwrap();
    let desk = DeskRig::start_on(
        database,
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
    // come on sessions of their own, so in either order), the clip's chunks announced as
    // they come, before it.
    let mut pending = vec!["alert", "snapshot", "clip"];
    let mut progress = 0;
    while !pending.is_empty() {
        let change = feed.wait_for(|c| c["event"] == id.as_str()).await;
        if change["kind"] == "progress" {
            assert!(
                pending.contains(&"clip"),
                "progress after the clip: {change}"
            );
            progress += 1;
        }
        pending.retain(|kind| change["kind"] != *kind);
    }
    let chunks = local.record.bytes.div_ceil(local.chunk_size);
    assert!(
        chunks >= 2 && (1..=chunks).contains(&progress),
        "{progress} progress changes for a clip of {chunks} chunks"
    );
    // The card names the store, escaped.
    let card = page(&officer, desk.at(&format!("/events/{id}/card"))).await;
    assert!(card.contains("Deli &amp; Grocery &lt;b&gt;"), "{card}");
    assert!(!card.contains("<b>"), "a store's name never becomes markup");
    assert!(card.contains("Panic button register-2"), "{card}");
    assert!(card.contains("openstreetmap.org/?mlat=40.7128"), "{card}");
    assert!(!card.contains("arriving"), "the clip is whole: {card}");

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

    // The export: one zip that `alertclip verify` checks, and in which a flipped byte fails.
    let export = officer
        .get(desk.at(&format!("/events/{id}/export")))
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), StatusCode::OK);
    assert_eq!(export.headers()["content-type"], "application/zip");
    let unpacked = tempfile::tempdir().unwrap();
    let zip = unpacked.path().join("export.zip");
    std::fs::write(&zip, export.bytes().await.unwrap()).unwrap();
    let status = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&zip)
        .arg(unpacked.path())
        .status()
        .unwrap();
    assert!(status.success());
    let top = unpacked.path().join(format!("alertclip-test-site-{id}"));
    for name in [
        "alert.json",
        "cam.mp4",
        "cam.manifest.json",
        "snapshot-cam.jpg",
        "device.pub",
        "VERIFICATION.txt",
        "custody.csv",
        "SHA256SUMS",
    ] {
        assert!(top.join(name).is_file(), "{name} in the export");
    }
    assert_eq!(sha256sum(&top.join("cam.mp4")), local.record.sha256);
    let report = std::fs::read_to_string(top.join("VERIFICATION.txt")).unwrap();
    assert!(
        report.contains("alertclip verify <camera>.mp4 <camera>.manifest.json --pubkey device.pub"),
        "{report}"
    );
    let custody = std::fs::read_to_string(top.join("custody.csv")).unwrap();
    assert!(
        custody.contains(",ana,view_clip") && custody.contains(",ana,export"),
        "{custody}"
    );
    let sums = std::process::Command::new("sha256sum")
        .args(["--quiet", "-c", "SHA256SUMS"])
        .current_dir(&top)
        .status()
        .unwrap();
    assert!(sums.success(), "every file matches SHA256SUMS");
    let verify = |clip: &str| {
        alertclip_command()
            .arg("verify")
            .arg(top.join(clip))
            .arg(top.join("cam.manifest.json"))
            .arg("--pubkey")
            .arg(top.join("device.pub"))
            .output()
            .unwrap()
    };
    let valid = verify("cam.mp4");
    assert!(
        valid.status.success(),
        "{}",
        String::from_utf8_lossy(&valid.stdout)
    );
    assert!(String::from_utf8_lossy(&valid.stdout).contains("VALID"));
    let mut flipped = std::fs::read(top.join("cam.mp4")).unwrap();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    std::fs::write(top.join("flipped.mp4"), flipped).unwrap();
    let invalid = verify("flipped.mp4");
    assert_eq!(invalid.status.code(), Some(1), "a flipped byte fails");

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

    // The store's box, from its retained status: online, its camera streaming. (Recorded
    // before the feed opened, or announced on it since.)
    loop {
        let sites = page(&officer, desk.at("/sites")).await;
        if sites.contains("1 streaming") {
            assert!(
                sites.contains("<td class=\"online\">online since"),
                "{sites}"
            );
            break;
        }
        feed.wait_for(|c| c["kind"] == "site").await;
    }
    rig.stop().await;
    // Its last will: offline.
    loop {
        let sites = page(&officer, desk.at("/sites")).await;
        if sites.contains("<td class=\"offline\">offline since") {
            break;
        }
        feed.wait_for(|c| c["kind"] == "site").await;
    }
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
            c.query_map(
                "SELECT action FROM audit WHERE \"user\" = 'olu' ORDER BY id",
                params![],
                |r| r.get(0),
            )
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
    let response = enrol(&desk, &admin, &csrf, "s1", ada_key).await;
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
    let response = enrol(&desk, &admin, &csrf, "s1", key.as_str()).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let sites = page(&admin, desk.at("/sites")).await;
    assert!(
        sites.contains("Shop") && sites.contains("not heard from"),
        "{sites}"
    );

    // The audit page: the admin's, saying the chain is intact, with the enrolment in it.
    let audit = page(&admin, desk.at("/audit")).await;
    assert!(audit.contains("Chain intact:"), "{audit}");
    assert!(audit.contains("<td>enrol</td>"), "{audit}");

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
                params![],
            )
        })
        .await
        .unwrap();
    let (officer, csrf) = desk.signed_in("olu").await;
    let response = enrol(&desk, &officer, &csrf, "s2", key.as_str()).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let page = page(&officer, desk.at("/sites")).await;
    assert!(
        !page.contains("Enrol a store"),
        "no enrolment form for an officer"
    );
    assert_eq!(csrf_of(&page), csrf);
    let response = officer.get(desk.at("/audit")).send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "the audit page is an admin's"
    );
    desk.stop().await;
}

/// The password an accounts page shows once.
fn shown_password(page: &str) -> String {
    let start = page
        .find("<code class=\"password\">")
        .unwrap_or_else(|| panic!("no password shown: {page}"))
        + "<code class=\"password\">".len();
    page[start..start + page[start..].find('<').unwrap()].to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_manages_accounts_in_the_console_and_every_change_holds_and_is_audited() {
    an_admin_manages_accounts_in_the_console_and_every_change_holds_and_is_audited_on(
        Database::Sqlite,
    )
    .await;
}

/// The same on a PostgreSQL database.
#[tokio::test(flavor = "multi_thread")]
async fn on_postgresql_an_admin_manages_accounts_in_the_console_and_every_change_holds_and_is_audited()
 {
    an_admin_manages_accounts_in_the_console_and_every_change_holds_and_is_audited_on(
        Database::Postgres,
    )
    .await;
}

async fn an_admin_manages_accounts_in_the_console_and_every_change_holds_and_is_audited_on(
    database: Database,
) {
    let broker = Broker::start("");
    let desk = DeskRig::start_on(
        database,
        &broker.url(),
        &[
            ("ada", Role::Admin),
            ("olu", Role::Officer),
            ("kim", Role::Officer),
        ],
        &[],
    )
    .await;
    let (admin, csrf) = desk.signed_in("ada").await;
    let (officer, officer_csrf) = desk.signed_in("olu").await;

    // Only admins see or change accounts.
    let response = officer.get(desk.at("/users")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = post(
        &officer,
        desk.at("/users"),
        &[("csrf", &officer_csrf), ("name", "eve"), ("role", "admin")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = post(
        &admin,
        desk.at("/users"),
        &[("csrf", "forged"), ("name", "eve"), ("role", "admin")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // A new account: its password is made by the desk and shown once, and it signs in.
    let add = |name: &'static str, role: &'static str| {
        let (admin, csrf) = (admin.clone(), csrf.clone());
        let url = desk.at("/users");
        async move {
            post(
                &admin,
                url,
                &[("csrf", &csrf), ("name", name), ("role", role)],
            )
            .await
        }
    };
    let response = add("zoe", "supervisor").await;
    assert_eq!(response.status(), StatusCode::OK);
    let zoe_password = shown_password(&response.text().await.unwrap());
    let zoe = desk.client();
    let response = desk.login(&zoe, "zoe", &zoe_password).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let response = add("zoe", "officer").await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("&quot;zoe&quot; is taken")
    );
    let response = add("no spaces", "officer").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("expected 1 to 64 letters, digits")
    );

    let change = |name: &str, change: &'static str, role: &'static str| {
        let (admin, csrf) = (admin.clone(), csrf.clone());
        let url = desk.at(&format!("/users/{name}"));
        async move {
            post(
                &admin,
                url,
                &[("csrf", &csrf), ("change", change), ("role", role)],
            )
            .await
        }
    };
    // A new password ends the account's sessions; the old password no longer works.
    let response = change("olu", "password", "").await;
    assert_eq!(response.status(), StatusCode::OK);
    let olu_password = shown_password(&response.text().await.unwrap());
    let response = officer.get(desk.at("/")).send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "olu's session ended"
    );
    let again = desk.client();
    let response = desk.login(&again, "olu", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = desk.login(&again, "olu", &olu_password).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);

    // A role takes effect on the account's next request.
    assert_eq!(
        again.get(desk.at("/users")).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let response = change("olu", "role", "admin").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        again.get(desk.at("/users")).send().await.unwrap().status(),
        StatusCode::OK
    );

    // A locked account is shown locked, and unlocked.
    for _ in 0..alertclip_desk::accounts::MAX_FAILURES {
        desk.login(&desk.client(), "kim", "not the password").await;
    }
    let accounts = page(&admin, desk.at("/users")).await;
    assert!(accounts.contains("locked until"), "{accounts}");
    let response = change("kim", "unlock", "").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let response = desk.login(&desk.client(), "kim", PASSWORD).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);

    // Disabled: its session ends and it cannot sign in, with the same answer as a wrong
    // password; enabled again, it can.
    let response = change("zoe", "disable", "").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let response = zoe.get(desk.at("/")).send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "zoe's session ended"
    );
    let response = desk.login(&desk.client(), "zoe", &zoe_password).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Wrong name or password.")
    );
    let accounts = page(&admin, desk.at("/users")).await;
    assert!(accounts.contains("disabled"), "{accounts}");
    change("zoe", "enable", "").await;
    let response = desk.login(&desk.client(), "zoe", &zoe_password).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);

    // An admin's own account is another admin's to change; nor is a made-up change made.
    let response = change("ada", "disable", "").await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = change("kim", "promote", "").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = change("nobody", "unlock", "").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Every change is in the audit log, by whom, on whom.
    let rows: Vec<(String, String)> = desk
        .desk
        .db
        .call(|c| {
            c.query_map(
                "SELECT action, target FROM audit WHERE \"user\" = 'ada' AND action LIKE 'user_%'
                 ORDER BY id",
                params![],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
        .unwrap();
    let expected = [
        ("user_add:supervisor", "zoe"),
        ("user_password", "olu"),
        ("user_role:admin", "olu"),
        ("user_unlock", "kim"),
        ("user_disable", "zoe"),
        ("user_enable", "zoe"),
    ];
    assert_eq!(
        rows,
        expected
            .iter()
            .map(|(a, t)| (a.to_string(), t.to_string()))
            .collect::<Vec<_>>()
    );
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_in_chromium_adds_an_account_whose_shown_password_signs_in() {
    let broker = Broker::start("");
    let desk = DeskRig::start(&broker.url(), &[("ada", Role::Admin)], &[]).await;
    let browser = Browser::start().await;
    browser.goto(&desk.at("/")).await;
    browser.sign_in("ada", PASSWORD).await;

    // Accounts, from the menu; a supervisor added by the form.
    browser.click("nav a[href='/users']").await;
    browser.appears("form.add").await;
    browser.fill("form.add input[name=name]", "lee").await;
    browser
        .run(
            "document.querySelector('form.add select[name=role]').value = 'supervisor'; return true;",
            vec![],
        )
        .await;
    browser.click("form.add button[type=submit]").await;
    browser.appears("code.password").await;
    let password = browser.text("code.password").await;
    assert_eq!(password.len(), 24, "{password}");
    assert!(
        browser
            .text("tr[data-user=lee]")
            .await
            .contains("supervisor")
    );
    browser.screenshot("accounts-desktop").await;

    // Signed out, the new account signs in with what was shown.
    browser.click("nav form button[type=submit]").await;
    browser.sign_in("lee", &password).await;
    assert_eq!(browser.text(".who").await, "lee · supervisor");
    browser.close().await;
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_officer_in_chromium_sees_the_alert_arrive_plays_the_clip_and_the_layout_holds_on_a_phone()
 {
    let broker = Broker::start("");
    // An H.264 camera, and an H.265 one whose clip Chromium can only play as the desk's
    // viewing copy.
    let mut rig = Rig::start(
        &[TestStream::h264("/cam"), TestStream::h265("/hevc")],
        ROLLS,
        &mqtt(&broker),
    )
    .await;
    let key = std::fs::read_to_string(rig.dir.path().join("evidence/device.pub")).unwrap();
    let name = "Deli & Grocery <b>";
    let desk = DeskRig::start(
        &broker.url(),
        &[("ana", Role::Officer)],
        &[site("test-site", name, &key)],
    )
    .await;
    // A second session, over HTTP, tells when the desk's receiver is subscribed and when
    // the clip has arrived.
    let (watcher, _) = desk.signed_in("ana").await;
    let mut feed = Feed::open(&watcher, &desk).await;
    wait_subscribed(&mut feed, broker.port).await;

    // The officer logs in as a person would.
    let browser = Browser::start().await;
    browser.goto(&desk.at("/")).await;
    browser.sign_in("ana", PASSWORD).await;
    // A mark that a reload would wipe: the alert must arrive without one.
    browser
        .run("window.stayed = true; return true;", vec![])
        .await;

    for camera in 0..2 {
        wait_buffered(rig.camera(camera), 2.5).await;
    }
    let event = rig
        .fire(Trigger::now(TriggerKind::Button, "register-2"))
        .await;
    let id = event.to_string();
    let mut local = [rig.next_clip().await, rig.next_clip().await];
    local.sort_by(|a, b| a.record.camera.cmp(&b.record.camera));
    let (local, local_hevc) = (&local[0], &local[1]);
    assert_eq!(
        (
            local.record.camera.as_str(),
            local_hevc.record.camera.as_str()
        ),
        ("cam", "hevc")
    );
    let card = format!("#event-{id}");
    browser.appears(&card).await;
    let stayed = browser.run("return window.stayed === true;", vec![]).await;
    assert_eq!(stayed, json!(true), "the alert appeared without a reload");
    // The store's name is text on the page, not markup.
    assert_eq!(browser.text(&format!("{card} h2")).await, name);

    // The snapshot appears (the card is fetched again when it arrives) and is a picture.
    let snapshot = format!("{card} figure[data-camera=cam] img");
    browser.appears(&snapshot).await;
    let size = browser
        .run(
            "const [selector] = args; const img = document.querySelector(selector);
             await img.decode(); return [img.naturalWidth, img.naturalHeight];",
            vec![json!(snapshot)],
        )
        .await;
    assert_eq!(size, json!([320, 240]));
    browser.screenshot("feed-desktop").await;
    browser.resize(390, 844).await;
    let fits = browser
        .run(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            vec![],
        )
        .await;
    assert_eq!(fits, json!(true), "nothing wider than a phone's screen");
    browser.screenshot("feed-phone").await;
    browser.resize(1280, 900).await;

    // The event page, once both clips and the H.265 one's viewing copy are in (each
    // announced as a change of kind clip): both videos play and seek.
    let mut clips = 0;
    while clips < 3 {
        let change = feed.wait_for(|c| c["event"] == id.as_str()).await;
        clips += usize::from(change["kind"] == "clip");
    }
    browser.click(&format!("{card} h2 a")).await;
    browser.appears(".clip[data-camera=hevc] video").await;
    let view = browser
        .run(
            "return document.querySelector('.clip[data-camera=hevc] video').getAttribute('src');",
            vec![],
        )
        .await;
    assert_eq!(
        view,
        json!(format!("/media/{id}/hevc/view")),
        "the H.265 clip plays as its viewing copy"
    );
    assert!(
        browser
            .text(".clip[data-camera=hevc] .derived")
            .await
            .contains("Viewing copy")
    );
    for (camera, cut) in [("cam", local), ("hevc", local_hevc)] {
        let played = browser
        .run(
            "const video = document.querySelector(`.clip[data-camera=${args[0]}] video`);
             video.muted = true;
             await video.play();
             await new Promise((resolve) => {
               const check = () => (video.currentTime > 0.5 && video.readyState === 4)
                 ? resolve() : video.addEventListener('timeupdate', check, {once: true});
               check();
             });
             video.pause();
             const seeked = new Promise((resolve) => video.addEventListener('seeked', resolve, {once: true}));
             video.currentTime = 2.0;
             await seeked;
             return {readyState: video.readyState, at: video.currentTime, duration: video.duration,
                     error: video.error && video.error.code};",
            vec![json!(camera)],
        )
        .await;
        assert_eq!(played["error"], json!(null), "{camera}: {played}");
        assert!(
            played["readyState"].as_u64().unwrap() >= 2,
            "{camera}: {played}"
        );
        assert!(
            (played["at"].as_f64().unwrap() - 2.0).abs() < 0.5,
            "{camera} seeked: {played}"
        );
        let duration = played["duration"].as_f64().unwrap();
        let expected = cut.record.duration_ms as f64 / 1000.0;
        assert!(
            (duration - expected).abs() < 0.5,
            "{camera}: {duration} s in the browser, {expected} s cut"
        );
    }
    browser.screenshot("event-desktop").await;
    browser.resize(390, 844).await;
    let fits = browser
        .run(
            "return document.documentElement.scrollWidth <= window.innerWidth
               || Array.from(document.querySelectorAll('body *'))
                    .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
                    .map((e) => e.tagName + '.' + e.className).slice(0, 8);",
            vec![],
        )
        .await;
    assert_eq!(
        fits,
        json!(true),
        "the event page is no wider than a phone's screen"
    );
    browser.screenshot("event-phone").await;
    browser.close().await;
    rig.stop().await;
    desk.stop().await;
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found
}

/// A desk with the store `test-site` ("Corner Shop") enrolled with `key`, and an officer's
/// session watching its live feed, once the desk receives.
async fn corner_shop(
    database: Database,
    broker: &Broker,
    key: &str,
) -> (DeskRig, reqwest::Client, Feed) {
    let desk = DeskRig::start_on(
        database,
        &broker.url(),
        &[("ana", Role::Officer)],
        &[site("test-site", "Corner Shop", key)],
    )
    .await;
    let (officer, _) = desk.signed_in("ana").await;
    let mut feed = Feed::open(&officer, &desk).await;
    wait_subscribed(&mut feed, broker.port).await;
    (desk, officer, feed)
}

/// A well-formed alert from `test-site`'s button `b1` (unsigned).
fn button_alert(event: uuid::Uuid, name: &str, note: Option<&str>) -> serde_json::Value {
    json!({
        "schema": "alertclip.alert.v1",
        "event_id": event,
        "site": {"id": "test-site", "name": name},
        "trigger": {"kind": "button", "source": "b1", "note": note},
        "triggered_at": "2026-12-01T17:22:11.163Z",
        "cameras": [{"id": "cam", "pre_roll_s": 2.0, "post_roll_s": 1.0}],
        "clock": {"synchronized": true},
        "test": false,
        "device_version": "0.1.0",
        "sequence": 1,
        "previous_alert_sha256": null
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_publisher_writes_nothing_outside_the_media_directory_and_nothing_shows_as_verified()
 {
    a_hostile_publisher_writes_nothing_outside_the_media_directory_and_nothing_shows_as_verified_on(Database::Sqlite).await;
}

/// The same on a PostgreSQL database.
#[tokio::test(flavor = "multi_thread")]
async fn on_postgresql_a_hostile_publisher_writes_nothing_outside_the_media_directory_and_nothing_shows_as_verified()
 {
    a_hostile_publisher_writes_nothing_outside_the_media_directory_and_nothing_shows_as_verified_on(Database::Postgres).await;
}

async fn a_hostile_publisher_writes_nothing_outside_the_media_directory_and_nothing_shows_as_verified_on(
    database: Database,
) {
    let broker = Broker::start("");
    let (genuine, forger) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = alertclip::evidence::DeviceKey::load_or_create(genuine.path())
        .unwrap()
        .public_pem();
    let forger = alertclip::evidence::DeviceKey::load_or_create(forger.path()).unwrap();
    let (desk, officer, mut feed) = corner_shop(database, &broker, &key).await;

    // An alert for the enrolled store, well formed, but signed by another key.
    let event = uuid::Uuid::now_v7();
    let alert = button_alert(
        event,
        "<script>alert(1)</script>",
        Some("<img src=x onerror=alert(1)>"),
    );
    let forged = forger.sign(&serde_json::to_vec(&alert).unwrap());
    let forged = String::from_utf8(forged).unwrap();
    let pub_ = |topic: &str, payload: &str| {
        common::broker::mosquitto_pub(broker.port, topic, payload, &[]);
    };
    pub_(&format!("alertclip/v1/test-site/events/{event}"), &forged);
    // Topics that try to leave the media directory, and a manifest far over any limit.
    let other = uuid::Uuid::now_v7();
    for topic in [
        format!("alertclip/v1/../events/{other}"),
        format!("alertclip/v1/.../events/{other}"),
        format!("alertclip/v1/test-site/events/{event}/snapshot/.."),
        format!("alertclip/v1/test-site/events/{event}/snapshot/..%2F..%2Fescape"),
        format!("alertclip/v1/test-site/events/{event}/clip/../0"),
        "alertclip/v1/test-site/events/../clip/cam/0".to_owned(),
    ] {
        pub_(&topic, &forged);
    }
    let huge = format!(
        "{{\"schema\":\"alertclip.manifest.v1\",\"chunk_sha256\":[\"{}\"]}}",
        "0".repeat(2 << 20)
    );
    let manifest = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(manifest.path(), huge).unwrap();
    common::broker::mosquitto_pub_with(
        broker.port,
        &format!("alertclip/v1/test-site/events/{event}/clip/cam"),
        &["-f", manifest.path().to_str().unwrap()],
    );

    // The forged alert is shown, flagged, its text escaped.
    feed.wait_for(|c| c["kind"] == "alert" && c["event"] == event.to_string())
        .await;
    let card = page(&officer, desk.at(&format!("/events/{event}/card"))).await;
    assert!(
        card.contains("not the key enrolled for this store"),
        "{card}"
    );
    assert!(!card.contains("<img src=x"), "{card}");
    assert!(
        card.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{card}"
    );
    // Chunks for it, without a manifest yet: the card counts them as they come.
    for index in 0..2 {
        pub_(
            &format!("alertclip/v1/test-site/events/{event}/clip/cam/{index}"),
            &"x".repeat(1000),
        );
        feed.wait_for(|c| c["kind"] == "progress" && c["event"] == event.to_string())
            .await;
    }
    let card = page(&officer, desk.at(&format!("/events/{event}/card"))).await;
    assert!(card.contains("arriving: 2 chunks so far, 0.0 MB"), "{card}");
    // Chunks under a camera the alert does not name, and a big status for a store that is
    // not enrolled, cost no rows and no body.
    for index in 0..3 {
        pub_(
            &format!("alertclip/v1/test-site/events/{event}/clip/ghost-{index}/0"),
            "x",
        );
    }
    let cameras = (0..2000)
        .map(|i| format!("\"c{i}\":{{\"state\":\"failed\",\"fps\":0,\"kbps\":0,\"buffered_s\":0}}"))
        .collect::<Vec<_>>()
        .join(",");
    pub_(
        "alertclip/v1/stranger/status",
        &format!(
            "{{\"schema\":\"alertclip.status.v1\",\"state\":\"online\",\"cameras\":{{{cameras}}}}}"
        ),
    );
    // Everything published so far has been handled once a new probe comes back on both
    // sessions (each handles its messages in order).
    wait_subscribed(&mut feed, broker.port).await;
    let everything = page(&officer, desk.at("/")).await;
    assert!(
        !everything.contains("badge verified"),
        "nothing shows as verified"
    );
    let (ghosts, stranger): (i64, Option<Option<String>>) = desk
        .desk
        .db
        .call(|c| {
            let ghosts = c.query_row(
                "SELECT COUNT(*) FROM arriving WHERE camera LIKE 'ghost-%'",
                params![],
                |r| r.get(0),
            )?;
            let stranger = c
                .query_row(
                    "SELECT body FROM site_status WHERE site = 'stranger'",
                    params![],
                    |r| r.get(0),
                )
                .ok();
            Ok((ghosts, stranger))
        })
        .await
        .unwrap();
    assert_eq!(ghosts, 0, "no progress for cameras the alert does not name");
    assert_eq!(stranger, Some(None), "its state, without its body");

    // The desk's files: its config and certificate, its signing key, the database, keys and
    // media, nothing else anywhere under its directory, and under media only safe names.
    let root = desk.dir();
    for file in files_under(root) {
        let allowed = ["desk.toml", "desk.crt", "desk.key", "state/signing.key"]
            .contains(&file.as_str())
            || file.starts_with("state/desk.sqlite")
            || file.starts_with("state/keys/")
            || file.starts_with("state/media/");
        assert!(allowed, "{file} written where nothing should be");
        assert!(!file.contains(".."), "{file}");
    }
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_ends_on_the_desk_with_its_alert_and_verified_clip() {
    // `alertclip demo` finds the desk beside itself, where cargo builds both.
    let program =
        std::path::Path::new(env!("CARGO_BIN_EXE_alertclip")).with_file_name("alertclip-desk");
    assert!(
        program.is_file(),
        "{} missing: cargo test --workspace builds it (or cargo build -p alertclip-desk)",
        program.display()
    );
    let out = tempfile::tempdir().unwrap();
    let done = alertclip_command_async()
        .args(["demo", "--pre-roll", "2s", "--post-roll", "1s", "--out"])
        .arg(out.path())
        .env("ALERTCLIP_DESK", &program)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("the officer desk has it: https://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no desk URL in: {stdout}"));
    let event: uuid::Uuid = line.rsplit('/').next().unwrap().parse().unwrap();
    assert!(
        stdout.contains("sign in as demo with password "),
        "{stdout}"
    );

    // What the desk recorded, read from its database after it stopped: the event, its
    // snapshot, and the clip signed by the enrolled demo box.
    let db = alertclip_desk::db::Db::open(out.path().join("desk/desk.sqlite")).unwrap();
    let recorded = db
        .call(move |c| alertclip_desk::events::get(c, event))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("event {event} not on the desk"));
    assert_eq!(recorded.site, "demo");
    let camera = &recorded.cameras[0];
    assert!(camera.snapshot, "{camera:?}");
    assert_eq!(
        camera.clip.as_ref().map(|c| c.signature.as_str()),
        Some("valid"),
        "{camera:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_was_kept_but_not_recorded_before_the_desk_was_killed_is_recorded_when_it_starts() {
    let broker = Broker::start("");
    let dir = tempfile::tempdir().unwrap();
    let device = alertclip::evidence::DeviceKey::load_or_create(dir.path()).unwrap();
    let (desk, _, mut feed) = corner_shop(Database::Sqlite, &broker, &device.public_pem()).await;

    // An alert and a snapshot, as the box sends them.
    let event = uuid::Uuid::now_v7();
    let alert = button_alert(event, "Corner Shop", None);
    let signed = String::from_utf8(device.sign(&serde_json::to_vec(&alert).unwrap())).unwrap();
    let base = format!("alertclip/v1/test-site/events/{event}");
    common::broker::mosquitto_pub(broker.port, &base, &signed, &[]);
    let jpeg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        jpeg.path(),
        [0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F'],
    )
    .unwrap();
    common::broker::mosquitto_pub_with(
        broker.port,
        &format!("{base}/snapshot/cam"),
        &["-f", jpeg.path().to_str().unwrap()],
    );
    // (Alerts and media come on sessions of their own: in either order.)
    let mut pending = vec!["alert", "snapshot"];
    while !pending.is_empty() {
        let change = feed.wait_for(|c| c["event"] == event.to_string()).await;
        pending.retain(|kind| change["kind"] != *kind);
    }

    // Killed after the receiver kept the files, before the rows were written: as if the
    // rows never were.
    let id = event.to_string();
    let desk = desk
        .restart(|db| {
            db.call_blocking(move |c| {
                c.execute("DELETE FROM media WHERE event = ?1", params![&id])?;
                c.execute("DELETE FROM events WHERE id = ?1", params![&id])?;
                Ok(())
            })
            .unwrap()
        })
        .await;
    desk.desk.imported().await;
    let recorded = desk
        .desk
        .db
        .call(move |c| alertclip_desk::events::get(c, event))
        .await
        .unwrap()
        .expect("the event is recorded again from the files the receiver kept");
    assert_eq!(recorded.signature, "valid", "its signature checked again");
    assert!(recorded.cameras[0].snapshot, "{:?}", recorded.cameras);
    let (officer, _) = desk.signed_in("ana").await;
    let card = page(&officer, desk.at(&format!("/events/{event}/card"))).await;
    assert!(card.contains("Corner Shop"), "{card}");
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_break_in_a_box_chain_marks_the_alert_it_was_found_at() {
    let broker = Broker::start("");
    let dir = tempfile::tempdir().unwrap();
    let device = alertclip::evidence::DeviceKey::load_or_create(dir.path()).unwrap();
    let (desk, _, mut feed) = corner_shop(Database::Sqlite, &broker, &device.public_pem()).await;
    // Alert 1, then alert 3: the second comes after a gap.
    let (first, second) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    for (event, sequence) in [(first, 1), (second, 3)] {
        let mut alert = button_alert(event, "Corner Shop", None);
        alert["sequence"] = json!(sequence);
        let signed = String::from_utf8(device.sign(&serde_json::to_vec(&alert).unwrap())).unwrap();
        common::broker::mosquitto_pub(
            broker.port,
            &format!("alertclip/v1/test-site/events/{event}"),
            &signed,
            &[],
        );
        feed.wait_for(|c| c["kind"] == "alert" && c["event"] == event.to_string())
            .await;
    }
    let chain = |event| {
        let db = desk.desk.db.clone();
        async move {
            db.call(move |c| alertclip_desk::events::get(c, event))
                .await
                .unwrap()
                .unwrap()
                .chain_problem
        }
    };
    assert_eq!(chain(first).await, None);
    let problem = chain(second)
        .await
        .expect("the gap marks the alert after it");
    assert!(problem.contains("alert 3 follows alert 1"), "{problem}");
    desk.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_officer_responds_in_chromium_and_the_stores_light_shows_acknowledged_then_help_on_the_way_then_closed()
 {
    use alertclip::trigger::buttons::light::Pattern;
    let broker = Broker::start("");
    // The desk first, for its signing key; the store is enrolled once its box has a key.
    let desk = DeskRig::start(&broker.url(), &[("ana", Role::Officer)], &[]).await;
    let desk_key = std::fs::read_to_string(desk.dir().join("state/signing.key")).unwrap();
    let desk_public = {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&desk_key).unwrap();
        alertclip_wire::signature::public_pem(&key.verifying_key())
    };
    let tail = format!(
        "{}[[button]]\nid = \"office\"\nkind = \"mqtt\"\nlocation = \"back office\"\n\
         topic = \"zigbee2mqtt/office\"\nmatch = {{ action = \"single\" }}\n\
         [feedback]\nline = \"GPIO22\"\n\
         [desk]\nkeys = ['''\n{desk_public}''']\n",
        mqtt(&broker)
    );
    let rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &tail).await;
    let box_key = std::fs::read_to_string(rig.dir.path().join("evidence/device.pub")).unwrap();
    let desk = desk.enrolling("test-site", "Corner Deli", &box_key).await;
    let (watcher, _) = desk.signed_in("ana").await;
    let mut feed = Feed::open(&watcher, &desk).await;
    wait_subscribed(&mut feed, broker.port).await;
    wait_buffered(rig.camera(0), 2.5).await;
    let light = rig.daemon.lights()[0].pattern.clone();
    let shows = |pattern: Pattern| {
        let mut light = light.clone();
        async move {
            tokio::time::timeout(
                std::time::Duration::from_secs(60),
                light.wait_for(|p| *p == pattern),
            )
            .await
            .unwrap_or_else(|_| panic!("the store's light never showed {pattern:?}"))
            .unwrap();
        }
    };

    let browser = Browser::start().await;
    browser.goto(&desk.at("/")).await;
    browser.sign_in("ana", PASSWORD).await;

    // Staff press the button; the alert's card comes with an Acknowledge button.
    common::broker::mosquitto_pub(
        broker.port,
        "zigbee2mqtt/office",
        r#"{"action":"single"}"#,
        &[],
    );
    let alert = feed.wait_for(|c| c["kind"] == "alert").await;
    let id = alert["event"].as_str().unwrap().to_owned();
    let card = format!("#event-{id}");
    browser
        .appears(&format!("{card} form.acknowledge button"))
        .await;
    shows(Pattern::On).await;
    browser
        .click(&format!("{card} form.acknowledge button"))
        .await;
    // On the event page, the card says when the store's box has it.
    browser
        .appears(&format!(
            "{card} p.response[data-state=acknowledged] .delivery[data-outcome=applied]"
        ))
        .await;
    shows(Pattern::DoubleFlash).await;
    // The box's status names the response beside its event (the footage asked for below
    // becomes an event of its own, newer).
    let response_of = |id: &str| {
        rig.daemon
            .recent_events()
            .into_iter()
            .find(|e| e.event_id.to_string() == id)
            .and_then(|e| e.response)
            .expect("the event's response in the box's status")
    };
    let shown = response_of(&id);
    assert_eq!((shown.by.as_str(), shown.desk.is_empty()), ("ana", false));

    // More footage: the seconds before, asked of the store's box from the event page. It
    // comes as an event of its own, its clip signed and naming who asked and why.
    browser
        .replace("form.request input[name=minutes]", "0.05")
        .await;
    browser
        .replace("form.request input[name=seconds]", "2")
        .await;
    browser
        .fill("form.request input[name=reason]", "who came in before")
        .await;
    browser.click("form.request button[type=submit]").await;
    // The new event's alert and its clip come on the desk's two broker sessions, in an
    // order they decide.
    let (mut asked, mut clips) = (None::<String>, std::collections::HashSet::new());
    while asked.as_ref().is_none_or(|a| !clips.contains(a)) {
        let change = feed.next().await;
        match (change["kind"].as_str(), change["event"].as_str()) {
            (Some("alert"), Some(event)) if event != id => asked = Some(event.to_owned()),
            (Some("clip"), Some(event)) => {
                clips.insert(event.to_owned());
            }
            _ => {}
        }
    }
    let asked = asked.unwrap();
    // The box's answer, recorded against the event it was asked from, may come before or
    // after: looked up, and looked up again on each change to that event's responses.
    loop {
        let key = id.clone();
        let opened: Option<String> = desk
            .desk
            .db
            .call(move |c| {
                c.query_row(
                    "SELECT answer_event FROM commands WHERE event = ?1 AND kind = 'request'",
                    params![key],
                    |r| r.get(0),
                )
            })
            .await
            .unwrap();
        if let Some(opened) = opened {
            assert_eq!(opened, asked, "the box answers with the event it opened");
            break;
        }
        feed.wait_for(|c| c["kind"] == "response" && c["event"] == id.as_str())
            .await;
    }
    let (signature, manifest) = desk.clip_record(&asked).await;
    assert_eq!(signature, "valid");
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let trigger = &manifest["triggers"][0];
    assert_eq!(trigger["kind"], "remote");
    assert!(
        trigger["source"].as_str().unwrap().starts_with("ana@"),
        "{trigger}"
    );
    assert_eq!(trigger["note"], "who came in before");
    browser.goto(&desk.at(&format!("/events/{id}"))).await;
    browser
        .appears(&format!(
            "section.requests td.delivery[data-outcome=applied] a[href='/events/{asked}']"
        ))
        .await;
    browser.goto(&desk.at(&format!("/events/{asked}"))).await;
    assert!(
        browser
            .text("p.trigger")
            .await
            .starts_with("Footage requested by ana@")
    );
    browser.goto(&desk.at(&format!("/events/{id}"))).await;

    // Help on the way, with an ETA.
    browser
        .fill("form.respond[data-state=dispatched] input[name=eta]", "6")
        .await;
    browser
        .click("form.respond[data-state=dispatched] button")
        .await;
    browser
        .appears(&format!(
            "{card} p.response[data-state=dispatched] .delivery[data-outcome=applied]"
        ))
        .await;
    shows(Pattern::LongOn).await;
    assert_eq!(
        response_of(&id).summary,
        "help on the way (ETA 6 min), by ana"
    );

    // Closed, gone on arrival: the light goes off.
    browser
        .run(
            "document.querySelector('form.respond[data-state=closed] select').value = 'gone_on_arrival'; return true;",
            vec![],
        )
        .await;
    browser
        .fill(
            "form.respond[data-state=closed] input[name=note]",
            "left before we arrived",
        )
        .await;
    browser
        .click("form.respond[data-state=closed] button")
        .await;
    browser
        .appears(&format!(
            "{card} p.response[data-state=closed] .delivery[data-outcome=applied]"
        ))
        .await;
    shows(Pattern::Off).await;
    let history = browser.text("section.responses tbody").await;
    for said in [
        "acknowledged",
        "help on the way (ETA 6 min)",
        "closed (gone on arrival)",
        "left before we arrived",
    ] {
        assert!(history.contains(said), "{said} in {history}");
    }
    browser.screenshot("responses-desktop").await;
    // Each response is in the event's history, from the audit log.
    browser.goto(&desk.at(&format!("/events/{id}"))).await;
    let audited = browser.text("section.history tbody").await;
    for action in [
        "respond:acknowledged",
        "respond:dispatched",
        "respond:closed",
    ] {
        assert!(audited.contains(action), "{action} in {audited}");
    }
    browser.close().await;
    rig.stop().await;
    desk.stop().await;
}

/// Waits until `feed` has shown `event`'s alert, snapshot and clip, and returns how many
/// times it showed the alert.
async fn shown_alerts(feed: &mut Feed, event: uuid::Uuid) -> usize {
    let id = event.to_string();
    let (mut pending, mut alerts) = (vec!["alert", "snapshot", "clip"], 0);
    while !pending.is_empty() {
        let change = feed.wait_for(|c| c["event"] == id.as_str()).await;
        alerts += usize::from(change["kind"] == "alert");
        pending.retain(|kind| change["kind"] != *kind);
    }
    alerts
}

/// The box's clip as `desk` recorded and serves it: signed validly, its manifest naming the
/// file the box wrote, and the same bytes.
async fn served_as_written(desk: &DeskRig, client: &reqwest::Client, local: &ClipDone) {
    let id = local.record.event_id.to_string();
    let (signature, manifest) = desk.clip_record(&id).await;
    assert_eq!(signature, "valid");
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(manifest["sha256"], local.record.sha256.as_str());
    let clip = client
        .get(desk.at(&format!("/media/{id}/cam/clip")))
        .send()
        .await
        .unwrap();
    assert_eq!(clip.status(), StatusCode::OK);
    assert_eq!(
        clip.bytes().await.unwrap(),
        std::fs::read(&local.mp4).unwrap().as_slice()
    );
}

/// How many events `desk`'s database holds.
async fn events_recorded(desk: &DeskRig) -> i64 {
    desk.desk
        .db
        .call(|c| {
            c.query_row("SELECT COUNT(*) FROM events", params![], |r| {
                r.get::<i64>(0)
            })
        })
        .await
        .unwrap()
}

/// The officer's response to `event`, sent from `desk`'s console, until the store's box
/// has applied it.
async fn responded(
    desk: &DeskRig,
    client: &reqwest::Client,
    csrf: &str,
    feed: &mut Feed,
    event: uuid::Uuid,
) {
    let id = event.to_string();
    let sent = post(
        client,
        desk.at(&format!("/events/{id}/respond")),
        &[("csrf", csrf), ("state", "acknowledged")],
    )
    .await;
    assert_eq!(sent.status(), StatusCode::SEE_OTHER);
    loop {
        let key = id.clone();
        let outcome: Option<String> = desk
            .desk
            .db
            .call(move |c| {
                c.query_row(
                    "SELECT outcome FROM commands WHERE event = ?1 AND kind = 'response'",
                    params![key],
                    |r| r.get(0),
                )
            })
            .await
            .unwrap();
        match outcome.as_deref() {
            Some("applied") => return,
            None => {}
            Some(other) => panic!("the box answered {other}"),
        }
        feed.wait_for(|c| c["kind"] == "response" && c["event"] == id.as_str())
            .await;
    }
}

/// Two desks of one cluster, on one PostgreSQL database and one media directory: the broker
/// hands each snapshot and clip chunk to one of them and the clip is whole, the leader
/// receives the alerts and sends the responses officers give on either console, every
/// console shows every alert once, and when the leader stops the other takes over, the
/// box's chain unbroken.
#[tokio::test(flavor = "multi_thread")]
async fn two_desks_of_a_cluster_share_the_work_show_every_alert_once_and_one_takes_over_when_the_other_stops()
 {
    // Mosquitto flushes a log file at every line (its stdout, only when a buffer fills).
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("debug.log");
    let broker = Broker::start(&format!("log_type debug\nlog_dest file {}", log.display()));
    let cluster = ClusterRig::start("precinct");
    let (key_a, key_b) = (cluster.desk_key("a"), cluster.desk_key("b"));
    let tail = format!(
        "{}[desk]\nkeys = ['''\n{key_a}''', '''\n{key_b}''']\n",
        mqtt(&broker)
    );
    let mut rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &tail).await;
    let box_key = std::fs::read_to_string(rig.dir.path().join("evidence/device.pub")).unwrap();
    let a = DeskRig::start_in(
        &cluster,
        "a",
        &format!("broker = \"{}\"", broker.url()),
        &[("ana", Role::Officer)],
        &[site("test-site", "Corner Deli", &box_key)],
    )
    .await;
    a.desk.leading().await;
    let b = DeskRig::start_in(
        &cluster,
        "b",
        &format!("broker = \"{}\"", broker.url()),
        &[],
        &[],
    )
    .await;
    b.desk.receiving().await;
    let (on_a, _) = a.signed_in("ana").await;
    let (on_b, csrf_b) = b.signed_in("ana").await;
    let mut feed_a = Feed::open(&on_a, &a).await;
    let mut feed_b = Feed::open(&on_b, &b).await;

    wait_buffered(rig.camera(0), 2.5).await;
    let first = rig
        .fire(Trigger::now(TriggerKind::Button, "register-1"))
        .await;
    let local = rig.next_clip().await;
    assert_eq!(shown_alerts(&mut feed_a, first).await, 1, "on desk a");
    assert_eq!(shown_alerts(&mut feed_b, first).await, 1, "on desk b");
    // The media went to both desks, in turns, and met whole in the shared directory.
    let log = std::fs::read_to_string(&log).unwrap();
    let id = first.to_string();
    for desk in ["precinct-a-media", "precinct-b-media"] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("Sending PUBLISH to {desk} ")) && l.contains(&id)),
            "{desk} had none of the event's media: {log}"
        );
    }
    served_as_written(&b, &on_b, &local).await;
    // A response given on the follower's console goes out from the leader.
    responded(&b, &on_b, &csrf_b, &mut feed_b, first).await;
    // The desks' connections that hear each other's changes break: what was announced
    // meanwhile is lost to them, so once they hear again their consoles load anew.
    let cut = a
        .desk
        .db
        .call(|c| {
            c.query_map(
                "SELECT CAST(count(pg_terminate_backend(pid)) AS BIGINT) FROM pg_stat_activity
                 WHERE query = 'LISTEN alertclip_changes'",
                &[],
                |r| r.get::<i64>(0),
            )
        })
        .await
        .unwrap();
    assert_eq!(cut, [2], "one listening connection per desk");
    feed_b.reload().await;

    // The leader stops; the other desk takes over, alerts and media alike.
    a.stop().await;
    b.desk.leading().await;
    let second = rig
        .fire(Trigger::now(TriggerKind::Button, "register-1"))
        .await;
    let local = rig.next_clip().await;
    assert_eq!(
        local.record.event_id, second,
        "a new event, not the first extended"
    );
    assert_eq!(shown_alerts(&mut feed_b, second).await, 1);
    served_as_written(&b, &on_b, &local).await;
    let recorded = b
        .desk
        .db
        .call(move |c| alertclip_desk::events::get(c, second))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        recorded.chain_problem, None,
        "the chain goes on across desks"
    );
    responded(&b, &on_b, &csrf_b, &mut feed_b, second).await;
    assert_eq!(events_recorded(&b).await, 2, "each alert recorded once");
    b.stop().await;
    rig.stop().await;
}

/// The NATS cluster's users, as docs/scale.md configures them: the store `test-site` may
/// publish and subscribe under its own prefix only, and only through MQTT; the desks under
/// every store's. (`$MQTT.sub.>` is where the MQTT gateway delivers QoS 1 messages.)
const NATS_USERS: &str = r#"authorization {
  users = [
    { user: "test-site", password: "box-secret", allowed_connection_types: ["MQTT"],
      permissions: { publish: ["alertclip.v1.test-site.>"],
                     subscribe: ["alertclip.v1.test-site", "alertclip.v1.test-site.>", "$MQTT.sub.>"] } }
    { user: "desk", password: "desk-secret", allowed_connection_types: ["MQTT"],
      permissions: { publish: ["alertclip.v1.>"],
                     subscribe: ["alertclip.v1", "alertclip.v1.>", "$MQTT.sub.>"] } }
  ]
}"#;

#[tokio::test(flavor = "multi_thread")]
async fn on_a_nats_cluster_the_leading_desk_receives_everything_and_nothing_is_lost_when_a_node_dies_and_the_leader_stops_mid_clip()
 {
    let mut nats = nats::NatsCluster::start(3, NATS_USERS);
    let box_password = nats.file("box.password", "box-secret");
    let desk_password = nats.file("desk.password", "desk-secret");
    let mut cluster = ClusterRig::start("precinct");
    cluster.media_sharing = "leader";
    let (key_a, key_b) = (cluster.desk_key("a"), cluster.desk_key("b"));
    // The box on node 0, the desks on nodes 1 and 2; each may fail over to the others.
    let tail = format!(
        "[mqtt]\nurl = \"{}\"\nfailover = {}\nchunk_size = \"16KiB\"\nusername = \"test-site\"\n\
         password_file = \"{}\"\n[desk]\nkeys = ['''\n{key_a}''', '''\n{key_b}''']\n",
        nats.mqtt_url(0),
        nats.failover(0),
        box_password.display()
    );
    let mut rig = Rig::start(&[TestStream::h264("/cam")], ROLLS, &tail).await;
    let box_key = std::fs::read_to_string(rig.dir.path().join("evidence/device.pub")).unwrap();
    let desk_mqtt = |node: usize| {
        format!(
            "broker = \"{}\"\nfailover = {}\nusername = \"desk\"\npassword_file = \"{}\"",
            nats.mqtt_url(node),
            nats.failover(node),
            desk_password.display()
        )
    };
    let a = DeskRig::start_in(
        &cluster,
        "a",
        &desk_mqtt(1),
        &[("ana", Role::Officer)],
        &[site("test-site", "Corner Deli", &box_key)],
    )
    .await;
    a.desk.leading().await;
    let b = DeskRig::start_in(&cluster, "b", &desk_mqtt(2), &[], &[]).await;
    b.desk.receiving().await;
    let (on_a, _) = a.signed_in("ana").await;
    let (on_b, csrf_b) = b.signed_in("ana").await;
    let mut feed_a = Feed::open(&on_a, &a).await;
    let mut feed_b = Feed::open(&on_b, &b).await;

    wait_buffered(rig.camera(0), 2.5).await;
    let first = rig
        .fire(Trigger::now(TriggerKind::Button, "register-1"))
        .await;
    let local = rig.next_clip().await;
    assert_eq!(shown_alerts(&mut feed_a, first).await, 1, "on desk a");
    assert_eq!(shown_alerts(&mut feed_b, first).await, 1, "on desk b");
    served_as_written(&b, &on_b, &local).await;
    // A response given on the follower's console reaches the box from the leader.
    responded(&b, &on_b, &csrf_b, &mut feed_b, first).await;

    // The box's node dies; the box goes on through another. The leader stops once the next
    // alert is shown, before the clip (a second of post-roll) is sent: the broker keeps the
    // clip in the session that passes to the other desk with the lead.
    nats.kill(0);
    let second = rig
        .fire(Trigger::now(TriggerKind::Button, "register-1"))
        .await;
    let id = second.to_string();
    feed_a
        .wait_for(|c| c["event"] == id.as_str() && c["kind"] == "alert")
        .await;
    a.stop().await;
    b.desk.leading().await;
    let local = rig.next_clip().await;
    assert_eq!(local.record.event_id, second, "a new event");
    assert_eq!(shown_alerts(&mut feed_b, second).await, 1);
    served_as_written(&b, &on_b, &local).await;
    let recorded = b
        .desk
        .db
        .call(move |c| alertclip_desk::events::get(c, second))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recorded.chain_problem, None, "the chain goes on");
    responded(&b, &on_b, &csrf_b, &mut feed_b, second).await;
    assert_eq!(events_recorded(&b).await, 2, "each alert recorded once");
    b.stop().await;
    rig.stop().await;
}
