//! `alertclip provision`: the box's configuration written from flags and answers, then its
//! device key, then `check`.

use std::io::IsTerminal;
use std::path::Path;

use alertclip::config::Config;
use alertclip::setup::provision::{self, Answers};

use super::{Failure, Outcome, ProvisionArgs, load};

/// Completes the answers (asking on a terminal), renders and writes the configuration and its
/// password files (or prints them, with `--dry-run`), creates the device key and runs
/// `check`.
pub async fn provision(args: ProvisionArgs) -> Outcome {
    let mut answers = Answers {
        site_id: args.site_id,
        site_name: args.site_name,
        address: args.address,
        timezone: args.timezone,
        cameras: args.cameras,
        broker: args.broker,
        ca: args.login.ca,
        cert: args.login.cert,
        key: args.login.key,
        username: args.login.username,
        password_file: args.login.password_file,
        buttons: args.buttons,
        state_dir: args.state_dir,
    };
    provision::complete(&mut answers).await.map_err(unusable)?;
    let dir = args.config.parent().unwrap_or(Path::new(".")).to_owned();
    let (text, secrets) = provision::render(&answers, &dir).map_err(unusable)?;
    if args.dry_run {
        Config::parse(&text, &args.config).map_err(|error| {
            Failure::Unusable(format!("the configuration would be invalid: {error}"))
        })?;
        print!("{text}");
        for (path, _) in &secrets {
            println!("# and a password in {} (mode 0600)", path.display());
        }
        return Ok(());
    }
    if !args.yes && std::io::stdin().is_terminal() {
        print!("{text}\nWrite this to {}? [y/N] ", args.config.display());
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        if !line.trim().eq_ignore_ascii_case("y") {
            return Err(Failure::failed("nothing written"));
        }
    }
    let written = provision::write(&args.config, &text, &secrets, args.force).map_err(unusable)?;
    println!("wrote {}", written.config.display());
    if let Some(backup) = &written.backup {
        println!("the previous configuration is in {}", backup.display());
    }
    for secret in &written.secrets {
        println!("wrote {} (mode 0600)", secret.display());
    }
    let config = load(&args.config)?;
    let key = alertclip::evidence::DeviceKey::load_or_create(&config.evidence.dir)
        .map_err(|error| Failure::Unusable(format!("evidence.dir: {error}")))?;
    println!(
        "device key {} (fingerprint {}): register it with the precinct (alertclip key show)",
        key.key_id(),
        key.fingerprint()
    );
    println!();
    super::check::check(&args.config, false).await
}

fn unusable(error: provision::ProvisionError) -> Failure {
    Failure::Unusable(error.to_string())
}
