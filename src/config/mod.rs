//! Environment -> typed, validated [`Config`]. Every problem is collected, so an operator
//! fixes a ConfigMap in one round instead of one variable per restart.
//!
//! One file per section (`mqtt`, `openwhisk`, `fire`, `alarms`), all reporting into one
//! `Problems`; `variables` is the table of every variable, `check` renders `--check`.

mod alarms;
mod check;
mod feed;
mod files;
mod fire;
mod mqtt;
mod mqtt_limits;
mod names;
mod openwhisk;
mod problems;
mod raw;
mod routes;
mod spool;
mod variables;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::feed::StateKey;

pub use alarms::Alarm;
pub use check::render_check;
pub use feed::FeedConfig;
#[cfg(test)]
pub(crate) use fire::MESSAGE_KEYS;
pub use fire::{FireConfig, SecretParams};
pub use mqtt::{BrokerUrl, Credentials, MqttConfig, MqttTls, Spellings};
pub use openwhisk::{ApiKey, OpenWhiskConfig};
pub use problems::{ConfigError, Problem};
use problems::{Problems, entry_string, json_kind, json_object};
use raw::RawEnv;
pub use routes::{StaticRoute, filter_error};
pub use spool::SpoolConfig;
pub use variables::{UnknownVariable, help_text, unknown_variables};

/// The whole configuration, validated.
#[derive(Debug)]
pub struct Config {
    pub mqtt: MqttConfig,
    /// `None` only in `--dry-run` without `OW_API_HOST`/`OW_AUTH`.
    pub openwhisk: Option<OpenWhiskConfig>,
    pub fire: FireConfig,
    /// The routes of `MQTT_TOPICS` + `OW_TRIGGER` and of `ROUTES`; the feed adds more at
    /// run time.
    pub routes: Vec<StaticRoute>,
    /// `STATE_DIR`: where state that must survive a restart lives; the feed API is served
    /// only with it.
    pub state_dir: Option<PathBuf>,
    pub feed: FeedConfig,
    /// `SPOOL=true`: messages are spooled in `STATE_DIR` before the broker is acknowledged.
    pub spool: Option<SpoolConfig>,
    /// `STATE_KEY` (or `STATE_KEY_FILE`): encrypts the registry's API keys.
    pub state_key: Option<StateKey>,
    /// The cron alarms: the one of `ALARM_CRON` first, then those of `ALARMS`; possibly
    /// none.
    pub alarms: Vec<Alarm>,
    /// `ALARM_CATCHUP_SECS` with `STATE_DIR`: on start, a tick missed at most this long
    /// ago fires once.
    pub alarm_catchup: Option<Duration>,
    /// Whether `alarms` starts with the one of `ALARM_CRON`, for `--check`.
    single_alarm: bool,
    pub http_port: u16,
    pub log_format: LogFormat,
    /// How long SIGTERM waits for fires in flight before leaving them to the broker.
    pub shutdown_grace: Duration,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Reads and validates the configuration from environment variables.
    pub fn from_env(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
        dry_run: bool,
    ) -> Result<Config, ConfigError> {
        let mut problems = Problems::default();
        let raw = RawEnv::read(vars, &mut problems);
        let config = parse(&raw, dry_run, &mut problems);
        problems.into_result(config)
    }
}

fn parse(raw: &RawEnv, dry_run: bool, problems: &mut Problems) -> Config {
    let mqtt = mqtt::parse(raw, problems);
    let openwhisk = openwhisk::parse(raw, dry_run, problems);
    let state_dir = feed::state_dir(raw, problems);
    let namespace = openwhisk.as_ref().map_or("_", |ow| ow.namespace.as_str());
    let routes = routes::parse(raw, &mqtt.topics, namespace, state_dir.is_some(), problems);
    Config {
        mqtt,
        openwhisk,
        fire: fire::parse(raw, problems),
        routes,
        feed: feed::parse(raw, state_dir.is_some(), problems),
        spool: spool::parse(raw, state_dir.is_some(), problems),
        alarm_catchup: alarms::catchup(raw, state_dir.is_some(), problems),
        state_key: raw.get("STATE_KEY").and_then(|key| {
            StateKey::parse(key.as_bytes())
                .map_err(|message| problems.push("STATE_KEY", &message))
                .ok()
        }),
        state_dir,
        alarms: alarms::parse(raw, problems),
        single_alarm: raw.get("ALARM_CRON").is_some(),
        http_port: problems.parse_in(
            "HTTP_PORT",
            raw.get("HTTP_PORT"),
            3000,
            0..=u16::MAX,
            "a TCP port",
        ),
        log_format: match raw.get("LOG_FORMAT").map(str::trim) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                problems.push(
                    "LOG_FORMAT",
                    &format!("expected text or json, got {other:?}"),
                );
                LogFormat::Text
            }
        },
        shutdown_grace: Duration::from_secs(problems.parse_in(
            "SHUTDOWN_GRACE_SECS",
            raw.get("SHUTDOWN_GRACE_SECS"),
            20,
            0..=3600,
            "seconds",
        )),
        dry_run,
    }
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
