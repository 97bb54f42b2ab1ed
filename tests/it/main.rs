//! End-to-end tests: the real binary against a real Mosquitto (or nats-server) and a fake
//! OpenWhisk.

mod harness;
mod harness_selftest;
mod scenario;

mod actions;
mod alarms;
mod alerts;
mod at_least_once;
mod batching;
mod broker_differences;
mod cli;
mod feed;
mod forward;
mod memory;
mod observability;
mod openwhisk_faults;
mod packaging;
mod reconnect;
mod routes;
mod secret_params;
mod session;
mod spool;
mod throttled_backlog;
mod tls;
