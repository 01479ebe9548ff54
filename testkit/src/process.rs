//! Ferry binaries run as real child processes, so tests can crash them (`kill -9`), stop them
//! politely (SIGTERM) and read what they logged.

use std::{
    path::Path,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::process::{Child, Command};

/// A child process that is killed when dropped, so a failing test leaves nothing behind.
pub struct ChildProcess {
    child: Child,
    name: String,
}

impl ChildProcess {
    /// Starts `program` with `args` and extra environment `envs`; its stdout and stderr go to
    /// `$FERRY_TEST_LOGS/<name>.log` when that variable is set, else are inherited (captured by
    /// the test harness).
    pub fn spawn(
        name: &str,
        program: impl AsRef<Path>,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<ChildProcess> {
        let mut command = Command::new(program.as_ref());
        command.args(args).kill_on_drop(true).stdin(Stdio::null());
        for (k, v) in envs {
            command.env(k, v);
        }
        if let Some(dir) = std::env::var_os("FERRY_TEST_LOGS") {
            std::fs::create_dir_all(&dir)?;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(Path::new(&dir).join(format!("{name}.log")))?;
            command.stdout(log.try_clone()?).stderr(log);
        }
        let child = command.spawn()?;
        Ok(ChildProcess {
            child,
            name: name.to_owned(),
        })
    }

    /// The process id (for signals sent by hand).
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL, as a crash or an OOM kill would: no clean-up runs. Waits until it is gone.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// SIGTERM, as Kubernetes sends at shutdown; waits up to `grace` for the exit, then kills.
    /// Returns the exit status if the process exited by itself within the grace period.
    pub async fn terminate(&mut self, grace: Duration) -> anyhow::Result<Option<ExitStatus>> {
        if let Some(pid) = self.child.id() {
            let pid = i32::try_from(pid)?;
            // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
            let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
            anyhow::ensure!(rc == 0, "kill(SIGTERM) failed for {}", self.name);
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok(Some(status?)),
            Err(_) => {
                self.child.kill().await?;
                Ok(None)
            }
        }
    }

    /// Whether the process has exited, without waiting.
    pub fn try_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Waits for the process to exit by itself.
    pub async fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        Ok(self.child.wait().await?)
    }
}

/// Peak resident set size (VmHWM) of process `pid`, in KiB: the memory figure the benchmarks
/// report against DESIGN §10's targets.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
