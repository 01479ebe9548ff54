//! A generated pod's container as the kubelet would start it — a test helper, not a kubelet.
//!
//! KWOK marks pods Running without running them, so a test that wants to know a generated pod
//! template really works starts its container as a local process: its `command` and `args` as
//! written, its `env` resolved through the API server (`value`, `secretKeyRef`,
//! `configMapKeyRef`, `fieldRef` of the pod's metadata; `envFrom` Secrets and ConfigMaps), and
//! `$(VAR)` references expanded as the kubelet does (Kubernetes'
//! `third_party/forked/golang/expansion`): `$(NAME)` becomes an earlier variable's value and
//! stays as written when there is none, `$$` is a literal `$`. What a container runtime does —
//! the image's binary, the pod's own network namespace — the test maps itself.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Secret};
use kube::{Api, Client, api::ObjectMeta};

/// A container ready to be started as a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedContainer {
    /// `command` then `args`, expanded (empty when the container relies on the image's
    /// entrypoint, which a test must supply itself).
    pub argv: Vec<String>,
    /// The environment, in declaration order (a later duplicate wins, as in the kubelet).
    pub env: Vec<(String, String)>,
}

impl ResolvedContainer {
    /// The value of variable `name`.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Expands `$(VAR)` references in `input` from `vars`, as the kubelet does for `command`,
/// `args` and env values.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            // `$$` escapes a `$`.
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(close) => {
                    let name = &inner[..close];
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[close + 1..];
                }
                None => {
                    // No closing parenthesis: kept as written.
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A `fieldRef` of the pod's metadata (`metadata.name`, `.namespace`, `.uid`,
/// `.labels['k']`, `.annotations['k']`).
fn field(pod: &ObjectMeta, path: &str) -> anyhow::Result<String> {
    let keyed = |prefix: &str, map: &Option<BTreeMap<String, String>>| -> Option<String> {
        let key = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(map.as_ref()?.get(key).cloned().unwrap_or_default())
    };
    Ok(match path {
        "metadata.name" => pod.name.clone().unwrap_or_default(),
        "metadata.namespace" => pod.namespace.clone().unwrap_or_default(),
        "metadata.uid" => pod.uid.clone().unwrap_or_default(),
        _ => match keyed("metadata.labels", &pod.labels)
            .or_else(|| keyed("metadata.annotations", &pod.annotations))
        {
            Some(v) => v,
            None => bail!("fieldRef {path} is not a field of the pod's metadata this helper knows"),
        },
    })
}

async fn secret_value(api: &Api<Secret>, name: &str, key: &str) -> anyhow::Result<Option<String>> {
    let Some(secret) = api.get_opt(name).await? else {
        return Ok(None);
    };
    let data = secret.data.unwrap_or_default();
    let string_data = secret.string_data.unwrap_or_default();
    Ok(match (data.get(key), string_data.get(key)) {
        (Some(bytes), _) => {
            Some(String::from_utf8(bytes.0.clone()).context("Secret value is not UTF-8")?)
        }
        (None, Some(s)) => Some(s.clone()),
        (None, None) => None,
    })
}

async fn config_map_value(
    api: &Api<ConfigMap>,
    name: &str,
    key: &str,
) -> anyhow::Result<Option<String>> {
    Ok(api
        .get_opt(name)
        .await?
        .and_then(|c| c.data.unwrap_or_default().get(key).cloned()))
}

async fn env_var(
    var: &EnvVar,
    pod: &ObjectMeta,
    secrets: &Api<Secret>,
    config_maps: &Api<ConfigMap>,
    vars: &BTreeMap<String, String>,
) -> anyhow::Result<Option<String>> {
    let Some(source) = &var.value_from else {
        return Ok(Some(expand(var.value.as_deref().unwrap_or_default(), vars)));
    };
    if let Some(r) = &source.secret_key_ref {
        let value = secret_value(secrets, &r.name, &r.key).await?;
        return match (value, r.optional.unwrap_or(false)) {
            (Some(v), _) => Ok(Some(v)),
            (None, true) => Ok(None),
            (None, false) => bail!(
                "env {}: Secret {} has no key {} (the kubelet would not start the container)",
                var.name,
                r.name,
                r.key
            ),
        };
    }
    if let Some(r) = &source.config_map_key_ref {
        let value = config_map_value(config_maps, &r.name, &r.key).await?;
        return match (value, r.optional.unwrap_or(false)) {
            (Some(v), _) => Ok(Some(v)),
            (None, true) => Ok(None),
            (None, false) => bail!(
                "env {}: ConfigMap {} has no key {}",
                var.name,
                r.name,
                r.key
            ),
        };
    }
    if let Some(f) = &source.field_ref {
        return field(pod, &f.field_path).map(Some);
    }
    bail!(
        "env {}: this helper resolves value, secretKeyRef, configMapKeyRef and fieldRef only",
        var.name
    )
}

/// Resolves `container` of a pod with metadata `pod` in `namespace`, reading Secrets and
/// ConfigMaps through `client`.
pub async fn resolve(
    client: &Client,
    namespace: &str,
    pod: &ObjectMeta,
    container: &Container,
) -> anyhow::Result<ResolvedContainer> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let mut vars = BTreeMap::new();
    let mut env = Vec::new();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let entries: BTreeMap<String, String> = if let Some(s) = &from.secret_ref {
            match secrets.get_opt(&s.name).await? {
                Some(secret) => secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect(),
                None if s.optional.unwrap_or(false) => BTreeMap::new(),
                None => bail!("envFrom: Secret {} not found", s.name),
            }
        } else if let Some(c) = &from.config_map_ref {
            match config_maps.get_opt(&c.name).await? {
                Some(map) => map.data.unwrap_or_default(),
                None if c.optional.unwrap_or(false) => BTreeMap::new(),
                None => bail!("envFrom: ConfigMap {} not found", c.name),
            }
        } else {
            BTreeMap::new()
        };
        for (k, v) in entries {
            let name = format!("{prefix}{k}");
            vars.insert(name.clone(), v.clone());
            env.push((name, v));
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = env_var(var, pod, &secrets, &config_maps, &vars).await? {
            vars.insert(var.name.clone(), value.clone());
            env.push((var.name.clone(), value));
        }
    }
    let argv = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(|a| expand(a, &vars))
        .collect();
    Ok(ResolvedContainer { argv, env })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn expands_like_the_kubelet() {
        let v = vars(&[("POD", "w-1"), ("PORT", "9090"), ("EMPTY", "")]);
        assert_eq!(expand("client.id=$(POD)", &v), "client.id=w-1");
        assert_eq!(expand("$(POD):$(PORT)", &v), "w-1:9090");
        assert_eq!(expand("$(MISSING)", &v), "$(MISSING)", "unknown names stay");
        assert_eq!(expand("$$(POD)", &v), "$(POD)", "$$ escapes");
        assert_eq!(expand("a$$b", &v), "a$b");
        assert_eq!(expand("$(POD", &v), "$(POD", "unclosed stays");
        assert_eq!(expand("cost $5", &v), "cost $5");
        assert_eq!(expand("x$(EMPTY)y", &v), "xy");
        assert_eq!(expand("end$", &v), "end$");
        assert_eq!(expand("", &v), "");
    }

    #[test]
    fn metadata_fields() {
        let pod = ObjectMeta {
            name: Some("p".into()),
            namespace: Some("ns".into()),
            uid: Some("u".into()),
            labels: Some([("app".to_owned(), "a".to_owned())].into()),
            annotations: Some([("note".to_owned(), "n".to_owned())].into()),
            ..ObjectMeta::default()
        };
        assert_eq!(field(&pod, "metadata.name").expect("name"), "p");
        assert_eq!(field(&pod, "metadata.namespace").expect("ns"), "ns");
        assert_eq!(field(&pod, "metadata.uid").expect("uid"), "u");
        assert_eq!(field(&pod, "metadata.labels['app']").expect("label"), "a");
        assert_eq!(field(&pod, "metadata.labels['none']").expect("label"), "");
        assert_eq!(
            field(&pod, "metadata.annotations['note']").expect("annotation"),
            "n"
        );
        assert!(field(&pod, "status.podIP").is_err());
    }
}
