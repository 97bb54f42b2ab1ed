//! A real Mosquitto on a free loopback port, with its own config and data directory.

use std::fmt::Write as _;
use std::process::Stdio;
use std::time::Duration;

use test_support::{
    find_binary, free_port, guarded_command, poll_until, poll_until_async, port_is_free,
};
use tokio::process::Child;

/// How long Mosquitto may take to start listening, or to exit after a signal.
const START_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How Mosquitto is configured; `Default` is a persistent broker with Mosquitto's limits.
#[derive(Clone, Debug)]
pub struct BrokerOptions {
    /// Keep sessions and queued messages on disk (saved every second and on SIGTERM).
    pub persistence: bool,
    /// `max_queued_messages`; `None` = Mosquitto's default (1000), `Some(0)` = unlimited.
    pub max_queued_messages: Option<u32>,
    /// `max_inflight_messages`; `None` = Mosquitto's default (20), `Some(0)` = unlimited.
    pub max_inflight_messages: Option<u32>,
    /// Appended verbatim to `mosquitto.conf`.
    pub extra_config: String,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            persistence: true,
            max_queued_messages: None,
            max_inflight_messages: None,
            extra_config: String::new(),
        }
    }
}

/// A running (or stopped) Mosquitto; SIGKILLed on drop (`kill_on_drop`).
pub struct Broker {
    opts: BrokerOptions,
    /// Holds `mosquitto.conf`, `mosquitto.log`, `stderr.log` and `mosquitto.db`.
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    /// Starts Mosquitto on a free port and waits until it accepts TCP connections.
    pub async fn start(opts: BrokerOptions) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("mosquitto-")
            .tempdir()
            .expect("create a temporary directory for mosquitto");
        let mut broker = Broker {
            opts,
            dir,
            port: 0,
            child: None,
        };
        // Another test may take the port between our probe and Mosquitto's bind: try another.
        for _ in 0..10 {
            broker.port = free_port();
            if broker.launch().await {
                return broker;
            }
        }
        panic!(
            "mosquitto kept finding its port taken; log:\n{}",
            broker.log()
        );
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The port Mosquitto listens on (kept across [`Broker::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGTERM, then waits for the exit; Mosquitto saves its persistence database on the way out.
    pub async fn stop(&mut self) {
        self.signal_and_wait(libc::SIGTERM).await;
    }

    /// SIGKILL, then waits for the exit: everything since the last autosave is lost.
    pub async fn kill(&mut self) {
        self.signal_and_wait(libc::SIGKILL).await;
    }

    /// Starts Mosquitto again with the same config, port and data directory.
    pub async fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart() of a broker that still runs"
        );
        // The port can be held for a moment by someone else (as a client's ephemeral port).
        let port = self.port;
        for _ in 0..10 {
            let free = poll_until(START_STOP_TIMEOUT, || port_is_free(port)).await;
            assert!(
                free,
                "port {port} stayed taken for {START_STOP_TIMEOUT:?}: mosquitto cannot restart"
            );
            if self.launch().await {
                return;
            }
        }
        panic!(
            "mosquitto could not get port {port} back; log:\n{}",
            self.log()
        );
    }

    /// Mosquitto's log file followed by its stderr.
    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("mosquitto.log"), read("stderr.log"))
    }

    /// Writes the config and starts Mosquitto; false if the port was taken, panics on other
    /// failures.
    async fn launch(&mut self) -> bool {
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(&conf, self.config()).expect("write mosquitto.conf");
        let log_file = self.dir.path().join("mosquitto.log");
        let log_start = std::fs::metadata(&log_file).map_or(0, |m| m.len() as usize);
        let new_log = || {
            let log = std::fs::read(&log_file).unwrap_or_default();
            String::from_utf8_lossy(&log[log_start.min(log.len())..]).into_owned()
        };
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .expect("open mosquitto's stderr.log");
        let mut child = guarded_command(find_binary("mosquitto"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn mosquitto");

        let mut exited = None;
        let up = poll_until_async(START_STOP_TIMEOUT, || {
            if exited.is_none() {
                exited = child.try_wait().expect("poll mosquitto");
            }
            let has_exited = exited.is_some();
            let running = !has_exited && new_log().lines().any(announces_running);
            let port = self.port;
            async move {
                has_exited
                    || (running
                        && tokio::net::TcpStream::connect(("127.0.0.1", port))
                            .await
                            .is_ok())
            }
        })
        .await;
        match exited {
            None if up => {
                self.child = Some(child);
                true
            }
            Some(_) if new_log().contains("Address already in use") => false,
            _ => panic!(
                "mosquitto on port {} did not start (exit: {exited:?}); log:\n{}",
                self.port,
                self.log()
            ),
        }
    }

    fn config(&self) -> String {
        let dir = self.dir.path().display();
        let mut conf = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\nlog_dest file {dir}/mosquitto.log\n",
            self.port
        );
        // Mosquitto started as root would switch to the user `mosquitto`, who cannot write here.
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            conf.push_str("user root\n");
        }
        if self.opts.persistence {
            writeln!(
                conf,
                "persistence true\npersistence_location {dir}/\nautosave_interval 1"
            )
            .unwrap();
        }
        if let Some(n) = self.opts.max_queued_messages {
            writeln!(conf, "max_queued_messages {n}").unwrap();
        }
        if let Some(n) = self.opts.max_inflight_messages {
            writeln!(conf, "max_inflight_messages {n}").unwrap();
        }
        conf.push_str(&self.opts.extra_config);
        conf.push('\n');
        conf
    }

    async fn signal_and_wait(&mut self, signal: libc::c_int) {
        let mut child = self.child.take().expect("the broker is not running");
        let pid = child.id().expect("mosquitto's pid") as libc::pid_t;
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
        unsafe { libc::kill(pid, signal) };
        let exited = tokio::time::timeout(START_STOP_TIMEOUT, child.wait()).await;
        let Ok(status) = exited else {
            panic!("mosquitto did not exit within {START_STOP_TIMEOUT:?} after signal {signal}");
        };
        status.expect("wait for mosquitto");
    }
}

/// Mosquitto's "<time>: mosquitto version 2.0.11 running", logged once its listeners are open.
fn announces_running(line: &str) -> bool {
    line.contains(": mosquitto version ") && line.ends_with(" running")
}
