//! A real Mosquitto on a free loopback port, with its own config and data directory: the
//! broker of every test that does not ask for another.

use std::fmt::Write as _;
use std::path::Path;

use super::MqttBroker;
use super::broker_process::{BrokerProcess, Program};

const MOSQUITTO: Program = Program {
    name: "mosquitto",
    config_file: "mosquitto.conf",
    log_file: "mosquitto.log",
    announces_ready,
};

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

/// A running (or stopped) Mosquitto; SIGKILLed on drop.
pub struct Broker {
    /// Its directory holds `mosquitto.conf`, `mosquitto.log`, `stderr.log` and `mosquitto.db`.
    process: BrokerProcess,
}

impl Broker {
    /// Starts Mosquitto on a free port and waits until it accepts TCP connections.
    pub async fn start(opts: BrokerOptions) -> Broker {
        let process = BrokerProcess::start(&MOSQUITTO, |dir, port| config(&opts, dir, port)).await;
        Broker { process }
    }

    /// SIGTERM, then waits for the exit; Mosquitto saves its persistence database on the way out.
    pub async fn stop(&mut self) {
        self.process.stop().await;
    }

    /// SIGKILL, then waits for the exit: everything since the last autosave is lost.
    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    /// Starts Mosquitto again with the same config, port and data directory.
    pub async fn restart(&mut self) {
        self.process.restart().await;
    }

    /// Mosquitto's log file followed by its stderr.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

impl MqttBroker for Broker {
    fn port(&self) -> u16 {
        self.process.port()
    }

    fn program(&self) -> &'static str {
        MOSQUITTO.name
    }
}

/// `mosquitto.conf` for a broker on `127.0.0.1:<port>` keeping its files in `dir`.
fn config(opts: &BrokerOptions, dir: &Path, port: u16) -> String {
    let dir = dir.display();
    let mut conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest file {dir}/{}\n",
        MOSQUITTO.log_file
    );
    // Mosquitto started as root would switch to the user `mosquitto`, who cannot write here.
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        conf.push_str("user root\n");
    }
    if opts.persistence {
        writeln!(
            conf,
            "persistence true\npersistence_location {dir}/\nautosave_interval 1"
        )
        .unwrap();
    }
    if let Some(n) = opts.max_queued_messages {
        writeln!(conf, "max_queued_messages {n}").unwrap();
    }
    if let Some(n) = opts.max_inflight_messages {
        writeln!(conf, "max_inflight_messages {n}").unwrap();
    }
    conf.push_str(&opts.extra_config);
    conf.push('\n');
    conf
}

/// Mosquitto's "<time>: mosquitto version 2.0.11 running", logged once its listeners are open.
fn announces_ready(line: &str) -> bool {
    line.contains(": mosquitto version ") && line.ends_with(" running")
}
