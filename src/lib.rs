//! `mqtt-whisk-provider`: one small daemon per fog data center that fires an Apache
//! OpenWhisk trigger for every MQTT message (at least once) and, on cron schedules, the
//! aggregates trigger, adding the data center's own parameters to every fire.
//!
//! Layout:
//! - [`config`]: environment -> validated [`config::Config`]; `--help` and `--check` text.
//! - [`app`]: builds the parts and runs them; the shutdown order lives here.
//! - [`mqtt`]: the broker side: event loop, subscriptions, epoch-guarded acks.
//! - [`forward`]: message -> fire -> ack, with bounded concurrency.
//! - [`delivery`]: one fire with its retry rules; [`pause`]: the namespace-wide 429 pause.
//! - [`openwhisk`]: the HTTP client and the classification of answers.
//! - [`fire_body`]: the JSON of a message fire.
//! - [`alarm`]: the embedded cron alarms: the fire body and one runner task per alarm;
//!   [`schedule`]: cron expression + zone -> fire times (with the DST rule).
//! - [`health`], [`metrics`], [`http`]: what operators see; [`telemetry`]: logging;
//!   [`redact`]: credential-like values masked wherever JSON is shown to people.

pub mod alarm;
pub mod app;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod fire_body;
pub mod forward;
pub mod health;
pub mod http;
pub mod metrics;
pub mod mqtt;
pub mod openwhisk;
pub mod pause;
pub mod redact;
pub mod schedule;
pub mod shutdown;
pub mod telemetry;
