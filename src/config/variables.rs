//! The environment variables the provider reads: one table feeds `--help`, `--check` and
//! the warning about unknown variables, so the three can never disagree.

/// One environment variable the provider understands.
pub struct Variable {
    pub name: &'static str,
    /// What `--help` shows as the default ("required", a value, or "none").
    pub default: &'static str,
    pub meaning: &'static str,
    /// Secrets are masked in `--check` and may be given as `NAME_FILE`.
    pub secret: bool,
}

const fn var(name: &'static str, default: &'static str, meaning: &'static str) -> Variable {
    Variable {
        name,
        default,
        meaning,
        secret: false,
    }
}

const fn secret(name: &'static str, default: &'static str, meaning: &'static str) -> Variable {
    Variable {
        name,
        default,
        meaning,
        secret: true,
    }
}

/// Every variable, in the order `--help` and `--check` list them.
pub const VARIABLES: &[Variable] = &[
    var(
        "MQTT_URL",
        "required",
        "mqtt://[user:pass@]host[:port] (1883) or mqtts://... (8883, TLS)",
    ),
    var(
        "MQTT_TOPICS",
        "required",
        "comma-separated topic filters; + and # wildcards allowed",
    ),
    var(
        "MQTT_QOS",
        "1",
        "subscription QoS 0, 1 or 2 (2 is subscribed as 1, see README)",
    ),
    var(
        "MQTT_CLIENT_ID",
        "mqtt-whisk-provider-<hostname>",
        "must be stable across restarts for a persistent session",
    ),
    var(
        "MQTT_CLEAN_SESSION",
        "false",
        "false = persistent session: the broker keeps QoS>=1 messages while the provider is away",
    ),
    var(
        "MQTT_USERNAME",
        "from MQTT_URL",
        "user name; overrides the URL's",
    ),
    secret(
        "MQTT_PASSWORD",
        "from MQTT_URL",
        "password; overrides the URL's (Secret; or MQTT_PASSWORD_FILE)",
    ),
    var(
        "MQTT_CA_FILE",
        "none",
        "PEM CA certificates trusted for mqtts:// (default: the Mozilla roots)",
    ),
    var(
        "MQTT_CLIENT_CERT_FILE",
        "none",
        "PEM client certificate for mqtts:// (with MQTT_CLIENT_KEY_FILE)",
    ),
    var(
        "MQTT_CLIENT_KEY_FILE",
        "none",
        "PEM private key of the client certificate",
    ),
    var(
        "MQTT_KEEP_ALIVE_SECS",
        "30",
        "keep-alive interval in seconds",
    ),
    var(
        "MQTT_MAX_PACKET_BYTES",
        "4194304",
        "largest MQTT packet accepted; set the broker's max_packet_size to at most this",
    ),
    var(
        "OW_API_HOST",
        "required",
        "host[:port] means https://host[:port]; a full http(s):// URL is used as given",
    ),
    secret(
        "OW_AUTH",
        "required",
        "API key uuid:key, sent as HTTP Basic auth (Secret; or OW_AUTH_FILE)",
    ),
    var(
        "OW_NAMESPACE",
        "_",
        "namespace of the triggers (_ = the key's own)",
    ),
    var(
        "OW_INSECURE",
        "false",
        "accept a self-signed OpenWhisk certificate (wsk -i)",
    ),
    var("OW_TRIGGER", "required", "trigger fired for every message"),
    var(
        "FIRE_PARAMS",
        "{}",
        "JSON object added to every message fire (per-data-center parameters)",
    ),
    var(
        "FIRE_CONCURRENCY",
        "64",
        "most fires in flight at once; bounds memory",
    ),
    var(
        "FIRE_TIMEOUT_SECS",
        "30",
        "timeout of one fire request, in seconds",
    ),
    var(
        "FIRE_BATCH_MAX",
        "1",
        "above 1: up to this many messages travel in one fire",
    ),
    var(
        "FIRE_BATCH_WAIT_MS",
        "100",
        "how long a partial batch waits for more messages",
    ),
    var(
        "FIRE_MAX_PAYLOAD_BYTES",
        "1048576",
        "OpenWhisk's payload limit; larger fires are rejected without being sent",
    ),
    var(
        "ALARM_CRON",
        "none",
        "cron expression, 5 fields (minute precision) or 6 (leading seconds)",
    ),
    var(
        "ALARM_TRIGGER",
        "required with ALARM_CRON",
        "trigger fired on schedule",
    ),
    var(
        "ALARM_TIMEZONE",
        "UTC",
        "IANA zone the cron expression is read in, e.g. Europe/Rome",
    ),
    var(
        "ALARM_PAYLOAD",
        "{}",
        "JSON object sent as the alarm fire's parameters",
    ),
    var(
        "ALARMS",
        "none",
        "JSON array of {name, cron, trigger, timezone?, payload?} for several alarms",
    ),
    var(
        "HTTP_PORT",
        "3000",
        "port of /healthz, /readyz and /metrics",
    ),
    var(
        "LOG_FORMAT",
        "text",
        "text or json; the level comes from RUST_LOG (default info)",
    ),
    var(
        "SHUTDOWN_GRACE_SECS",
        "20",
        "on SIGTERM, how long fires in flight may take to finish",
    ),
];

/// Prefixes that mark a variable as meant for this provider, so a typo is noticed.
pub const KNOWN_PREFIXES: &[&str] = &["MQTT_", "OW_", "FIRE_", "ALARM"];

/// Names with a known prefix that the provider does not read: likely typos.
pub fn unknown_variables<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut unknown: Vec<&str> = names
        .into_iter()
        .filter(|name| KNOWN_PREFIXES.iter().any(|p| name.starts_with(p)))
        .filter(|name| !is_known(name))
        .collect();
    unknown.sort_unstable();
    unknown
}

fn is_known(name: &str) -> bool {
    VARIABLES
        .iter()
        .any(|v| v.name == name || (v.secret && name.strip_suffix("_FILE") == Some(v.name)))
}

/// The `--help` section that lists every variable with its default.
pub fn help_text() -> String {
    let width = VARIABLES.iter().map(|v| v.name.len()).max().unwrap_or(0);
    let mut text =
        String::from("Environment variables (a secret may also be given as NAME_FILE):\n");
    for v in VARIABLES {
        text.push_str(&format!(
            "  {:width$}  {} [default: {}]\n",
            v.name, v.meaning, v.default
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_with_known_prefixes_are_reported_and_known_names_are_not() {
        let names = [
            "MQTT_TOPIC",
            "MQTT_TOPICS",
            "OW_AUTH_FILE",
            "FIRE_PARAM",
            "PATH",
            "HOME",
        ];
        assert_eq!(unknown_variables(names), vec!["FIRE_PARAM", "MQTT_TOPIC"]);
    }

    #[test]
    fn help_lists_every_variable_with_its_default() {
        let help = help_text();
        for v in VARIABLES {
            assert!(help.contains(v.name), "{} missing from --help", v.name);
            assert!(help.contains(&format!("[default: {}]", v.default)));
        }
    }
}
