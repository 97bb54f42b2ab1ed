//! Test harness: a real Mosquitto ([`Broker`]), an MQTT [`Publisher`], a faithful fake
//! OpenWhisk controller ([`FakeOpenWhisk`]) and the real daemon binary ([`Daemon`]).
//!
//! Every piece picks its own free port and temporary directory, so tests can run in
//! parallel, and stops whatever it started when dropped. Tests wait on conditions with a
//! deadline ([`wait_until`]), never on fixed sleeps.

mod broker;
mod daemon;
mod fake_openwhisk;
mod publisher;
mod scripted_broker;
mod wait;

pub use broker::{Broker, BrokerOptions};
pub use daemon::{Daemon, http_client, run_to_exit};
pub use fake_openwhisk::{FakeOpenWhisk, Fault, RecordedFire, delivered_sequence_numbers};
pub use publisher::Publisher;
pub use scripted_broker::{ScriptedBroker, publish};
pub use wait::{poll_until, unique_id, wait_until, wait_until_async};
