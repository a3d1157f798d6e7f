//! One run of a connector command (`spec`, `check`, `discover`, `read`) as a child process:
//! stdout read line by line as protocol messages, LOG lines forwarded to the job log, stderr
//! kept as a bounded tail, and how the run ended turned into an error of the right class.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backhaul_core::{Error, Result};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::protocol::{Message, TraceError, parse_line};

/// Lines of stderr and LOG messages kept for the error of a failed run.
const TAIL_LINES: usize = 20;
/// Longest stdout line quoted in the error of a non-protocol line.
const QUOTED_CHARS: usize = 300;

/// How to start the connector: its argv and how long one command may run.
#[derive(Debug, Clone)]
pub struct Connector {
    /// `command` of the spec, the program first.
    pub argv: Vec<String>,
    /// Longest one command may run.
    pub timeout: Duration,
}

impl Connector {
    /// `airbyte connector `<program>``, the name errors use.
    pub fn name(&self) -> String {
        format!(
            "airbyte connector `{}`",
            self.argv.first().map(String::as_str).unwrap_or("")
        )
    }

    /// Starts `<argv> <args>`.
    pub fn start(&self, args: &[OsString]) -> Result<Running> {
        let (program, fixed) = self.argv.split_first().expect("validated: command is not empty");
        let mut child = Command::new(program)
            .args(fixed)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::io(program, e))?;
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let stderr = child.stderr.take().expect("piped");
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_task = tokio::spawn(keep_tail(stderr, stderr_tail.clone()));
        let command = args
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Running {
            name: self.name(),
            command,
            child,
            stdout,
            line: String::new(),
            deadline: Instant::now() + self.timeout,
            timeout: self.timeout,
            stderr_tail,
            stderr_task: Some(stderr_task),
            log_tail: VecDeque::new(),
            trace_error: None,
        })
    }
}

/// A running connector command. Dropping it kills the process.
pub struct Running {
    name: String,
    command: String,
    child: Child,
    stdout: BufReader<ChildStdout>,
    line: String,
    deadline: Instant,
    timeout: Duration,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_task: Option<JoinHandle<()>>,
    log_tail: VecDeque<String>,
    trace_error: Option<TraceError>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = self.stderr_task.take() {
            task.abort();
        }
    }
}

impl Running {
    /// The next message other than LOG and TRACE (which go to the job log, an ERROR trace
    /// being kept for the failure), or `None` at the end of stdout. A line that is not a
    /// protocol message fails the run.
    pub async fn next(&mut self) -> Result<Option<Message>> {
        loop {
            self.line.clear();
            let read = tokio::time::timeout_at(self.deadline, self.stdout.read_line(&mut self.line)).await;
            let n = match read {
                Err(_) => return Err(self.timed_out().await),
                Ok(Err(e)) => return Err(self.failed(format!("reading its stdout failed: {e}")).await),
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                return Ok(None);
            }
            let text = self.line.trim();
            if text.is_empty() {
                continue;
            }
            let Some(message) = parse_line(text) else {
                let quoted: String = text.chars().take(QUOTED_CHARS).collect();
                return Err(self
                    .failed(format!(
                        "it printed a line on stdout that is not an Airbyte message: `{quoted}`"
                    ))
                    .await);
            };
            match message.kind.as_str() {
                "LOG" => {
                    if let Some(log) = &message.log {
                        self.log(&log.level, &log.message);
                    }
                }
                "TRACE" => {
                    if let Some(error) = message.trace.and_then(|t| t.error) {
                        tracing::error!(connector = %self.name, failure_type = ?error.failure_type, "{}", error.message);
                        self.trace_error = Some(error);
                    }
                }
                _ => return Ok(Some(message)),
            }
        }
    }

    /// Waits for the process to exit once stdout ended: fails when it exited non-zero or
    /// reported an ERROR trace.
    pub async fn finish(mut self) -> Result<()> {
        let status = match tokio::time::timeout_at(self.deadline, self.child.wait()).await {
            Err(_) => return Err(self.timed_out().await),
            Ok(Err(e)) => return Err(self.failed(format!("waiting for it failed: {e}")).await),
            Ok(Ok(status)) => status,
        };
        if status.success() && self.trace_error.is_none() {
            return Ok(());
        }
        Err(self.failed(exit_text(status)).await)
    }

    fn log(&mut self, level: &str, message: &str) {
        let name = &self.name;
        match level {
            "FATAL" | "ERROR" => tracing::error!(connector = %name, "{message}"),
            "WARN" => tracing::warn!(connector = %name, "{message}"),
            "INFO" => tracing::info!(connector = %name, "{message}"),
            _ => tracing::debug!(connector = %name, "{message}"),
        }
        if self.log_tail.len() == TAIL_LINES {
            self.log_tail.pop_front();
        }
        self.log_tail.push_back(format!("{level} {message}"));
    }

    async fn timed_out(&mut self) -> Error {
        let _ = self.child.kill().await;
        let last = self.last_messages().await;
        let message = format!(
            "`{}` ran longer than the {:?} `timeout`{last}",
            self.command, self.timeout
        );
        Error::Unreachable {
            system: self.name.clone(),
            message,
        }
    }

    /// The error of a failed run: the class follows the connector's ERROR trace
    /// (`transient_error` is retried), anything else is permanent.
    async fn failed(&mut self, what: String) -> Error {
        // A process that broke the protocol is stopped before its tail is read.
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let trace = match &self.trace_error {
            Some(e) => format!(
                "; its error ({}): {}",
                e.failure_type.as_deref().unwrap_or("unspecified"),
                e.message
            ),
            None => String::new(),
        };
        let last = self.last_messages().await;
        let message = format!("`{}` failed: {what}{trace}{last}", self.command);
        match self.trace_error.as_ref().and_then(|e| e.failure_type.as_deref()) {
            Some("transient_error") => Error::Unreachable {
                system: self.name.clone(),
                message,
            },
            _ => Error::InvalidObject {
                object: self.name.clone(),
                message,
            },
        }
    }

    /// The last LOG messages and stderr lines, for an error.
    async fn last_messages(&mut self) -> String {
        if let Some(task) = self.stderr_task.take() {
            // stderr closes when the process exits; a grandchild holding it open is not waited for.
            if tokio::time::timeout(Duration::from_secs(2), task).await.is_err() {
                tracing::debug!(connector = %self.name, "stderr still open after exit");
            }
        }
        let mut text = String::new();
        if !self.log_tail.is_empty() {
            text.push_str("\nlast log messages:\n  ");
            text.push_str(&Vec::from(self.log_tail.clone()).join("\n  "));
        }
        let stderr = self.stderr_tail.lock().expect("not poisoned").clone();
        if !stderr.is_empty() {
            text.push_str("\nlast stderr lines:\n  ");
            text.push_str(&Vec::from(stderr).join("\n  "));
        }
        text
    }
}

fn exit_text(status: ExitStatus) -> String {
    match status.code() {
        Some(0) => "reported an error and exited with status 0".into(),
        Some(code) => format!("exited with status {code}"),
        None => "exited on a signal".into(),
    }
}

/// Keeps the last [`TAIL_LINES`] lines of `stream` in `tail`, each also logged at debug.
async fn keep_tail(stream: impl AsyncRead + Unpin, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(target: "backhaul_source_airbyte::stderr", "{line}");
        let mut tail = tail.lock().expect("not poisoned");
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}
