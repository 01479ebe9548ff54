//! The replay ledger ConfigMap `ferry-replays-<consumer>` read and written as the user (the
//! ledger itself, and why it is a ConfigMap, is [`ferry_sidecar::dlq::ledger`]).

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{Patch, PatchParams},
};

use ferry_sidecar::dlq::ledger::{self, Owner};
pub use ferry_sidecar::dlq::ledger::{Ledger, configmap_name};

use crate::{
    cluster::Cluster,
    consumer::ConsumerView,
    error::{Error, Result},
};

/// The field manager the plugin writes with (server-side apply).
pub const FIELD_MANAGER: &str = "kubectl-ferry";

fn owner(consumer: &ConsumerView) -> Owner {
    Owner {
        namespace: consumer.namespace.clone(),
        name: consumer.name.clone(),
        uid: consumer.uid.clone(),
    }
}

/// Reads the consumer's ledger (empty if there is none yet).
pub async fn load(cluster: &Cluster, consumer: &ConsumerView) -> Result<Ledger> {
    let name = configmap_name(&consumer.name);
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &consumer.namespace);
    let found = api.get_opt(&name).await.map_err(|e| {
        Error::from_kube(
            e,
            format!("reading ConfigMap {}/{name}", consumer.namespace),
            format!(
                "get on configmaps in namespace {} (the replay ledger {name})",
                consumer.namespace
            ),
            None,
        )
    })?;
    ledger::from_configmap(found, &owner(consumer)).map_err(Error::unusable)
}

/// Writes the consumer's ledger, with a line about this replay.
pub async fn save(
    cluster: &Cluster,
    consumer: &ConsumerView,
    ledger: &Ledger,
    last: &str,
) -> Result<()> {
    write(cluster, consumer, ledger, last, false).await
}

/// Checks, before anything is sent, that the user may write the ledger (a server-side dry
/// run of the same write), so a replay is never sent and then left unrecorded for want of
/// RBAC.
pub async fn check_writable(
    cluster: &Cluster,
    consumer: &ConsumerView,
    ledger: &Ledger,
) -> Result<()> {
    write(cluster, consumer, ledger, "", true).await
}

async fn write(
    cluster: &Cluster,
    consumer: &ConsumerView,
    ledger: &Ledger,
    last: &str,
    dry_run: bool,
) -> Result<()> {
    let name = configmap_name(&consumer.name);
    let cm = ledger::configmap(&owner(consumer), ledger, last, FIELD_MANAGER);
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &consumer.namespace);
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    if dry_run {
        params = params.dry_run();
    }
    api.patch(&name, &params, &Patch::Apply(&cm))
        .await
        .map_err(|e| {
            Error::from_kube(
                e,
                format!("writing ConfigMap {}/{name}", consumer.namespace),
                format!(
                    "create and patch on configmaps in namespace {} (the replay ledger {name})",
                    consumer.namespace
                ),
                None,
            )
        })?;
    Ok(())
}
