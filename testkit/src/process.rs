//! Runs a binary as a child process with only the environment a test gives it, because some behaviour only
//! exists in a real process: exit codes, signal handling, and the Azure SDK reading IDENTITY_ENDPOINT and
//! friends from the process environment.
//!
//! [`run`] runs to completion and returns the exit code and output. [`Process`] keeps a child running and
//! captures its stdout line by line; [`Process::wait_for_log`] wakes on each new line (or the end of the
//! output), so waiting for a log line never depends on a timer.

use std::ffi::OsStr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::lock;

/// How long any wait on a child may take before the test fails: a bound against hanging, not a timing
/// assertion, so it is generous for a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(40);

/// `program args…` with a cleared environment plus `env`, no stdin, killed if the handle is dropped.
pub fn command(program: impl AsRef<OsStr>, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs to completion: the exit code (-1 when killed by a signal), stdout and stderr.
///
/// # Panics
/// If the program does not exit within [`PATIENCE`] (it is killed then): a `serve` that should have refused
/// its configuration but started instead fails the test rather than hanging it.
pub async fn run(
    program: impl AsRef<OsStr>,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let out = tokio::time::timeout(PATIENCE, command(program, args, env).output())
        .await
        .unwrap_or_else(|_| panic!("{args:?} did not exit within {PATIENCE:?}"))
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[derive(Default)]
struct Captured {
    lines: Vec<String>,
    /// Stdout reached its end: the process exited (or closed it), no more lines will come.
    ended: bool,
}

#[derive(Default)]
struct Log {
    captured: Mutex<Captured>,
    changed: Notify,
}

/// A running child whose stdout lines are captured; stderr passes through to the test's output.
pub struct Process {
    child: Child,
    log: Arc<Log>,
}

impl Process {
    /// Starts `program` as [`command`] does, capturing stdout.
    pub fn spawn(program: impl AsRef<OsStr>, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = command(program, args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let log = Arc::new(Log::default());
        let sink = Arc::clone(&log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                lock(&sink.captured).lines.push(line);
                sink.changed.notify_waiters();
            }
            lock(&sink.captured).ended = true;
            sink.changed.notify_waiters();
        });
        Self { child, log }
    }

    /// The child's process id, to read what the kernel says about it (/proc/PID/status).
    ///
    /// # Panics
    /// If the child has already been waited for.
    pub fn id(&self) -> u32 {
        self.child.id().expect("the process is running")
    }

    /// Every stdout line so far.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.log.captured).lines.clone()
    }

    /// Every stdout line so far, parsed.
    ///
    /// # Panics
    /// If a line is not JSON: the binaries under test log one JSON object per line.
    pub fn json_lines(&self) -> Vec<Value> {
        lock(&self.log.captured)
            .lines
            .iter()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"))
            })
            .collect()
    }

    /// Waits for the first line that `matches`, woken by each new line.
    ///
    /// # Panics
    /// If the output ends first, or nothing matches within [`PATIENCE`]; both show the logs.
    pub async fn wait_for_log(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let changed = self.log.changed.notified();
            if let Some(found) = self.json_lines().into_iter().find(|l| matches(l)) {
                return found;
            }
            assert!(
                !lock(&self.log.captured).ended,
                "the process ended its output before {what}; logs:\n{}",
                self.lines().join("\n")
            );
            assert!(
                tokio::time::timeout_at(deadline, changed).await.is_ok(),
                "no log line for {what}; logs:\n{}",
                self.lines().join("\n")
            );
        }
    }

    /// Sends a signal by name (`TERM`, `INT`), as `kill -TERM` would.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the process is running").to_string();
        let status = std::process::Command::new("kill")
            .args([format!("-{name}").as_str(), &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// Waits (within [`PATIENCE`]) for the process to exit and for the rest of its output, so
    /// [`Process::lines`] is complete afterwards.
    pub async fn wait(&mut self) -> ExitStatus {
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("the process exits")
            .expect("exit status");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let changed = self.log.changed.notified();
            if lock(&self.log.captured).ended {
                return status;
            }
            assert!(
                tokio::time::timeout_at(deadline, changed).await.is_ok(),
                "the process exited but its output never ended"
            );
        }
    }
}
