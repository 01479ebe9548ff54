//! What the operator's integration tests share: installing the CRDs from `crds/` into the test
//! API server, and waiting with a deadline.

#![allow(dead_code)] // each test binary uses a different part of it

use std::{future::Future, path::PathBuf, time::Duration};

use anyhow::Context;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use tokio::sync::OnceCell;

/// Installs every CRD in `crds/` with server-side apply (idempotent, safe in parallel) and
/// waits until the API server serves them. Done once per test binary.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_try_init(|| async {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds");
            let api = Api::<CustomResourceDefinition>::all(client.clone());
            let mut names = Vec::new();
            for entry in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
                let path = entry?.path();
                if path.extension().is_none_or(|e| e != "yaml") {
                    continue;
                }
                let text = std::fs::read_to_string(&path)?;
                let crd: CustomResourceDefinition = serde_saphyr::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?;
                let name = crd.metadata.name.clone().context("CRD without a name")?;
                api.patch(
                    &name,
                    &PatchParams::apply("ferry-tests").force(),
                    &Patch::Apply(&crd),
                )
                .await
                .with_context(|| format!("applying {name}"))?;
                names.push(name);
            }
            for name in names {
                eventually(Duration::from_secs(30), || {
                    let api = api.clone();
                    let name = name.clone();
                    async move {
                        let crd = api.get(&name).await.ok()?;
                        let established = crd
                            .status?
                            .conditions?
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True");
                        established.then_some(())
                    }
                })
                .await
                .with_context(|| format!("CRD {name} not established"))?;
            }
            anyhow::Ok(())
        })
        .await?;
    Ok(())
}

/// Polls `check` every 200 ms until it returns `Some`, or fails after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if start.elapsed() > deadline {
            anyhow::bail!("condition not met within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
