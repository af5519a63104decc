//! The desk's command line, as an admin runs it: init, accounts, stores, the audit log, and
//! what a config that cannot be used says.

// A test that cannot go on fails with the value it got.
#![allow(clippy::unwrap_used)]

#[path = "../../../tests/common/unit.rs"]
mod unit;

use std::path::Path;
use std::process::{Command, Output};

fn desk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_alertclip-desk"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn init(dir: &Path) -> Output {
    desk(&[
        "init",
        "--dir",
        dir.to_str().unwrap(),
        "--broker",
        "mqtt://127.0.0.1:1883",
        "--listen",
        "127.0.0.1:8443",
        "--host",
        "desk.test",
    ])
}

#[test]
fn init_writes_a_working_setup_once_and_prints_the_url_and_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = init(dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("url: https://desk.test:8443/"), "{said}");
    let password = said
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert!(password.len() >= 12, "{password}");
    for file in ["desk.toml", "desk.sqlite", "tls/desk.crt", "tls/desk.key"] {
        assert!(dir.path().join(file).is_file(), "{file}");
    }
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("tls/desk.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o077, 0, "the TLS key is its owner's alone");
    let config = alertclip_desk::Config::load(&dir.path().join("desk.toml")).unwrap();
    assert_eq!(config.http.listen.port(), 8443);
    // The admin can log in with what was printed.
    let db = alertclip_desk::db::Db::open(config.database()).unwrap();
    let admin = db
        .call_blocking(|c| alertclip_desk::accounts::candidate(c, "admin"))
        .unwrap()
        .unwrap();
    assert_eq!(admin.user.role, alertclip_desk::accounts::Role::Admin);
    assert!(alertclip_desk::accounts::password_matches(
        &admin.hash,
        password
    ));

    // Never over an existing setup.
    let again = init(dir.path());
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again).contains("exists"), "{}", text(&again));
}

#[test]
fn accounts_stores_and_the_audit_log_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    assert!(init(dir.path()).status.success());
    let config = dir.path().join("desk.toml");
    let config = config.to_str().unwrap();

    let added = desk(&[
        "user", "add", "--config", config, "--name", "olu", "--role", "officer",
    ]);
    assert!(added.status.success(), "{}", text(&added));
    assert!(text(&added).contains("added olu (officer)"));
    let twice = desk(&["user", "add", "--config", config, "--name", "olu"]);
    assert_eq!(twice.status.code(), Some(1));
    assert!(
        text(&twice).contains("--name olu: the name may be taken"),
        "{}",
        text(&twice)
    );
    let role = desk(&[
        "user", "add", "--config", config, "--name", "x", "--role", "chief",
    ]);
    assert!(
        text(&role).contains("--role: expected officer, supervisor or admin"),
        "{}",
        text(&role)
    );

    let bad_key = dir.path().join("bad.pub");
    std::fs::write(&bad_key, "not a key").unwrap();
    let bad_key = bad_key.to_str().unwrap();
    let refused = desk(&[
        "site", "add", "--config", config, "--id", "s1", "--name", "Shop", "--key", bad_key,
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused).contains("public key: expected the PEM public key"),
        "{}",
        text(&refused)
    );

    let verify = desk(&["audit", "verify", "--config", config]);
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(text(&verify).contains("audit log intact"));

    // A row edited in the database file is found.
    let db = alertclip_desk::db::Db::open(dir.path().join("desk.sqlite")).unwrap();
    db.call_blocking(|c| {
        for n in 0..3 {
            let event = format!("e{n}");
            alertclip_desk::audit::by(c, "olu", "view_event", Some(&event), "10.0.0.9")?;
        }
        c.execute("UPDATE audit SET \"user\" = 'mallory' WHERE id = 2", &[])
    })
    .unwrap();
    drop(db);
    let broken = desk(&["audit", "verify", "--config", config]);
    assert_eq!(broken.status.code(), Some(1));
    assert!(
        text(&broken).contains("audit row 2: its contents were changed"),
        "{}",
        text(&broken)
    );
}

#[test]
fn a_config_that_cannot_be_used_names_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("desk.toml");
    let cases = [
        (
            "[mqtt]\nbroker = \"http://x\"\n[http]\ncertificate = \"c\"\nkey = \"k\"\n[storage]\ndirectory = \".\"\n",
            "mqtt.broker",
        ),
        (
            "[mqtt]\nbroker = \"mqtt://x\"\n[http]\ncertificate = \"c\"\nkey = \"k\"\nidle_timeout = \"5s\"\n[storage]\ndirectory = \".\"\n",
            "http.idle_timeout: expected at least",
        ),
        (
            "[mqtt]\nbroker = \"mqtt://x\"\npasword_file = \"p\"\n[http]\ncertificate = \"c\"\nkey = \"k\"\n[storage]\ndirectory = \".\"\n",
            "unknown field `pasword_file`",
        ),
    ];
    for (config, said) in cases {
        std::fs::write(&path, config).unwrap();
        let out = desk(&["serve", "--config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains(&path.display().to_string()),
            "{}",
            text(&out)
        );
        assert!(text(&out).contains(said), "{said}: {}", text(&out));
    }
    let missing = desk(&[
        "serve",
        "--config",
        dir.path().join("none.toml").to_str().unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing).contains("alertclip-desk init writes one"),
        "{}",
        text(&missing)
    );
}

#[test]
fn the_service_unit_is_valid_and_hardened() {
    let unit = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../systemd/alertclip-desk.service"
    );
    // The unit names the packaged binary; it is verified against the one just built.
    unit::assert_unit_hardened(
        Path::new(unit),
        "/usr/bin/alertclip-desk",
        env!("CARGO_BIN_EXE_alertclip-desk"),
        1.5,
    );
}

#[test]
fn a_store_added_on_the_command_line_is_announced_to_the_running_desks_of_a_cluster() {
    use ed25519_dalek::pkcs8::{EncodePublicKey, spki::der::pem::LineEnding};
    let server = alertclip_desk::db::scratch::Scratch::start().unwrap();
    let database = server.database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert!(init(dir.path()).status.success());
    let config = dir.path().join("desk.toml");
    let written = std::fs::read_to_string(&config).unwrap();
    let clustered = written
        .replacen(
            "# database = \"postgres://desk@db.example/alertclip\"",
            &format!("database = \"{database}\""),
            1,
        )
        .replacen(
            "# [cluster]\n# name = \"precinct-7\"\n# instance = \"desk-a\"",
            "[cluster]\nname = \"precinct-7\"\ninstance = \"desk-a\"",
            1,
        );
    assert_ne!(clustered, written, "init's config has no commented cluster");
    std::fs::write(&config, clustered).unwrap();
    let key = dir.path().join("box.pub");
    let pem = ed25519_dalek::SigningKey::from_bytes(&[7; 32])
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    std::fs::write(&key, pem).unwrap();

    // A desk of the cluster listening, as each running desk does.
    let mut desk_a = postgres::Client::connect(&database, postgres::NoTls).unwrap();
    desk_a.batch_execute("LISTEN alertclip_changes").unwrap();
    let added = desk(&[
        "site",
        "add",
        "--config",
        config.to_str().unwrap(),
        "--id",
        "s1",
        "--name",
        "Shop",
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(added.status.success(), "{}", text(&added));
    assert!(
        text(&added).contains("the cluster's running desks trust it now"),
        "{}",
        text(&added)
    );
    use postgres::fallible_iterator::FallibleIterator;
    let mut notifications = desk_a.notifications();
    let heard = notifications
        .timeout_iter(std::time::Duration::from_secs(60))
        .next()
        .unwrap()
        .expect("the enrolment announced within 60 s");
    let change: serde_json::Value = serde_json::from_str(heard.payload()).unwrap();
    assert_eq!(change["kind"], "registry", "{change}");
}
