//! A real nats-server with its MQTT listener on a free loopback port: a second broker,
//! written by others, whose MQTT server keeps sessions and messages in JetStream (here in
//! a temporary store directory).
//!
//! Its NATS client port is random (`-1`), its monitoring port off, so it never touches
//! the standard ports 4222 and 1883 (nor a nats-server the machine runs there).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::mqtt_broker::{BrokerProgram, MqttBroker};

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

/// A running (or stopped) nats-server; SIGKILLed on drop. JetStream has written what it
/// acknowledged, so sessions and messages survive even a SIGKILL ([`MqttBroker::kill`]).
pub type NatsServer = MqttBroker<Nats>;

/// nats-server 2.9, its MQTT server.
pub struct Nats;

impl BrokerProgram for Nats {
    type Options = NatsOptions;
    const NAME: &'static str = "nats-server";
    const CONFIG_FILE: &'static str = "nats-server.conf";
    const LOG_FILE: &'static str = "nats-server.log";

    /// MQTT on `127.0.0.1:<port>`, JetStream stored in `dir/jetstream`.
    fn config(options: &NatsOptions, dir: &Path, port: u16) -> String {
        let dir = dir.display();
        let mut mqtt = format!("  listen: \"127.0.0.1:{port}\"\n");
        if let Some(ack_wait) = options.ack_wait {
            writeln!(mqtt, "  ack_wait: \"{}ms\"", ack_wait.as_millis()).unwrap();
        }
        if let Some(n) = options.max_ack_pending {
            writeln!(mqtt, "  max_ack_pending: {n}").unwrap();
        }
        // nats-server refuses MQTT without JetStream and an explicit server name.
        format!(
            "server_name: \"test-{port}\"\n\
             listen: \"127.0.0.1:-1\"\n\
             log_file: \"{dir}/{}\"\n\
             jetstream {{\n  store_dir: \"{dir}/jetstream\"\n}}\n\
             mqtt {{\n{mqtt}}}\n",
            Nats::LOG_FILE
        )
    }

    /// "[INF] Server is ready", logged once every listener is open.
    fn announces_ready(line: &str) -> bool {
        line.ends_with("[INF] Server is ready")
    }
}
