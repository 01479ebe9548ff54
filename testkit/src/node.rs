//! The real node `make env-up` starts beside the KWOK nodes (`scripts/env/node.sh`): a kubelet
//! with containerd, where a pod's containers really run. Tests put a pod there by pinning it
//! ([`RealNode::pin`]), or every pod of a namespace, including those controllers create from
//! templates the test does not write ([`RealNode::claim`]); every other pod keeps landing on the
//! KWOK nodes, since the real node is tainted.

use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod, PodSpec, Toleration};
use kube::{
    Api,
    api::{LogParams, Patch, PatchParams},
};

use crate::{TempNamespace, TempSchema, TestEnv, in_ci};

/// The namespace annotation the API server's `PodNodeSelector` admission plugin merges into
/// each new pod's `nodeSelector` (enabled in `scripts/env/services.sh`).
const NODE_SELECTOR_ANNOTATION: &str = "scheduler.alpha.kubernetes.io/node-selector";
/// The namespace annotation the `PodTolerationRestriction` admission plugin merges into each
/// new pod's tolerations (a JSON list).
const DEFAULT_TOLERATIONS_ANNOTATION: &str = "scheduler.alpha.kubernetes.io/defaultTolerations";

/// How long a pod on the real node may take to reach the state a test waits for: images are
/// local, but a loaded 2-core machine starts a sandbox and its containers in seconds, not
/// milliseconds.
const POD_DEADLINE: Duration = Duration::from_secs(180);

/// The real node of the environment, as `.ferry/env` describes it.
#[derive(Debug, Clone)]
pub struct RealNode {
    name: String,
    taint_key: String,
    ip: String,
    testbox_image: String,
    kafka_bootstrap: String,
    database_url: String,
}

impl TestEnv {
    /// The real node, or `None` (after printing why) when this environment runs without one
    /// outside CI. Under `CI=true` a missing node panics: CI never skips.
    pub fn real_node(&self) -> Option<RealNode> {
        let node = (|| {
            Some(RealNode {
                name: self.var("FERRY_NODE_NAME")?.to_owned(),
                taint_key: self.var("FERRY_NODE_TAINT")?.to_owned(),
                ip: self.var("FERRY_NODE_IP")?.to_owned(),
                testbox_image: self.var("FERRY_TESTBOX_IMAGE")?.to_owned(),
                kafka_bootstrap: self.var("FERRY_NODE_KAFKA_BOOTSTRAP")?.to_owned(),
                database_url: self.var("FERRY_NODE_DATABASE_URL")?.to_owned(),
            })
        })();
        if node.is_none() {
            let reason = match self.var("FERRY_NODE") {
                Some("off") => "the environment was started with FERRY_NODE=off",
                _ => "`.ferry/env` names no real node (an environment from before the node)",
            };
            assert!(
                !in_ci(),
                "CI=true but there is no real node: {reason}; run `make env-up`"
            );
            eprintln!("skipped: no real node ({reason}); run `make env-up`");
        }
        node
    }
}

impl RealNode {
    /// The node's name (`ferry-node`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's address: the gateway of the pods' bridge, where host services that pods
    /// use listen.
    pub fn ip(&self) -> &str {
        &self.ip
    }

    /// A local image with a static busybox (`sh`, `httpd`, `nslookup`, `wget`) whose default
    /// user is the non-root 65532.
    pub fn testbox_image(&self) -> &str {
        &self.testbox_image
    }

    /// Kafka's bootstrap address for pods on the node: a listener on the node's address with
    /// the same SASL users as `FERRY_KAFKA_BOOTSTRAP` (which is loopback, out of pods' reach).
    pub fn kafka_bootstrap(&self) -> &str {
        &self.kafka_bootstrap
    }

    /// PostgreSQL's DSN for pods on the node (the host's server, listening on the node's
    /// address too); the host's own tests use `FERRY_DATABASE_URL` on loopback.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// A DSN for pods on the node whose sessions use `schema`.
    pub fn schema_url(&self, schema: &TempSchema) -> String {
        schema.url_on(&self.database_url)
    }

    /// Schedules `spec` onto the real node: selects it by hostname and tolerates its taint.
    pub fn pin(&self, spec: &mut PodSpec) {
        spec.node_selector
            .get_or_insert_with(Default::default)
            .insert("kubernetes.io/hostname".to_owned(), self.name.clone());
        spec.tolerations
            .get_or_insert_with(Vec::new)
            .push(self.toleration());
    }

    /// Puts every pod created in `namespace` from now on onto the real node, as [`Self::pin`]
    /// does for one: the namespace's annotations, which the API server's `PodNodeSelector` and
    /// `PodTolerationRestriction` admission plugins merge into each new pod. For pods a
    /// controller creates from a template the test does not write (an operator's worker
    /// Deployment), as a cluster admin dedicates nodes to a namespace.
    pub async fn claim(&self, namespace: &TempNamespace) -> anyhow::Result<()> {
        let tolerations = serde_json::to_string(&[self.toleration()])?;
        let patch = serde_json::json!({"metadata": {"annotations": {
            NODE_SELECTOR_ANNOTATION: format!("kubernetes.io/hostname={}", self.name),
            DEFAULT_TOLERATIONS_ANNOTATION: tolerations,
        }}});
        Api::<Namespace>::all(namespace.client())
            .patch(
                namespace.name(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .with_context(|| format!("annotating namespace {}", namespace.name()))?;
        Ok(())
    }

    /// Tolerates the node's taint, whatever its value.
    fn toleration(&self) -> Toleration {
        Toleration {
            key: Some(self.taint_key.clone()),
            operator: Some("Exists".to_owned()),
            effect: Some("NoSchedule".to_owned()),
            ..Toleration::default()
        }
    }
}

/// The image `make images` builds for one of Ferry's binaries (`ferry-operator`,
/// `ferry-sidecar`), tagged with the workspace's version, as the node's containerd knows it.
pub fn ferry_image(binary: &str) -> String {
    format!("docker.io/ferry/{binary}:{}", env!("CARGO_PKG_VERSION"))
}

/// Polls the pod until `done` holds, and returns it; an error naming `what` and the pod's last
/// status when [`POD_DEADLINE`] passes first or the pod failed.
pub async fn wait_for_pod(
    pods: &Api<Pod>,
    name: &str,
    what: &str,
    done: impl Fn(&Pod) -> bool,
) -> anyhow::Result<Pod> {
    let deadline = tokio::time::Instant::now() + POD_DEADLINE;
    loop {
        let pod = pods
            .get(name)
            .await
            .with_context(|| format!("reading pod {name}"))?;
        if done(&pod) {
            return Ok(pod);
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if phase == Some("Failed") || tokio::time::Instant::now() >= deadline {
            bail!(
                "pod {name} is not {what} (phase {phase:?}); its status: {:?}",
                pod.status
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether the pod's Ready condition is true.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// One container's log, read through the API server from the kubelet (what `kubectl logs`
/// does).
pub async fn container_log(pods: &Api<Pod>, pod: &str, container: &str) -> anyhow::Result<String> {
    let params = LogParams {
        container: Some(container.to_owned()),
        ..LogParams::default()
    };
    pods.logs(pod, &params)
        .await
        .with_context(|| format!("logs of {pod}/{container}"))
}
