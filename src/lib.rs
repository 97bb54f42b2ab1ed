//! `mqtt-whisk-provider`: one small daemon per fog data center that fires an Apache
//! OpenWhisk trigger for every MQTT message (at least once) and, on cron schedules, the
//! aggregates trigger, adding the data center's own parameters to every fire.
//!
//! Layout:
//! - [`config`]: environment -> validated [`config::Config`]; `--help` and `--check` text.
//! - [`app`]: builds the parts and runs them; the shutdown order lives here.
//! - [`mqtt`]: the broker side: event loop, subscriptions, epoch-guarded acks;
//!   [`topic_trie`]: values keyed by topic filter, matched at a cost independent of
//!   their number.
//! - [`connections`]: one MQTT connection (source, forwarder, routes) per broker,
//!   credentials and namespace; [`routes`]: filter -> destinations (triggers with keys).
//! - [`forward`]: message -> fires -> ack when all are final, with bounded concurrency.
//! - [`spool`]: with `SPOOL=true`, messages made durable on disk before the broker is
//!   acknowledged; [`spooler`]: the tasks between a connection's source, its spool and
//!   its forwarder.
//! - [`feed`]: the feed API (`wsk trigger create --feed`), its registry under `STATE_DIR`.
//! - [`delivery`]: one fire with its retry rules; [`pause`]: the namespace-wide 429 pause.
//! - [`openwhisk`]: the HTTP client and the classification of answers.
//! - [`fire_body`]: the JSON of a message fire.
//! - [`alarm`]: the embedded cron alarms: the fire body and one runner task per alarm;
//!   [`schedule`]: cron expression + zone -> fire times (with the DST rule).
//! - [`health`], [`metrics`], [`http`]: what operators see; [`telemetry`]: logging;
//!   [`redact`]: credential-like values masked wherever JSON is shown to people.
//!
//! Only what `main.rs` uses is public: [`app`], [`cli`], [`config`], [`shutdown`],
//! [`telemetry`]; the rest is `pub(crate)`.

pub(crate) mod alarm;
pub mod app;
pub mod cli;
pub mod config;
pub(crate) mod connections;
pub(crate) mod delivery;
pub(crate) mod feed;
pub(crate) mod fire_body;
pub(crate) mod forward;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod mqtt;
pub(crate) mod openwhisk;
pub(crate) mod pause;
pub(crate) mod redact;
pub(crate) mod routes;
pub(crate) mod schedule;
pub mod shutdown;
pub(crate) mod spool;
pub(crate) mod spooler;
pub mod telemetry;
pub(crate) mod topic_trie;
