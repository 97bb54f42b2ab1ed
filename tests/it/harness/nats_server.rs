//! A real nats-server with its MQTT listener on a free loopback port: a second broker,
//! written by others, whose MQTT server keeps sessions and messages in JetStream (here in
//! a temporary store directory).
//!
//! Its NATS client port is random (`-1`), its monitoring port off, so it never touches
//! the standard ports 4222 and 1883 (nor a nats-server the machine runs there).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::MqttBroker;
use super::broker_process::{BrokerProcess, Program};

const NATS_SERVER: Program = Program {
    name: "nats-server",
    config_file: "nats-server.conf",
    log_file: "nats-server.log",
    announces_ready,
};

/// How nats-server's MQTT server is configured; `Default` keeps its defaults.
#[derive(Clone, Debug, Default)]
pub struct NatsOptions {
    /// `mqtt.ack_wait`: how long a delivered QoS 1 message may stay unacknowledged before
    /// nats-server sends it again, also within the same connection; `None` = 30 s.
    pub ack_wait: Option<Duration>,
    /// `mqtt.max_ack_pending`: unacknowledged messages per subscription, nats-server's
    /// in-flight window (Mosquitto's `max_inflight_messages`); `None` = 1024.
    pub max_ack_pending: Option<u16>,
}

/// A running (or stopped) nats-server; SIGKILLed on drop.
pub struct NatsServer {
    /// Its directory holds `nats-server.conf`, `nats-server.log`, `stderr.log` and the
    /// JetStream store, `jetstream/`.
    process: BrokerProcess,
}

impl NatsServer {
    /// Starts nats-server on a free MQTT port and waits until it accepts connections.
    pub async fn start(opts: NatsOptions) -> NatsServer {
        let process =
            BrokerProcess::start(&NATS_SERVER, |dir, port| config(&opts, dir, port)).await;
        NatsServer { process }
    }

    /// SIGKILL, then waits for the exit. JetStream has written what it acknowledged, so
    /// sessions and messages survive.
    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    /// Starts nats-server again with the same config, port and store.
    pub async fn restart(&mut self) {
        self.process.restart().await;
    }

    /// nats-server's log file followed by its stderr.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

impl MqttBroker for NatsServer {
    fn port(&self) -> u16 {
        self.process.port()
    }

    fn program(&self) -> &'static str {
        NATS_SERVER.name
    }
}

/// `nats-server.conf`: MQTT on `127.0.0.1:<mqtt_port>`, JetStream stored in `dir`.
fn config(opts: &NatsOptions, dir: &Path, mqtt_port: u16) -> String {
    let dir = dir.display();
    // MQTT needs JetStream, and JetStream a server name.
    let mut mqtt = format!("  listen: \"127.0.0.1:{mqtt_port}\"\n");
    if let Some(ack_wait) = opts.ack_wait {
        writeln!(mqtt, "  ack_wait: \"{}ms\"", ack_wait.as_millis()).unwrap();
    }
    if let Some(n) = opts.max_ack_pending {
        writeln!(mqtt, "  max_ack_pending: {n}").unwrap();
    }
    format!(
        "server_name: \"test-{mqtt_port}\"\n\
         listen: \"127.0.0.1:-1\"\n\
         log_file: \"{dir}/{}\"\n\
         jetstream {{\n  store_dir: \"{dir}/jetstream\"\n}}\n\
         mqtt {{\n{mqtt}}}\n",
        NATS_SERVER.log_file
    )
}

/// nats-server's "[INF] Server is ready", logged once every listener is open.
fn announces_ready(line: &str) -> bool {
    line.ends_with("[INF] Server is ready")
}
