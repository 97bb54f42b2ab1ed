//! The state directory and the feed API's settings (SPEC sections 8 and 9): where the
//! registry lives, which brokers a registration may name, the legacy API, and when a
//! registration whose trigger is gone is disabled.

use std::path::PathBuf;
use std::time::Duration;

use super::Problems;
use super::mqtt::{BrokerUrl, Spellings};
use super::raw::RawEnv;

#[derive(Debug)]
pub struct FeedConfig {
    /// Brokers other than `MQTT_URL`'s that a registration may name, as `host:port`.
    pub allowed_brokers: Vec<(String, u16)>,
    /// Serve the older feed action's `POST /mqtt` and `DELETE /mqtt/{ns}/{trigger}`.
    pub legacy_api: bool,
    /// How long a registration's fires may be answered 401/403/404 before it is disabled.
    pub disable_after: Duration,
}

/// `STATE_DIR`, if set: the feed API (and its registry) is on only then.
pub(super) fn state_dir(raw: &RawEnv, problems: &mut Problems) -> Option<PathBuf> {
    let dir = PathBuf::from(raw.get("STATE_DIR")?.trim());
    if dir.is_relative() {
        problems.push(
            "STATE_DIR",
            &format!(
                "expected an absolute path (a mounted volume), got {:?}",
                dir.display()
            ),
        );
    }
    Some(dir)
}

pub(super) fn parse(raw: &RawEnv, state_dir: bool, problems: &mut Problems) -> FeedConfig {
    let config = FeedConfig {
        allowed_brokers: raw
            .get("FEED_ALLOWED_BROKERS")
            .map(|list| allowed_brokers(list, problems))
            .unwrap_or_default(),
        legacy_api: problems.parse(
            "FEED_LEGACY_API",
            raw.get("FEED_LEGACY_API"),
            false,
            "true or false",
        ),
        disable_after: Duration::from_secs(problems.parse_in(
            "FEED_DISABLE_AFTER_SECS",
            raw.get("FEED_DISABLE_AFTER_SECS"),
            600,
            1..=30 * 24 * 3600,
            "seconds",
        )),
    };
    // Only settings that would change something: a ConfigMap may carry the defaults.
    if !state_dir {
        let in_effect = [
            ("FEED_ALLOWED_BROKERS", !config.allowed_brokers.is_empty()),
            ("FEED_LEGACY_API", config.legacy_api),
            ("STATE_KEY", raw.get("STATE_KEY").is_some()),
        ];
        for (variable, set) in in_effect {
            if set {
                problems.push(
                    variable,
                    "the feed API is served only with STATE_DIR (where its registry lives): set STATE_DIR or remove this",
                );
            }
        }
    }
    config
}

/// `host:port,host:port`; a URL is accepted too, for its host and port.
fn allowed_brokers(list: &str, problems: &mut Problems) -> Vec<(String, u16)> {
    let mut brokers = Vec::new();
    for (index, entry) in list.split(',').map(str::trim).enumerate() {
        let parsed = if entry.contains("://") {
            BrokerUrl::parse(entry, Spellings::Feed).map(|url| (url.host, url.port))
        } else {
            host_port(entry)
        };
        match parsed {
            Ok(broker) => brokers.push(broker),
            Err(message) => problems.push(
                "FEED_ALLOWED_BROKERS",
                &format!("entry {}: {message}", index + 1),
            ),
        }
    }
    brokers
}

fn host_port(entry: &str) -> Result<(String, u16), String> {
    let Some((host, port)) = entry.rsplit_once(':') else {
        return Err(format!("expected host:port, got {entry:?}"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match port.parse::<u16>() {
        Ok(port) if !host.is_empty() && port > 0 => Ok((host.to_ascii_lowercase(), port)),
        _ => Err(format!("expected host:port, got {entry:?}")),
    }
}
