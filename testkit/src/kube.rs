//! Kubernetes namespaces that belong to one test.

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::{TestEnv, cleanup::run_to_completion, unique_name};

impl TestEnv {
    /// A cluster-admin client for the test control plane.
    pub async fn kube_client(&self) -> anyhow::Result<Client> {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig())?;
        let config =
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// Calls the API server has made so far to admission webhooks named `webhook`, by its own
    /// `/metrics` (`apiserver_admission_webhook_request_total`): how a test or benchmark sees
    /// reinvocations, which no object records.
    pub fn webhook_calls(&self, webhook: &str) -> u64 {
        let mut kubectl = self.command("kubectl");
        kubectl.args(["get", "--raw", "/metrics"]);
        let wanted = format!("name=\"{webhook}\"");
        crate::succeed(kubectl)
            .lines()
            .filter(|l| {
                l.starts_with("apiserver_admission_webhook_request_total{") && l.contains(&wanted)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

/// A namespace with a random name, deleted (with everything in it) when dropped.
pub struct TempNamespace {
    name: String,
    client: Client,
    env: &'static TestEnv,
}

impl TempNamespace {
    /// Creates the namespace.
    pub async fn create(env: &'static TestEnv) -> anyhow::Result<TempNamespace> {
        let client = env.kube_client().await?;
        let name = unique_name("test");
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("ferry.dev/test".to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
        Ok(TempNamespace { name, client, env })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A client for the namespace's cluster.
    pub fn client(&self) -> Client {
        self.client.clone()
    }
}

impl Drop for TempNamespace {
    fn drop(&mut self) {
        let name = self.name.clone();
        let env = self.env;
        // A kube Client drives its requests from a task on the runtime that made it, which is
        // blocked while Drop runs: the clean-up needs a client of its own.
        run_to_completion(async move {
            let deleted = async {
                let api = Api::<Namespace>::all(env.kube_client().await?);
                api.delete(&name, &DeleteParams::background()).await?;
                anyhow::Ok(())
            };
            if let Err(e) = deleted.await {
                eprintln!("could not delete test namespace {name}: {e:#}");
            }
        });
    }
}
