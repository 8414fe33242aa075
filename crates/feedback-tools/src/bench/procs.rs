//! Child processes of a benchmark step and what they cost: CPU seconds (user + system, from
//! `/proc/<pid>/stat`) and peak resident memory (`VmHWM` from `/proc/<pid>/status`), read
//! while the process still runs (Linux only; elsewhere the figures are absent).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// One process's cost during a step.
#[derive(Debug, Clone, Serialize)]
pub struct ProcCost {
    pub name: String,
    pub cpu_seconds: Option<f64>,
    pub peak_rss_mb: Option<f64>,
}

/// CPU seconds used so far and peak resident memory (MiB) of `pid`.
pub fn sample(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    Some(((utime + stime) / TICKS, hwm_kb / 1024.0))
}

/// CPU seconds of this process so far (the benchmark's own in-process measurements).
pub fn self_cpu() -> Option<f64> {
    sample(std::process::id()).map(|(c, _)| c)
}

/// Resident memory of this process now, in bytes.
pub fn self_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The 1-minute load average now.
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// A server of the local stack (Kafka broker, ClickHouse server) found by the pid file
/// `deploy/local/stack.sh` writes; its CPU is reported per step as a delta.
pub struct Server {
    pid: Option<u32>,
}

impl Server {
    pub fn find(pid_file: &Path) -> Server {
        let pid = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|p| sample(*p).is_some());
        Server { pid }
    }

    pub fn cpu(&self) -> Option<f64> {
        self.pid.and_then(sample).map(|(c, _)| c)
    }
}

/// A child process of a step, sampled until it is stopped.
pub struct Proc {
    pub name: String,
    child: Child,
    last: Option<(f64, f64)>,
}

impl Proc {
    /// Starts `program args` with `envs`, stdout and stderr to `<log_dir>/<name>.log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        envs: &[(String, String)],
        log_dir: &Path,
    ) -> anyhow::Result<Proc> {
        let log = std::fs::File::create(log_dir.join(format!("{name}.log")))?;
        let child = Command::new(program)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start {name} ({}): {e}; is it installed and on PATH? (java for Kafka's \
                     perf tools, clickhouse-client: --clickhouse-client)",
                    program.display()
                )
            })?;
        Ok(Proc {
            name: name.to_string(),
            child,
            last: None,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads the process's cost now (kept for [`Proc::stop`]); errors if it has exited.
    pub fn poll(&mut self, log_dir: &Path) -> anyhow::Result<()> {
        if let Some(s) = sample(self.child.id()) {
            self.last = Some(s);
        }
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!(
                "{} exited early ({status}); see {}",
                self.name,
                log_dir.join(format!("{}.log", self.name)).display()
            );
        }
        Ok(())
    }

    /// Waits for the process to end on its own (sampling every 50 ms), at most `timeout`.
    pub fn wait(mut self, timeout: Duration, log_dir: &Path) -> anyhow::Result<ProcCost> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = sample(self.child.id()) {
                self.last = Some(s);
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::ensure!(
                    status.success(),
                    "{} failed ({status}); see {}",
                    self.name,
                    log_dir.join(format!("{}.log", self.name)).display()
                );
                return Ok(self.cost());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                anyhow::bail!(
                    "{} did not finish within {}s; see {}",
                    self.name,
                    timeout.as_secs(),
                    log_dir.join(format!("{}.log", self.name)).display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn cost(&self) -> ProcCost {
        ProcCost {
            name: self.name.clone(),
            cpu_seconds: self.last.map(|l| l.0),
            peak_rss_mb: self.last.map(|l| l.1).filter(|m| m.is_finite()),
        }
    }

    /// Samples a last time, then stops the process (SIGKILL: the step is over and its
    /// topics and database are dropped) and reaps it.
    pub fn stop(mut self) -> ProcCost {
        if let Some(s) = sample(self.child.id()) {
            self.last = Some(s);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.cost()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
