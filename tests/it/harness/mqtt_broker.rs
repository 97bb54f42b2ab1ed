//! An MQTT broker that a test started ([`MqttBroker`]), whichever program it is
//! ([`BrokerProgram`]: Mosquitto or nats-server): a temporary directory for config, logs
//! and data; a start on a free port that waits until the broker says it is ready and
//! accepts TCP connections, and tries another port when the first was taken meanwhile; a
//! restart on the same port; SIGTERM or SIGKILL, then the exit.

use std::marker::PhantomData;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use test_support::{
    find_binary, free_port, guarded_command, poll_until, poll_until_async, port_is_free,
};
use tokio::process::Child;

/// How long a broker may take to start listening, or to exit after a signal.
const START_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Starts tried before giving up on finding (or getting back) a free port.
const PORT_ATTEMPTS: usize = 10;
/// Where the broker's stderr goes, in its directory.
const STDERR_FILE: &str = "stderr.log";

/// What tells one broker program from another.
pub trait BrokerProgram {
    /// How a test configures it.
    type Options;
    /// The binary, found with [`find_binary`]; it takes its config file after `-c`.
    const NAME: &'static str;
    /// The config file's name in the broker's directory.
    const CONFIG_FILE: &'static str;
    /// The log file's name in the broker's directory.
    const LOG_FILE: &'static str;

    /// The config for a broker on `127.0.0.1:<port>`, which keeps its files in `dir` and
    /// logs to `dir/LOG_FILE`.
    fn config(options: &Self::Options, dir: &Path, port: u16) -> String;

    /// Whether a log line says that the broker listens.
    fn announces_ready(line: &str) -> bool;
}

/// A running (or stopped) broker; SIGKILLed on drop.
pub struct MqttBroker<P> {
    /// Holds the config, the logs and the broker's data.
    dir: tempfile::TempDir,
    /// The MQTT port in the config, probed to tell that the broker listens.
    port: u16,
    child: Option<Child>,
    program: PhantomData<P>,
}

impl<P: BrokerProgram> MqttBroker<P> {
    /// Starts the broker on a free port and waits until it is ready; another test may
    /// take the port before the broker binds it, and then another port is tried.
    pub async fn start(options: P::Options) -> MqttBroker<P> {
        let name = P::NAME;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("create a temporary directory for {name}: {e}"));
        let mut broker = MqttBroker {
            dir,
            port: 0,
            child: None,
            program: PhantomData,
        };
        for _ in 0..PORT_ATTEMPTS {
            broker.port = free_port();
            let config = P::config(&options, broker.dir.path(), broker.port);
            std::fs::write(broker.dir.path().join(P::CONFIG_FILE), config)
                .unwrap_or_else(|e| panic!("write {}: {e}", P::CONFIG_FILE));
            if broker.launch().await {
                return broker;
            }
        }
        panic!("{name} kept finding its port taken; log:\n{}", broker.log());
    }

    /// The broker's program, for reports: `mosquitto` or `nats-server`.
    pub fn program(&self) -> &'static str {
        P::NAME
    }

    /// The MQTT port on `127.0.0.1` (kept across [`MqttBroker::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, then waits for the exit.
    pub async fn stop(&mut self) {
        self.signal_and_wait(libc::SIGTERM).await;
    }

    /// SIGKILL, then waits for the exit.
    pub async fn kill(&mut self) {
        self.signal_and_wait(libc::SIGKILL).await;
    }

    /// Starts the broker again with the same config, port and directory.
    pub async fn restart(&mut self) {
        let (name, port) = (P::NAME, self.port);
        assert!(
            self.child.is_none(),
            "restart() of a {name} that still runs"
        );
        // The port can be held for a moment by someone else (as a client's ephemeral port).
        for _ in 0..PORT_ATTEMPTS {
            let free = poll_until(START_STOP_TIMEOUT, || port_is_free(port)).await;
            assert!(
                free,
                "port {port} stayed taken for {START_STOP_TIMEOUT:?}: {name} cannot restart"
            );
            if self.launch().await {
                return;
            }
        }
        panic!(
            "{name} could not get port {port} back; log:\n{}",
            self.log()
        );
    }

    /// The broker's log file followed by its stderr.
    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read(P::LOG_FILE), read(STDERR_FILE))
    }

    /// Starts the broker; true once it is ready, false if its port was taken, panics on
    /// other failures.
    async fn launch(&mut self) -> bool {
        let name = P::NAME;
        let (log_file, stderr_file) = (
            self.dir.path().join(P::LOG_FILE),
            self.dir.path().join(STDERR_FILE),
        );
        let offset = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len() as usize);
        let (log_start, stderr_start) = (offset(&log_file), offset(&stderr_file));
        // What this start has written to the log and to stderr.
        let new_output = || {
            let since = |path: &Path, start: usize| {
                let bytes = std::fs::read(path).unwrap_or_default();
                String::from_utf8_lossy(&bytes[start.min(bytes.len())..]).into_owned()
            };
            (
                since(&log_file, log_start),
                since(&stderr_file, stderr_start),
            )
        };
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_file)
            .unwrap_or_else(|e| panic!("open {name}'s {STDERR_FILE}: {e}"));
        let mut child = guarded_command(find_binary(name))
            .arg("-c")
            .arg(self.dir.path().join(P::CONFIG_FILE))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} (is it installed?): {e}"));

        let mut exited = None;
        let port = self.port;
        let up = poll_until_async(START_STOP_TIMEOUT, || {
            if exited.is_none() {
                exited = child.try_wait().expect("poll the broker");
            }
            let has_exited = exited.is_some();
            let ready = !has_exited && new_output().0.lines().any(P::announces_ready);
            async move {
                has_exited
                    || (ready
                        && tokio::net::TcpStream::connect(("127.0.0.1", port))
                            .await
                            .is_ok())
            }
        })
        .await;
        let (log, stderr) = new_output();
        let port_taken = |text: &str| text.to_ascii_lowercase().contains("address already in use");
        match exited {
            None if up => {
                self.child = Some(child);
                true
            }
            Some(_) if port_taken(&log) || port_taken(&stderr) => false,
            _ => panic!(
                "{name} on port {port} did not start (exit: {exited:?}); log:\n{}",
                self.log()
            ),
        }
    }

    async fn signal_and_wait(&mut self, signal: libc::c_int) {
        let name = P::NAME;
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{name} is not running"));
        let pid = child.id().expect("the broker's pid") as libc::pid_t;
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
        unsafe { libc::kill(pid, signal) };
        let exited = tokio::time::timeout(START_STOP_TIMEOUT, child.wait()).await;
        let Ok(status) = exited else {
            panic!("{name} did not exit within {START_STOP_TIMEOUT:?} after signal {signal}");
        };
        status.unwrap_or_else(|e| panic!("wait for {name}: {e}"));
    }
}
