//! The real `mqtt-whisk-provider` binary as a child process: its logs, its HTTP endpoints,
//! signals and exit.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use test_support::{http_client, poll_until, poll_until_async};

const BINARY: &str = env!("CARGO_BIN_EXE_mqtt-whisk-provider");
/// Deadline for announcing the HTTP port, and for `run_to_exit`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the output readers may lag behind an exit.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of one request to the daemon's HTTP endpoints.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many log lines a panic message shows.
const LOG_TAIL_LINES: usize = 200;

/// A running daemon; SIGKILLed on drop if still running.
pub struct Daemon {
    child: Child,
    /// Set once the child has been reaped: until then its pid cannot name another process.
    exit_status: Option<ExitStatus>,
    pid: u32,
    /// Port of the HTTP endpoints, read from the daemon's startup log line.
    http_port: u16,
    /// stdout and stderr, line by line, as they arrive.
    lines: Arc<Mutex<Vec<String>>>,
    /// Threads copying stdout and stderr into `lines` (so a busy test thread never lets
    /// the pipes fill up and block the daemon); they end at EOF.
    readers: Vec<JoinHandle<()>>,
    http: reqwest::Client,
}

/// What a run to completion printed, and how it ended.
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything written to stdout (lossy UTF-8).
    pub stdout: String,
    /// Everything written to stderr (lossy UTF-8).
    pub stderr: String,
}

impl Daemon {
    /// Starts the daemon without arguments; see [`Daemon::spawn_with_args`].
    pub async fn spawn(env: &[(&str, String)]) -> Daemon {
        Daemon::spawn_with_args(&[], env).await
    }

    /// Starts the daemon with a clean environment: `PATH`, `LOG_FORMAT=json`, `HTTP_PORT=0`,
    /// `RUST_LOG=info,mqtt_whisk_provider=debug`, then `env` (which overrides those), and
    /// waits up to 20 s for the log line that announces its HTTP address.
    ///
    /// Set `TEST_LOG` to see its output on the test's stderr, prefixed with its pid.
    pub async fn spawn_with_args(args: &[&str], env: &[(&str, String)]) -> Daemon {
        let mut vars: BTreeMap<&str, String> = BTreeMap::from([
            ("LOG_FORMAT", "json".to_string()),
            ("HTTP_PORT", "0".to_string()),
            ("RUST_LOG", "info,mqtt_whisk_provider=debug".to_string()),
        ]);
        vars.extend(env.iter().map(|(name, value)| (*name, value.clone())));
        let mut child = command(args, vars)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mqtt-whisk-provider");
        let pid = child.id();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            copy_lines(
                child.stdout.take().expect("piped stdout"),
                pid,
                Arc::clone(&lines),
            ),
            copy_lines(
                child.stderr.take().expect("piped stderr"),
                pid,
                Arc::clone(&lines),
            ),
        ];
        let mut daemon = Daemon {
            child,
            exit_status: None,
            pid,
            http_port: 0,
            lines,
            readers,
            http: http_client(HTTP_TIMEOUT),
        };
        daemon.wait_for_http_port().await;
        daemon
    }

    /// GET `path` (e.g. `/readyz`) on the daemon's HTTP port: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} on the daemon (pid {}) failed: {e}", self.pid))
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        let last = RefCell::new(None);
        let ready = poll_until_async(timeout, || async {
            let answer = self.try_get("/readyz").await.map_err(|e| e.to_string());
            let ready = matches!(answer, Ok((200, _)));
            *last.borrow_mut() = Some(answer);
            ready
        })
        .await;
        assert!(
            ready,
            "timed out after {timeout:?} waiting for the daemon to be ready; last /readyz: {:?}\n{}",
            last.borrow(),
            self.log_tail()
        );
    }

    /// The value of the `/metrics` sample whose series (name and labels, exactly as
    /// printed) is `name_with_labels`, e.g.
    /// `mqtt_whisk_fires_total{kind="message",outcome="accepted",status="202"}`.
    pub async fn metric(&self, name_with_labels: &str) -> Option<f64> {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics answered {status}: {body}");
        body.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.strip_prefix(name_with_labels)?.strip_prefix(' '))
            .find_map(|rest| rest.split_whitespace().next()?.parse().ok())
    }

    /// The sum of every `/metrics` sample named `name`, whatever its labels (a family
    /// with one series per connection, say); `None` if there is none.
    pub async fn metric_sum(&self, name: &str) -> Option<f64> {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "GET /metrics answered {status}: {body}");
        test_support::metric_sum(&body, name)
    }

    /// Every line printed so far (stdout and stderr interleaved).
    pub fn logs(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Every line printed so far, joined with newlines.
    pub fn log_text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until a printed line contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let found = poll_until(timeout, || {
            let lines = self.lines.lock().unwrap();
            lines.iter().any(|line| line.contains(needle))
        })
        .await;
        assert!(
            found,
            "timed out after {timeout:?} waiting for a log line containing {needle:?}\n{}",
            self.log_tail()
        );
    }

    /// The port of the daemon's HTTP endpoints.
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends SIGTERM (graceful shutdown) unless the daemon is known to have exited.
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends SIGKILL unless the daemon is known to have exited.
    pub fn sigkill(&self) {
        self.signal(libc::SIGKILL);
    }

    /// Waits for the daemon to exit (and for its last output), panicking after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        poll_until(timeout, || self.try_reap().is_some()).await;
        let Some(status) = self.exit_status else {
            panic!(
                "the daemon (pid {}) did not exit within {timeout:?}\n{}",
                self.pid,
                self.log_tail()
            );
        };
        self.drain_output().await;
        status
    }

    fn signal(&self, signal: libc::c_int) {
        if self.exit_status.is_none() {
            // SAFETY: kill(2) on our own child, not reaped yet, so the pid is still its own.
            unsafe { libc::kill(self.pid as libc::pid_t, signal) };
        }
    }

    /// The exit status, reaping the child if it has exited.
    fn try_reap(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_none() {
            self.exit_status = self.child.try_wait().expect("poll the daemon");
        }
        self.exit_status
    }

    /// Waits (boundedly) for the output threads to reach EOF after an exit.
    async fn drain_output(&self) {
        let finished = || self.readers.iter().all(|reader| reader.is_finished());
        poll_until(OUTPUT_DRAIN_TIMEOUT, finished).await;
    }

    async fn try_get(&self, path: &str) -> Result<(u16, String), reqwest::Error> {
        let url = format!("http://127.0.0.1:{}{path}", self.http_port);
        let response = self.http.get(url).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// Reads the HTTP port from the startup log; panics with the output if the daemon
    /// exits or stays silent.
    async fn wait_for_http_port(&mut self) {
        let mut port = None;
        poll_until(STARTUP_TIMEOUT, || {
            port = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find_map(|line| http_port(line));
            port.is_some() || self.try_reap().is_some()
        })
        .await;
        if let Some(port) = port {
            self.http_port = port;
            return;
        }
        if let Some(status) = self.exit_status {
            self.drain_output().await;
            panic!(
                "the daemon exited ({status}) before announcing its HTTP port; output:\n{}",
                self.log_tail()
            );
        }
        panic!(
            "timed out after {STARTUP_TIMEOUT:?} waiting for the daemon's \"http_addr\" log line; output:\n{}",
            self.log_tail()
        );
    }

    /// The last lines of output, for panic messages.
    fn log_tail(&self) -> String {
        let lines = self.lines.lock().unwrap();
        let skipped = lines.len().saturating_sub(LOG_TAIL_LINES);
        let tail = lines[skipped..].join("\n");
        if skipped > 0 {
            format!("[{skipped} earlier lines not shown]\n{tail}")
        } else {
            tail
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.try_reap().is_none() {
            self.sigkill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the binary to completion (`--help`, `--check`, configuration errors) with only
/// `PATH` and `env` set; panics if it takes more than 20 s.
pub async fn run_to_exit(args: &[&str], env: &[(&str, String)]) -> Output {
    let vars = env
        .iter()
        .map(|(name, value)| (*name, value.clone()))
        .collect();
    let run = tokio::process::Command::from(command(args, vars))
        .kill_on_drop(true)
        .output();
    let Ok(output) = tokio::time::timeout(STARTUP_TIMEOUT, run).await else {
        panic!("mqtt-whisk-provider {args:?} did not exit within {STARTUP_TIMEOUT:?}");
    };
    let output = output.expect("run mqtt-whisk-provider");
    Output {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The binary with `args`, and an environment of only `PATH` plus `vars`.
fn command(args: &[&str], vars: BTreeMap<&str, String>) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(vars)
        .stdin(Stdio::null());
    command
}

/// Copies `stream` line by line into `lines` (echoing to stderr if `TEST_LOG` is set).
fn copy_lines(
    stream: impl Read + Send + 'static,
    pid: u32,
    lines: Arc<Mutex<Vec<String>>>,
) -> JoinHandle<()> {
    let echo = std::env::var_os("TEST_LOG").is_some();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            if echo {
                eprintln!("[{pid}] {text}");
            }
            lines.lock().unwrap().push(text);
            line.clear();
        }
    })
}

/// The port of an `"http_addr": "<ip>:<port>"` field in a JSON log line.
fn http_port(line: &str) -> Option<u16> {
    let event: Value = serde_json::from_str(line).ok()?;
    let addr = find_field(event.get("fields")?, "http_addr")?;
    addr.as_str()?.rsplit_once(':')?.1.parse().ok()
}

/// The first value named `name` anywhere inside `value`.
fn find_field<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    match value {
        Value::Object(fields) => fields
            .get(name)
            .or_else(|| fields.values().find_map(|v| find_field(v, name))),
        Value::Array(items) => items.iter().find_map(|v| find_field(v, name)),
        _ => None,
    }
}
