//! An event's evidence as one zip: the files exactly as the store's box sent them (alert,
//! updates, snapshots, clips and their signed manifests), the store's enrolled public key,
//! a verification report a person can read and repeat with `alertclip verify`, and the
//! event's chain of custody from the audit log.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

use crate::events::{Event, Verification};
use crate::sites::Site;

/// What goes into one export.
pub struct Export<'a> {
    /// The event, as the console shows it.
    pub event: &'a Event,
    /// Its store, if enrolled.
    pub site: Option<&'a Site>,
    /// The event's directory under the media directory.
    pub dir: &'a Path,
    /// The audit rows about the event, the export itself included: (when, who, what).
    pub custody: &'a [(String, String, String)],
    /// Who exports, and when.
    pub by: &'a str,
}

/// The SHA-256 of a file, read in blocks.
fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut block)?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The files of the event's directory that go in: what the receiver kept, not its
/// hidden working state (chunks in reassembly, temporaries).
fn evidence_files(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.file_type()?.is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn report(export: &Export<'_>, hashes: &[(String, String)]) -> String {
    let event = export.event;
    let alert = &event.alert;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "alertclip evidence export\n=========================\n"
    );
    let _ = writeln!(text, "Event:        {}", event.id);
    let _ = writeln!(
        text,
        "Store:        {} ({}), enrolled: {}",
        export
            .site
            .map(|s| s.name.as_str())
            .unwrap_or(&alert.site.name),
        event.site,
        if export.site.is_some() { "yes" } else { "NO" }
    );
    let _ = writeln!(
        text,
        "Triggered:    {} ({})",
        alert.triggered_at,
        alert.trigger.kind.as_str()
    );
    let _ = writeln!(
        text,
        "Exported:     {} by {}",
        jiff::Timestamp::now(),
        export.by
    );
    if let Some(site) = export.site {
        let _ = writeln!(
            text,
            "Store key:    {} (device.pub)",
            site.fingerprint().unwrap_or_default()
        );
    }
    let _ = writeln!(text, "\nWhat the desk checked\n---------------------\n");
    let _ = writeln!(
        text,
        "Alert signature: {}{}",
        event.signature,
        event
            .signature_detail
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        text,
        "Alert chain:     {}",
        event
            .chain_problem
            .as_deref()
            .unwrap_or("continuous (sequence follows the box's previous alert)")
    );
    let _ = writeln!(
        text,
        "Box clock:       {}",
        match alert.clock.synchronized {
            Some(true) => "synchronised",
            Some(false) => "NOT synchronised: times may be off",
            None => "unknown",
        }
    );
    for camera in &event.cameras {
        let state = match event.verification(camera) {
            Verification::Verified => "VERIFIED".to_owned(),
            Verification::Unverified(why) => format!("UNVERIFIED: {}", why.join("; ")),
            Verification::Arriving(_) => "not received".to_owned(),
        };
        let _ = writeln!(text, "\nCamera {}: {state}", camera.id);
        if let Some(manifest) = camera.clip.as_ref().and_then(|c| c.manifest.as_ref()) {
            let _ = writeln!(
                text,
                "  covers {} to {}, {} bytes",
                manifest.start, manifest.end, manifest.bytes
            );
            let _ = writeln!(text, "  manifest SHA-256 of the clip: {}", manifest.sha256);
        }
    }
    let _ = writeln!(
        text,
        "\nFiles in this export (SHA-256)\n------------------------------\n"
    );
    for (name, hash) in hashes {
        let _ = writeln!(text, "{hash}  {name}");
    }
    let _ = writeln!(
        text,
        "\nChecking it again\n-----------------\n\n\
         The clips and manifests are the very files the store's box sent; each manifest is\n\
         signed by the box's key. With alertclip installed, for each camera:\n\n\
         \x20   alertclip verify <camera>.mp4 <camera>.manifest.json --pubkey device.pub\n\n\
         prints VALID (exit 0) when the clip matches its manifest and the manifest's signature\n\
         is the key's, or says what does not match (exit 1). Without alertclip, in this\n\
         directory, `sha256sum -c SHA256SUMS` checks every file against the list above, and\n\
         alertclip's docs/evidence.md describes the signature format for checking with OpenSSL.\n"
    );
    text
}

/// Writes the export to `out` (blocking: run it off async workers).
pub fn write(export: &Export<'_>, out: File) -> io::Result<()> {
    let to_io = |e: zip::result::ZipError| io::Error::other(e.to_string());
    let names = evidence_files(export.dir)?;
    let mut hashes = Vec::new();
    for name in &names {
        hashes.push((name.clone(), sha256_file(&export.dir.join(name))?));
    }
    let key = export.site.map(|s| s.public_key.clone());
    if let Some(key) = &key {
        hashes.push((
            "device.pub".into(),
            hex::encode(Sha256::digest(key.as_bytes())),
        ));
    }
    let mut custody = String::from("time,user,action\n");
    for (at, who, what) in export.custody {
        let _ = writeln!(custody, "{},{},{}", csv(at), csv(who), csv(what));
    }
    hashes.push((
        "custody.csv".into(),
        hex::encode(Sha256::digest(custody.as_bytes())),
    ));
    let sums: String = hashes.iter().map(|(n, h)| format!("{h}  {n}\n")).collect();

    // Stored, not compressed: the clips already are, and any tool opens a stored zip.
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .unix_permissions(0o644)
        .large_file(true);
    let top = format!("alertclip-{}-{}", export.event.site, export.event.id);
    let mut zip = zip::ZipWriter::new(out);
    for name in &names {
        zip.start_file(format!("{top}/{name}"), options)
            .map_err(to_io)?;
        io::copy(&mut File::open(export.dir.join(name))?, &mut zip)?;
    }
    let mut small = vec![
        ("VERIFICATION.txt".to_owned(), report(export, &hashes)),
        ("custody.csv".to_owned(), custody),
        ("SHA256SUMS".to_owned(), sums),
    ];
    if let Some(key) = key {
        small.push(("device.pub".into(), key));
    }
    for (name, body) in small {
        zip.start_file(format!("{top}/{name}"), options)
            .map_err(to_io)?;
        zip.write_all(body.as_bytes())?;
    }
    zip.finish().map_err(to_io)?.sync_all()?;
    Ok(())
}

/// A CSV field, quoted when it needs to be.
fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}
