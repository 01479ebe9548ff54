//! The webhook's serving certificate: a CA and a leaf it signs, kept in one Secret so every
//! operator replica serves the same certificate and the API server trusts it through the
//! `caBundle` (DESIGN §6).
//!
//! [`plan`] is pure (what the stored bundle needs, given the names to serve and the time);
//! [`Stored::ensure`] makes the Secret match it. Replicas race safely: a missing Secret is
//! created (the loser of a create reads the winner's), a stale one is replaced with its
//! `resourceVersion` (the loser of a replace reads again), so two replicas never serve two
//! certificates for long.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use x509_parser::{extensions::GeneralName, pem::parse_x509_pem};

/// The CA's lifetime. Ten years: a CA change means a `caBundle` change, the one moment
/// admission can fail; it should almost never happen.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The leaf's lifetime: one year, renewed after two thirds of it (cert-manager's default
/// `renewBefore` is a third of the duration), so a renewal failure has months to be noticed.
const LEAF_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start an hour in the past, so a node whose clock is a little behind still
/// accepts them.
const BACKDATE: Duration = Duration::from_secs(3600);

/// The Secret's keys: `tls.crt` and `tls.key` as a `kubernetes.io/tls` Secret has them, and
/// the CA beside them.
pub const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

/// Why a certificate cannot be made or stored.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating the webhook certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("reading or writing the webhook certificate Secret: {0}")]
    Kube(#[from] kube::Error),
    #[error("the webhook certificate Secret kept changing under this replica")]
    Contended,
}

/// A CA and the leaf it signed, as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    pub ca_cert: String,
    ca_key: String,
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("ca_cert", &self.ca_cert.len())
            .field("cert", &self.cert.len())
            .finish_non_exhaustive()
    }
}

/// What a stored bundle needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// It serves the names and is not due for renewal.
    Keep,
    /// The CA is good; the leaf is missing, expiring, for other names, or not the CA's.
    NewLeaf,
    /// Nothing usable: a new CA and leaf (the `caBundle` changes).
    NewCa,
}

/// Decides what `stored` needs to serve `names` at `now`.
pub fn plan(stored: Option<&Bundle>, names: &[String], now: SystemTime) -> Plan {
    let Some(stored) = stored else {
        return Plan::NewCa;
    };
    let Some(ca) = Facts::of(&stored.ca_cert) else {
        return Plan::NewCa;
    };
    if KeyPair::from_pem(&stored.ca_key).is_err() || ca.due(now) {
        return Plan::NewCa;
    }
    let Some(leaf) = Facts::of(&stored.cert) else {
        return Plan::NewLeaf;
    };
    let names_match = {
        let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut have: Vec<&str> = leaf.names.iter().map(String::as_str).collect();
        want.sort_unstable();
        have.sort_unstable();
        want == have
    };
    if leaf.due(now)
        || !names_match
        || leaf.issuer != ca.subject
        || !signed_by(&stored.cert, &stored.ca_cert)
        || KeyPair::from_pem(&stored.key).is_err()
    {
        return Plan::NewLeaf;
    }
    Plan::Keep
}

/// A new CA (when `plan` says so, or none is given) and a leaf for `names`, valid from `now`.
pub fn issue(
    plan: Plan,
    stored: Option<&Bundle>,
    names: &[String],
    now: SystemTime,
) -> Result<Bundle, rcgen::Error> {
    let reuse = stored.filter(|_| plan == Plan::NewLeaf);
    let (ca_cert, ca_key) = match reuse {
        Some(b) => (b.ca_cert.clone(), KeyPair::from_pem(&b.ca_key)?),
        None => {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params
                .distinguished_name
                .push(DnType::CommonName, "ferry-webhook-ca");
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            (params.not_before, params.not_after) = window(now, CA_LIFETIME);
            (params.self_signed(&key)?.pem(), key)
        }
    };
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, &ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("ferry-webhook", |n| n),
    );
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    (params.not_before, params.not_after) = window(now, LEAF_LIFETIME);
    let cert = params.signed_by(&key, &issuer)?.pem();
    Ok(Bundle {
        ca_key: ca_key.serialize_pem(),
        ca_cert,
        cert,
        key: key.serialize_pem(),
    })
}

fn window(now: SystemTime, lifetime: Duration) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let from = time::OffsetDateTime::from(now - BACKDATE);
    (from, time::OffsetDateTime::from(now + lifetime))
}

/// What `plan` needs to know of a certificate.
struct Facts {
    not_before: i64,
    not_after: i64,
    subject: String,
    issuer: String,
    names: Vec<String>,
}

impl Facts {
    fn of(pem: &str) -> Option<Self> {
        let (_, pem) = parse_x509_pem(pem.as_bytes()).ok()?;
        let x509 = pem.parse_x509().ok()?;
        let names = x509
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(d) => Some((*d).to_owned()),
                        GeneralName::IPAddress(b) => ip(b),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Self {
            not_before: x509.validity().not_before.timestamp(),
            not_after: x509.validity().not_after.timestamp(),
            subject: x509.subject().to_string(),
            issuer: x509.issuer().to_string(),
            names,
        })
    }

    /// Expired, not yet valid, or past two thirds of its lifetime.
    fn due(&self, now: SystemTime) -> bool {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let renew_at = self.not_before + (self.not_after - self.not_before) * 2 / 3;
        now < self.not_before || now >= renew_at
    }
}

/// Whether `leaf`'s signature verifies with `ca`'s key (two CAs may share a name).
fn signed_by(leaf: &str, ca: &str) -> bool {
    let (Ok((_, leaf)), Ok((_, ca))) = (
        parse_x509_pem(leaf.as_bytes()),
        parse_x509_pem(ca.as_bytes()),
    ) else {
        return false;
    };
    match (leaf.parse_x509(), ca.parse_x509()) {
        (Ok(leaf), Ok(ca)) => leaf.verify_signature(Some(ca.public_key())).is_ok(),
        _ => false,
    }
}

fn ip(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}

/// The Secret that holds the bundle.
pub struct Stored {
    pub api: Api<Secret>,
    pub name: String,
}

impl Stored {
    /// Reads the bundle, renewing or creating it as [`plan`] says, and returns what is stored.
    pub async fn ensure(&self, names: &[String]) -> Result<Bundle, Error> {
        // Each round trip either succeeds or loses a race to another replica, which then has
        // written a bundle the next round keeps; three losses in a row mean something else
        // rewrites the Secret.
        for _ in 0..3 {
            let current = self.api.get_opt(&self.name).await?;
            let bundle = current.as_ref().and_then(bundle_of);
            let plan = plan(bundle.as_ref(), names, SystemTime::now());
            if plan == Plan::Keep
                && let Some(bundle) = bundle
            {
                return Ok(bundle);
            }
            let fresh = issue(plan, bundle.as_ref(), names, SystemTime::now())?;
            tracing::info!(secret = %self.name, ?plan, "writing the webhook certificate");
            let written = match current {
                None => self
                    .api
                    .create(&PostParams::default(), &self.secret(&fresh, None))
                    .await
                    .map(|_| ()),
                Some(s) => self
                    .api
                    .replace(
                        &self.name,
                        &PostParams::default(),
                        &self.secret(&fresh, s.metadata.resource_version),
                    )
                    .await
                    .map(|_| ()),
            };
            match written {
                Ok(()) => return Ok(fresh),
                // Another replica wrote first: use what it wrote (next round).
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Contended)
    }

    fn secret(&self, bundle: &Bundle, resource_version: Option<String>) -> Secret {
        let data = [
            (CA_CERT, &bundle.ca_cert),
            (CA_KEY, &bundle.ca_key),
            (TLS_CERT, &bundle.cert),
            (TLS_KEY, &bundle.key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.clone().into_bytes())))
        .collect();
        Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version,
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_owned(),
                        "ferry-operator".to_owned(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(data),
            ..Default::default()
        }
    }
}

/// The bundle in a Secret, if all four keys are there and are text.
pub fn bundle_of(secret: &Secret) -> Option<Bundle> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| String::from_utf8(data.get(k)?.0.clone()).ok();
    Some(Bundle {
        ca_cert: text(CA_CERT)?,
        ca_key: text(CA_KEY)?,
        cert: text(TLS_CERT)?,
        key: text(TLS_KEY)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["127.0.0.1".into()]
    }

    fn day(n: u64) -> Duration {
        Duration::from_secs(n * 24 * 3600)
    }

    #[test]
    fn nothing_stored_needs_a_ca() {
        assert_eq!(plan(None, &names(), SystemTime::now()), Plan::NewCa);
    }

    #[test]
    fn a_fresh_bundle_is_kept_and_serves_its_names() {
        let now = SystemTime::now();
        let b = issue(Plan::NewCa, None, &names(), now).expect("issue");
        assert_eq!(plan(Some(&b), &names(), now), Plan::Keep);
        assert_eq!(plan(Some(&b), &names(), now + day(200)), Plan::Keep);
        let facts = Facts::of(&b.cert).expect("leaf parses");
        assert_eq!(facts.names, vec!["127.0.0.1".to_owned()]);
        assert_ne!(facts.subject, facts.issuer, "the leaf is signed by the CA");
    }

    #[test]
    fn the_leaf_is_renewed_after_two_thirds_of_its_life_with_the_same_ca() {
        let now = SystemTime::now();
        let b = issue(Plan::NewCa, None, &names(), now).expect("issue");
        let later = now + day(250);
        assert_eq!(plan(Some(&b), &names(), later), Plan::NewLeaf);
        let renewed = issue(Plan::NewLeaf, Some(&b), &names(), later).expect("renew");
        assert_eq!(renewed.ca_cert, b.ca_cert, "the caBundle does not change");
        assert_ne!(renewed.cert, b.cert);
        assert_eq!(plan(Some(&renewed), &names(), later), Plan::Keep);
    }

    #[test]
    fn other_names_need_a_new_leaf() {
        let now = SystemTime::now();
        let b = issue(Plan::NewCa, None, &names(), now).expect("issue");
        let svc = vec![
            "ferry-webhook.ferry-system.svc".to_owned(),
            "ferry-webhook".to_owned(),
        ];
        assert_eq!(plan(Some(&b), &svc, now), Plan::NewLeaf);
    }

    #[test]
    fn an_expiring_ca_or_garbage_needs_a_new_ca() {
        let now = SystemTime::now();
        let b = issue(Plan::NewCa, None, &names(), now).expect("issue");
        assert_eq!(plan(Some(&b), &names(), now + day(7 * 365)), Plan::NewCa);
        let broken = Bundle {
            ca_cert: "not a certificate".into(),
            ..b.clone()
        };
        assert_eq!(plan(Some(&broken), &names(), now), Plan::NewCa);
        let other = issue(Plan::NewCa, None, &names(), now).expect("issue");
        let mixed = Bundle {
            cert: other.cert,
            key: other.key,
            ..b
        };
        assert_eq!(
            plan(Some(&mixed), &names(), now),
            Plan::NewLeaf,
            "a leaf from another CA is replaced"
        );
    }
}
