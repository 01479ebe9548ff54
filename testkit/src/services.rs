//! Stopping and starting the environment's services, for tests that try to break an invariant
//! with a broker or database restart. Such tests must not run beside other tests that need the
//! same service: put them in a test binary of their own and hold [`disruption_lock`].

use std::process::Command;

use anyhow::{Context, ensure};
use tokio::sync::{Mutex, MutexGuard};

use crate::TestEnv;

/// A service of the local environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Kafka,
    Postgres,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Kafka => "kafka",
            Service::Postgres => "postgres",
        }
    }
}

/// Serialises the disruptive tests of one test binary.
pub async fn disruption_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}

impl TestEnv {
    /// Stops a service cleanly (it is down when this returns).
    pub async fn stop_service(&self, service: Service) -> anyhow::Result<()> {
        self.ctl("stop", service).await
    }

    /// Kills a service with SIGKILL, as a crash would (Kafka only; PostgreSQL is stopped
    /// with pg_ctl's immediate mode, which is the same to its clients).
    pub async fn kill_service(&self, service: Service) -> anyhow::Result<()> {
        self.ctl("kill", service).await
    }

    /// Freezes a service (SIGSTOP): its connections stay open but nothing answers, as with a
    /// long garbage-collection pause or a hung host. Kafka only (PostgreSQL has no pid file).
    pub async fn pause_service(&self, service: Service) -> anyhow::Result<()> {
        self.ctl("pause", service).await
    }

    /// Thaws a service frozen by [`TestEnv::pause_service`] (SIGCONT).
    pub async fn resume_service(&self, service: Service) -> anyhow::Result<()> {
        self.ctl("resume", service).await
    }

    /// Starts a stopped service and waits until it is ready.
    pub async fn start_service(&self, service: Service) -> anyhow::Result<()> {
        self.ctl("start", service).await
    }

    async fn ctl(&self, action: &str, service: Service) -> anyhow::Result<()> {
        self.ctl_raw(action, service.name()).await
    }

    /// `ctl.sh ACTION SERVICE` for any service `ctl.sh` knows (`kafka-2` of the cluster, say).
    pub(crate) async fn ctl_raw(&self, action: &str, service: &str) -> anyhow::Result<()> {
        let (ctl, offset) = self.ctl_command()?;
        run_ctl(ctl, offset, action, service.to_owned()).await
    }

    /// The environment's `ctl.sh` and port offset, owned, for a clean-up that runs after
    /// `self` is out of reach (a `Drop`).
    pub(crate) fn ctl_command(&self) -> anyhow::Result<(String, String)> {
        let ctl = self
            .var("FERRY_ENV_CTL")
            .context(".ferry/env does not name FERRY_ENV_CTL")?
            .to_owned();
        // The ports of this environment, not of whatever the caller's shell has.
        let offset = self.var("FERRY_PORT_OFFSET").unwrap_or("0").to_owned();
        Ok((ctl, offset))
    }
}

/// Runs `bash CTL ACTION SERVICE` with this environment's port offset; fails unless it exits 0.
pub(crate) async fn run_ctl(
    ctl: String,
    offset: String,
    action: &str,
    service: String,
) -> anyhow::Result<()> {
    let action = action.to_owned();
    tokio::task::spawn_blocking(move || {
        let status = Command::new("bash")
            .env("FERRY_PORT_OFFSET", offset)
            .arg(&ctl)
            .arg(&action)
            .arg(&service)
            .status()
            .with_context(|| format!("running {ctl} {action} {service}"))?;
        ensure!(
            status.success(),
            "{ctl} {action} {service} failed: {status}"
        );
        Ok(())
    })
    .await?
}
