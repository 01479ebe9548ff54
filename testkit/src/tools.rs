//! The environment's command-line tools (`kubectl`, `helm`, as `make env-up` builds them) run
//! against the test control plane, for tests of what people and CI run by hand: the chart, the
//! examples' manifests.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

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

/// The top of the workspace (where `charts/`, `examples/` and `crds/` are).
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    here.canonicalize().unwrap_or(here)
}

/// Runs `command` to its end; panics if it cannot be started.
pub fn run(mut command: Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Runs `command`, panics with its stderr unless it succeeds, and returns its stdout.
pub fn succeed(command: Command) -> String {
    let shown = format!("{command:?}");
    let out = run(command);
    assert!(
        out.status.success(),
        "{shown} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `command` with `input` on its stdin; panics with its stderr unless it succeeds, and
/// returns its stdout.
pub fn succeed_with_input(mut command: Command, input: &str) -> String {
    use std::io::Write as _;
    let shown = format!("{command:?}");
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("writing to {shown}: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
