//! Test harness: a real Mosquitto ([`Broker`]) or nats-server ([`NatsServer`]), an MQTT
//! [`Publisher`], a faithful fake OpenWhisk controller ([`FakeOpenWhisk`]) and the real
//! daemon binary ([`Daemon`]).
//!
//! Every piece picks its own free port and temporary directory, so tests can run in
//! parallel, and stops whatever it started when dropped. Tests wait on conditions with a
//! deadline ([`wait_until`]), never on fixed sleeps. What the benchmark needs as well
//! (child processes, waits, ids, the HTTP client) comes from the `test-support` crate.

mod broker;
mod daemon;
mod fake_openwhisk;
mod feed_client;
mod mqtt_broker;
mod mqtt_client;
mod nats_server;
mod publisher;
mod scripted_broker;

pub use broker::{Broker, BrokerOptions, Mosquitto};
pub use daemon::{Daemon, run_to_exit};
pub use fake_openwhisk::{
    FakeOpenWhisk, Fault, Namespace, RecordedFire, delivered_sequence_numbers, delivered_to,
};
pub use feed_client::{feed_request, run_feed_action};
pub use mqtt_broker::{BrokerProgram, MqttBroker};
pub use mqtt_client::{Down, connect_persistent, next_publish, queue_across_a_restart, subscribe};
pub use nats_server::{Nats, NatsOptions, NatsServer};
pub use publisher::Publisher;
pub use scripted_broker::{ScriptedBroker, publish};
pub use test_support::{
    RssSampler, SmallDisk, http_client, poll_until, poll_until_async, rss_bytes, unique_id,
    wait_until, wait_until_async,
};
