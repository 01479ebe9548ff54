//! The environment's command-line tools (`kubectl`, `helm`, as `make env-up` builds them) run
//! against the test control plane, for tests of what people and CI run by hand: the chart, the
//! examples' manifests.

use std::{ffi::OsString, path::PathBuf, process::Command};

use crate::TestEnv;

impl TestEnv {
    /// The directories `.ferry/env` puts first on `PATH` (its `PATH="a:b:$PATH"` line, whose
    /// `$PATH` part is this process's own).
    pub fn tool_dirs(&self) -> Vec<PathBuf> {
        self.var("PATH")
            .into_iter()
            .flat_map(|p| p.split(':'))
            .filter(|d| !d.is_empty() && !d.starts_with('$'))
            .map(PathBuf::from)
            .collect()
    }

    /// `program` (looked up on the environment's `PATH` first) with `KUBECONFIG` set to the
    /// test control plane's.
    pub fn command(&self, program: &str) -> Command {
        let mut path: Vec<PathBuf> = self.tool_dirs();
        if let Some(own) = std::env::var_os("PATH") {
            path.extend(std::env::split_paths(&own));
        }
        let path: OsString = std::env::join_paths(path).unwrap_or_default();
        let resolved = self
            .tool_dirs()
            .into_iter()
            .map(|d| d.join(program))
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(program));
        let mut command = Command::new(resolved);
        command
            .env("PATH", path)
            .env("KUBECONFIG", self.kubeconfig());
        command
    }
}
