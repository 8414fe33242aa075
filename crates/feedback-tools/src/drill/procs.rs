//! The pipeline's processes under the drill: `feedback collector|attributor|sink` children
//! of this process, SIGKILLed and started again on purpose, watched for exits nobody asked
//! for. Only pids this process started are ever signalled.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// One component: how to start it and its current process.
pub struct Proc {
    pub name: &'static str,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// Processes started (first start included).
    pub starts: u32,
    /// Exits this drill did not cause: (exit status, when).
    pub unexpected: Vec<String>,
}

impl Proc {
    pub fn new(
        name: &'static str,
        args: Vec<String>,
        envs: Vec<(String, String)>,
        log_dir: &Path,
    ) -> Proc {
        Proc {
            name,
            args,
            envs,
            log: log_dir.join(format!("{name}.log")),
            child: None,
            starts: 0,
            unexpected: Vec::new(),
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Starts the process (its output appended to its log file); returns its pid.
    pub fn start(&mut self) -> anyhow::Result<u32> {
        let exe = std::env::current_exe().context("cannot find the feedback executable")?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open log file {}", self.log.display()))?;
        let err = log.try_clone()?;
        let mut cmd = Command::new(exe);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start `feedback {}`", self.args.join(" ")))?;
        let pid = child.id();
        self.child = Some(child);
        self.starts += 1;
        Ok(pid)
    }

    /// SIGKILL (no clean shutdown) and reap; returns the pid killed.
    pub fn kill(&mut self) -> Option<u32> {
        let mut c = self.child.take()?;
        let pid = c.id();
        // `Child::kill` sends SIGKILL on Unix, to this child's pid only.
        let _ = c.kill();
        let _ = c.wait();
        Some(pid)
    }

    /// If the process exited on its own, records it and returns its status.
    pub fn check_exit(&mut self, at: f64) -> Option<String> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(status)) => {
                let pid = c.id();
                self.child = None;
                let what = format!("pid {pid} exited on its own ({status}) at {at:.1}s");
                self.unexpected.push(what.clone());
                Some(what)
            }
            _ => None,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
