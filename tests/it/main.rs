//! End-to-end tests: the real binary against a real Mosquitto and a fake OpenWhisk.

mod harness;
mod harness_selftest;
mod scenario;

mod alarms;
mod at_least_once;
mod batching;
mod cli;
mod forward;
mod memory;
mod observability;
mod openwhisk_faults;
mod packaging;
mod reconnect;
mod session;
mod throttled_backlog;
mod tls;
