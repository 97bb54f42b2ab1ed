//! A real Mosquitto on a free loopback port, with its own config and data directory: the
//! broker of every test that does not ask for another.

use std::fmt::Write as _;
use std::path::Path;

use super::mqtt_broker::{BrokerProgram, MqttBroker};

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

/// A running (or stopped) Mosquitto; SIGKILLed on drop. On SIGTERM ([`MqttBroker::stop`])
/// it saves its persistence database; after a SIGKILL ([`MqttBroker::kill`]) everything
/// since the last autosave (every second here) is lost.
pub type Broker = MqttBroker<Mosquitto>;

/// Mosquitto 2.0, the broker of every test that does not ask for another.
pub struct Mosquitto;

impl BrokerProgram for Mosquitto {
    type Options = BrokerOptions;
    const NAME: &'static str = "mosquitto";
    const CONFIG_FILE: &'static str = "mosquitto.conf";
    const LOG_FILE: &'static str = "mosquitto.log";

    fn config(options: &BrokerOptions, dir: &Path, port: u16) -> String {
        let dir = dir.display();
        let mut conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest file {dir}/{}\n",
            Mosquitto::LOG_FILE
        );
        // Mosquitto started as root would switch to the user `mosquitto`, who cannot write here.
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            conf.push_str("user root\n");
        }
        if options.persistence {
            writeln!(
                conf,
                "persistence true\npersistence_location {dir}/\nautosave_interval 1"
            )
            .unwrap();
        }
        if let Some(n) = options.max_queued_messages {
            writeln!(conf, "max_queued_messages {n}").unwrap();
        }
        if let Some(n) = options.max_inflight_messages {
            writeln!(conf, "max_inflight_messages {n}").unwrap();
        }
        conf.push_str(&options.extra_config);
        conf.push('\n');
        conf
    }

    fn announces_ready(line: &str) -> bool {
        // "<time>: mosquitto version 2.0.11 running", logged once its listeners are open.
        line.contains(": mosquitto version ") && line.ends_with(" running")
    }
}
