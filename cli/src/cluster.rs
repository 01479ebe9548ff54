//! The connection to the API server, exactly as kubectl makes it: the user's kubeconfig
//! (`$KUBECONFIG` or `~/.kube/config`, or `--kubeconfig`), its current context or `--context`,
//! and `--as`/`--as-group` impersonation. Whatever the plugin does, it does with the user's
//! own RBAC.

use clap::Args;
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::error::{Error, Result};

/// The kubectl flags the plugin honours, with kubectl's names.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Kubernetes (as kubectl)")]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    /// Username to impersonate for the operation (kubectl's --as).
    #[arg(long = "as", global = true)]
    pub as_user: Option<String>,
    /// Group to impersonate (kubectl's --as-group; repeatable).
    #[arg(long = "as-group", global = true)]
    pub as_group: Vec<String>,
}

/// A client of the user's cluster and the namespace commands act in.
#[derive(Clone)]
pub struct Cluster {
    /// The API server client, authenticated as the user (or whom they impersonate).
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
}

impl KubeArgs {
    /// Connects as the user.
    pub async fn connect(&self) -> Result<Cluster> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let mut config = match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .map_err(|e| Error::Kubeconfig(format!("{}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await
            }
            None => Config::from_kubeconfig(&options).await,
        }
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
        if let Some(user) = &self.as_user {
            config.auth_info.impersonate = Some(user.clone());
        }
        if !self.as_group.is_empty() {
            config.auth_info.impersonate_groups = Some(self.as_group.clone());
        }
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))?;
        Ok(Cluster { client, namespace })
    }
}
