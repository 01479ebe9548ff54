//! The webhook's serving certificate from a directory (`--webhook-cert-dir`): `tls.crt` and
//! `tls.key` of a Secret that cert-manager writes and the kubelet mounts (the chart's
//! `certManager.enabled`). The operator then makes no CA and writes no `caBundle`: cert-manager
//! renews the certificate, its cainjector keeps the `caBundle`, and the operator only serves.
//!
//! A renewal reaches the pod as new file contents (the kubelet swaps the Secret volume's
//! `..data` link, so both files change at once); [`keep`] polls them and hands a changed pair
//! to rustls, so every TLS handshake from then on gets the new certificate, without a restart.
//! Polling rather than inotify: the kubelet's link swap replaces the directory entries that a
//! file watch would be attached to.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use axum_server::tls_rustls::RustlsConfig;

use super::cert::{TLS_CERT, TLS_KEY};

/// How often the files are read for a renewal. The kubelet refreshes a mounted Secret about a
/// minute after it changes (its sync period plus its cache's TTL) and cert-manager renews
/// weeks before expiry, so a few seconds more go unnoticed, and two small reads every five
/// seconds cost nothing.
pub const POLL: Duration = Duration::from_secs(5);

/// Why the certificate cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the webhook certificate {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The certificate (with its chain) and key, as PEM, as the directory holds them.
#[derive(Clone, PartialEq, Eq)]
pub struct Pair {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair")
            .field("cert", &self.cert.len())
            .finish_non_exhaustive()
    }
}

/// Reads `dir/tls.crt` and `dir/tls.key`.
pub async fn read(dir: &Path) -> Result<Pair, Error> {
    let file = |name: &str| {
        let path = dir.join(name);
        async move {
            tokio::fs::read(&path)
                .await
                .map_err(|source| Error::Read { path, source })
        }
    };
    Ok(Pair {
        cert: file(TLS_CERT).await?,
        key: file(TLS_KEY).await?,
    })
}

/// Loads `pair` into a new rustls configuration.
pub async fn load(pair: &Pair) -> std::io::Result<RustlsConfig> {
    RustlsConfig::from_pem(pair.cert.clone(), pair.key.clone()).await
}

/// Reads `dir` every [`POLL`] and reloads `tls` when its files differ from what it serves
/// (`serving`, what was loaded last). A pair that cannot be read or loaded (a write caught
/// half done, a key that does not match) leaves the current one serving; the next read tries
/// again.
pub async fn keep(dir: PathBuf, tls: RustlsConfig, mut serving: Pair) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let fresh = match read(&dir).await {
            Ok(fresh) if fresh != serving => fresh,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the webhook certificate; serving the old one");
                continue;
            }
        };
        match tls
            .reload_from_pem(fresh.cert.clone(), fresh.key.clone())
            .await
        {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "serving a renewed webhook certificate");
                serving = fresh;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot load the renewed webhook certificate; serving the old one")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::cert::{Plan, issue};
    use std::time::SystemTime;

    fn pair() -> Pair {
        let b = issue(Plan::NewCa, None, &["127.0.0.1".into()], SystemTime::now()).expect("issue");
        Pair {
            cert: b.cert.into_bytes(),
            key: b.key.into_bytes(),
        }
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ferry-cert-dir-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[tokio::test]
    async fn reads_both_files_and_names_a_missing_one() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = temp_dir();
        let p = pair();
        std::fs::write(dir.join(TLS_CERT), &p.cert).expect("write");
        let missing = read(&dir).await.expect_err("no key yet");
        assert!(missing.to_string().contains(TLS_KEY), "{missing}");
        std::fs::write(dir.join(TLS_KEY), &p.key).expect("write");
        assert_eq!(read(&dir).await.expect("both"), p);
        load(&p).await.expect("rustls takes it");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn a_key_of_another_certificate_is_refused() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mixed = Pair {
            cert: pair().cert,
            key: pair().key,
        };
        assert!(load(&mixed).await.is_err());
    }
}
