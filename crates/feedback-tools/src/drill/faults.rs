//! The faults a drill injects, their seeded plan, and the stop/start commands of Kafka and
//! ClickHouse with a guard that starts again whatever the drill stopped, also when the
//! drill fails or is interrupted.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    KillCollector,
    KillAttributor,
    KillSink,
    KafkaRestart,
    ClickhouseRestart,
    ClickhouseOutage,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::KillCollector,
        Fault::KillAttributor,
        Fault::KillSink,
        Fault::KafkaRestart,
        Fault::ClickhouseRestart,
        Fault::ClickhouseOutage,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Fault::KillCollector => "SIGKILL collector",
            Fault::KillAttributor => "SIGKILL attributor",
            Fault::KillSink => "SIGKILL sink",
            Fault::KafkaRestart => "Kafka broker restart",
            Fault::ClickhouseRestart => "ClickHouse restart",
            Fault::ClickhouseOutage => "ClickHouse outage",
        }
    }

    /// A rough duration, used only to pace the traffic across the faults.
    pub fn estimate(self, outage: Duration) -> Duration {
        match self {
            Fault::KillCollector | Fault::KillAttributor | Fault::KillSink => {
                Duration::from_millis(200)
            }
            Fault::KafkaRestart => Duration::from_secs(12),
            Fault::ClickhouseRestart => Duration::from_secs(4),
            Fault::ClickhouseOutage => outage + Duration::from_secs(4),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// `per_kind` faults of every kind in a seeded random order, each after a seeded random
/// pause of `min_gap..=max_gap`.
pub fn plan(
    rng: &mut ChaCha8Rng,
    per_kind: u32,
    min_gap: Duration,
    max_gap: Duration,
) -> Vec<(Duration, Fault)> {
    let mut faults: Vec<Fault> = Fault::ALL
        .iter()
        .flat_map(|f| std::iter::repeat_n(*f, per_kind as usize))
        .collect();
    faults.shuffle(rng);
    let (lo, hi) = (min_gap.as_millis() as u64, max_gap.as_millis() as u64);
    faults
        .into_iter()
        .map(|f| (Duration::from_millis(rng.random_range(lo..=hi.max(lo))), f))
        .collect()
}

/// Shell commands that stop and start the shared services.
#[derive(Clone, Debug)]
pub struct ServiceCommands {
    pub kafka_stop: String,
    pub kafka_start: String,
    pub clickhouse_stop: String,
    pub clickhouse_start: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Kafka,
    Clickhouse,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Kafka => "Kafka",
            Service::Clickhouse => "ClickHouse",
        }
    }
}

/// Runs the stop/start commands and remembers what is down; dropping it starts again what
/// this drill stopped (also on error, panic or Ctrl-C).
pub struct Services {
    cmds: ServiceCommands,
    down: Arc<Mutex<Vec<Service>>>,
    /// Held while a command runs: the guard waits for an interrupted stop to finish
    /// before it starts the service again.
    busy: Arc<Mutex<()>>,
}

/// How long one start command may take before the drill gives up on it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

fn run_shell(cmd: &str) -> anyhow::Result<()> {
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{cmd}`"))?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(());
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            anyhow::bail!("`{cmd}` failed ({status}): {}", err.trim());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "`{cmd}` did not finish within {}s",
                COMMAND_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Services {
    pub fn new(cmds: ServiceCommands) -> Services {
        Services {
            cmds,
            down: Arc::new(Mutex::new(Vec::new())),
            busy: Arc::new(Mutex::new(())),
        }
    }

    fn cmd(&self, s: Service, start: bool) -> String {
        match (s, start) {
            (Service::Kafka, false) => self.cmds.kafka_stop.clone(),
            (Service::Kafka, true) => self.cmds.kafka_start.clone(),
            (Service::Clickhouse, false) => self.cmds.clickhouse_stop.clone(),
            (Service::Clickhouse, true) => self.cmds.clickhouse_start.clone(),
        }
    }

    pub async fn stop(&self, s: Service) -> anyhow::Result<()> {
        self.down.lock().unwrap().push(s);
        let cmd = self.cmd(s, false);
        let busy = self.busy.clone();
        tokio::task::spawn_blocking(move || {
            let _g = busy.lock().unwrap_or_else(|p| p.into_inner());
            run_shell(&cmd)
        })
        .await?
        .with_context(|| format!("stopping {} failed", s.name()))
    }

    /// Starts `s` (three attempts); it counts as up again only when a command succeeded.
    pub async fn start(&self, s: Service) -> anyhow::Result<()> {
        let cmd = self.cmd(s, true);
        let mut last = None;
        for _ in 0..3 {
            let c = cmd.clone();
            let busy = self.busy.clone();
            match tokio::task::spawn_blocking(move || {
                let _g = busy.lock().unwrap_or_else(|p| p.into_inner());
                run_shell(&c)
            })
            .await?
            {
                Ok(()) => {
                    self.down.lock().unwrap().retain(|d| *d != s);
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "starting {} failed; trying again", s.name());
                    last = Some(e);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
        Err(last.unwrap().context(format!(
            "{} could not be started again; start it by hand ({cmd})",
            s.name()
        )))
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        let _g = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let down: Vec<Service> =
            std::mem::take(&mut *self.down.lock().unwrap_or_else(|p| p.into_inner()));
        for s in down {
            let cmd = self.cmd(s, true);
            eprintln!("drill: starting {} again: {cmd}", s.name());
            if let Err(e) = run_shell(&cmd) {
                eprintln!(
                    "drill: could not start {} again ({e:#}); start it by hand",
                    s.name()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn plan_has_every_kind_the_asked_number_of_times_in_a_seeded_order() {
        let p = |seed| {
            plan(
                &mut ChaCha8Rng::seed_from_u64(seed),
                10,
                Duration::from_millis(500),
                Duration::from_millis(3000),
            )
        };
        let a = p(7);
        assert_eq!(a.len(), 60);
        for f in Fault::ALL {
            assert_eq!(a.iter().filter(|(_, g)| *g == f).count(), 10, "{f}");
        }
        assert!(a
            .iter()
            .all(|(d, _)| (500..=3000).contains(&(d.as_millis() as u64))));
        assert_eq!(a, p(7));
        assert_ne!(a, p(8));
    }

    #[tokio::test]
    async fn dropping_the_guard_starts_again_what_was_stopped_and_only_that() {
        let dir = std::env::temp_dir().join(format!("drill-guard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mark = |n: &str| format!("touch {}", dir.join(n).display());
        let services = Services::new(ServiceCommands {
            kafka_stop: "true".into(),
            kafka_start: mark("kafka-started"),
            clickhouse_stop: "true".into(),
            clickhouse_start: mark("clickhouse-started"),
        });
        services.stop(Service::Kafka).await.unwrap();
        services.stop(Service::Clickhouse).await.unwrap();
        services.start(Service::Clickhouse).await.unwrap();
        std::fs::remove_file(dir.join("clickhouse-started")).unwrap();
        drop(services); // as when a drill fails with Kafka down
        assert!(dir.join("kafka-started").exists());
        assert!(!dir.join("clickhouse-started").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_failing_stop_command_says_which_and_why() {
        let services = Services::new(ServiceCommands {
            kafka_stop: "echo no such broker >&2; exit 3".into(),
            kafka_start: "true".into(),
            clickhouse_stop: "true".into(),
            clickhouse_start: "true".into(),
        });
        let e = format!("{:#}", services.stop(Service::Kafka).await.unwrap_err());
        assert!(e.contains("stopping Kafka failed"), "{e}");
        assert!(e.contains("no such broker"), "{e}");
    }
}
