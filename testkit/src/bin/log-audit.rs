//! `make test`'s last step: fails when a log of the run holds a password or a DSN with its
//! password ([`ferry_testkit::log_audit`]). Usage: `log-audit <dir or file>...`; the secrets
//! come from `.ferry/env`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, bail};
use ferry_testkit::{TestEnv, log_audit::Secrets};

fn main() -> anyhow::Result<ExitCode> {
    let roots: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if roots.is_empty() {
        bail!("usage: log-audit <dir or file>...");
    }
    let env = TestEnv::get().context("no Ferry test environment: run `make env-up`")?;
    let secrets = Secrets::from_vars(|name| env.var(name).map(str::to_owned));
    if secrets.is_empty() {
        bail!(
            "{} holds none of the secrets the audit looks for",
            TestEnv::path().display()
        );
    }
    let (files, findings) = secrets.audit(&roots).context("reading the logs")?;
    if files == 0 {
        // An audit of nothing would pass whatever the binaries logged.
        bail!("no log files under {roots:?}");
    }
    for finding in &findings {
        eprintln!("log-audit: {finding}");
    }
    println!(
        "log-audit: {files} files read, {} secrets of the environment and any URL with a password or sasl.password value looked for: {} lines leak",
        secrets.len(),
        findings.len()
    );
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
