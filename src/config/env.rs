//! Raw environment values, before any parsing: envy maps the names, and secrets may come
//! from a file named by `NAME_FILE`, as Kubernetes mounts them.

use serde::Deserialize;

use super::Problems;

/// Every variable as the environment gave it; empty values count as unset, so a
/// ConfigMap key left blank falls back to its default.
#[derive(Debug, Default, Deserialize)]
pub struct RawEnv {
    pub mqtt_url: Option<String>,
    pub mqtt_topics: Option<String>,
    pub mqtt_qos: Option<String>,
    pub mqtt_client_id: Option<String>,
    pub mqtt_clean_session: Option<String>,
    pub mqtt_username: Option<String>,
    pub mqtt_password: Option<String>,
    pub mqtt_password_file: Option<String>,
    pub mqtt_ca_file: Option<String>,
    pub mqtt_client_cert_file: Option<String>,
    pub mqtt_client_key_file: Option<String>,
    pub mqtt_keep_alive_secs: Option<String>,
    pub mqtt_max_packet_bytes: Option<String>,
    pub ow_api_host: Option<String>,
    pub ow_auth: Option<String>,
    pub ow_auth_file: Option<String>,
    pub ow_namespace: Option<String>,
    pub ow_insecure: Option<String>,
    pub ow_trigger: Option<String>,
    pub fire_params: Option<String>,
    pub fire_concurrency: Option<String>,
    pub fire_timeout_secs: Option<String>,
    pub fire_batch_max: Option<String>,
    pub fire_batch_wait_ms: Option<String>,
    pub fire_max_payload_bytes: Option<String>,
    pub alarm_cron: Option<String>,
    pub alarm_trigger: Option<String>,
    pub alarm_timezone: Option<String>,
    pub alarm_payload: Option<String>,
    pub alarms: Option<String>,
    pub http_port: Option<String>,
    pub log_format: Option<String>,
    pub shutdown_grace_secs: Option<String>,
}

impl RawEnv {
    /// Reads the variables from `(name, value)` pairs. Values that are not UTF-8 are
    /// reported as problems by the caller (see [`utf8_pairs`]), so envy only sees text.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> RawEnv {
        // A map keeps the last of duplicate names, which envy would reject.
        let pairs: std::collections::BTreeMap<String, String> = pairs
            .into_iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .collect();
        // Every field is an optional string, so deserialising cannot fail.
        envy::from_iter(pairs).expect("all fields are Option<String>")
    }
}

/// Converts the process environment to text, reporting each variable that is not UTF-8
/// instead of panicking as `std::env::vars` would.
pub fn utf8_pairs(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    problems: &mut Problems,
) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (name, value) in vars {
        let Ok(name) = name.into_string() else {
            continue;
        };
        match value.into_string() {
            Ok(value) => pairs.push((name, value)),
            Err(_) => problems.push(&name, "is not valid UTF-8"),
        }
    }
    pairs
}

/// A secret from `NAME` or from the file named by `NAME_FILE` (one trailing newline
/// removed). Setting both is a problem: which one wins would be a guess.
pub fn secret(
    name: &str,
    value: Option<String>,
    file: Option<String>,
    problems: &mut Problems,
) -> Option<String> {
    match (value, file) {
        (Some(_), Some(_)) => {
            problems.push(name, &format!("set both {name} and {name}_FILE; keep one"));
            None
        }
        (Some(value), None) => Some(value),
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(text) => Some(
                text.strip_suffix('\n')
                    .unwrap_or(&text)
                    .trim_end_matches('\r')
                    .to_owned(),
            ),
            Err(e) => {
                problems.push(&format!("{name}_FILE"), &format!("cannot read {path}: {e}"));
                None
            }
        },
        (None, None) => None,
    }
}
