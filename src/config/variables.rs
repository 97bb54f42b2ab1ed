//! The environment variables the provider reads, in one table: the raw reader looks up
//! each name in it, `--help` lists it, `--check` shows each one's effective value, and
//! the typo warning knows every name from it, so the four can never disagree.

use std::fmt;

use serde_json::{Map, Value};

use crate::redact::redacted;

use super::{Alarm, Config};

/// One environment variable the provider understands.
pub(super) struct Variable {
    pub name: &'static str,
    /// What `--help` shows as the default ("required", a value, or "none").
    pub default: &'static str,
    pub meaning: &'static str,
    /// Secrets are masked in `--check` and may be given as `NAME_FILE`.
    pub secret: bool,
    /// The effective value, as `--check` shows it.
    pub shown: fn(&Config) -> String,
}

const fn var(
    name: &'static str,
    default: &'static str,
    meaning: &'static str,
    shown: fn(&Config) -> String,
) -> Variable {
    Variable {
        name,
        default,
        meaning,
        secret: false,
        shown,
    }
}

const fn secret(
    name: &'static str,
    default: &'static str,
    meaning: &'static str,
    shown: fn(&Config) -> String,
) -> Variable {
    Variable {
        name,
        default,
        meaning,
        secret: true,
        shown,
    }
}

/// Every variable, in the order `--help` and `--check` list them.
pub(super) const VARIABLES: &[Variable] = &[
    var(
        "MQTT_URL",
        "required",
        "mqtt://[user:pass@]host[:port] (1883) or mqtts://... (8883, TLS)",
        // Without the credentials: the password is a secret.
        |c| {
            let scheme = if c.mqtt.tls.is_some() {
                "mqtts"
            } else {
                "mqtt"
            };
            format!("{scheme}://{}:{}", c.mqtt.host, c.mqtt.port)
        },
    ),
    var(
        "MQTT_TOPICS",
        "required without ROUTES or STATE_DIR",
        "comma-separated topic filters whose messages fire OW_TRIGGER, each at most 65535 bytes; + and # wildcards allowed",
        |c| c.mqtt.topics.join(","),
    ),
    var(
        "MQTT_QOS",
        "1",
        "subscription QoS 0, 1 or 2 (2 is subscribed as 1, see README)",
        |c| c.mqtt.qos.to_string(),
    ),
    var(
        "MQTT_CLIENT_ID",
        "mqtt-whisk-provider-<hostname>",
        "must be stable across restarts for a persistent session; at most 65535 bytes",
        |c| c.mqtt.client_id.clone(),
    ),
    var(
        "MQTT_CLEAN_SESSION",
        "false",
        "false = persistent session: the broker keeps QoS>=1 messages while the provider is away",
        |c| c.mqtt.clean_session.to_string(),
    ),
    var(
        "MQTT_USERNAME",
        "from MQTT_URL",
        "user name, at most 65535 bytes; overrides the URL's",
        |c| match &c.mqtt.credentials {
            Some(credentials) => credentials.username.clone(),
            None => "(anonymous)".to_owned(),
        },
    ),
    secret(
        "MQTT_PASSWORD",
        "from MQTT_URL",
        "password, at most 65535 bytes; overrides the URL's (Secret; or MQTT_PASSWORD_FILE)",
        |c| {
            masked(
                c.mqtt
                    .credentials
                    .as_ref()
                    .is_some_and(|c| c.password.is_some()),
            )
        },
    ),
    var(
        "MQTT_CA_FILE",
        "none",
        "PEM CA certificates trusted for mqtts:// (default: the Mozilla roots)",
        |c| match &c.mqtt.tls {
            Some(tls) if tls.ca.is_some() => "(loaded)".to_owned(),
            Some(_) => "(Mozilla roots)".to_owned(),
            None => "(none: not mqtts://)".to_owned(),
        },
    ),
    var(
        "MQTT_CLIENT_CERT_FILE",
        "none",
        "PEM client certificate for mqtts:// (with MQTT_CLIENT_KEY_FILE)",
        |c| client_certificate(c).to_owned(),
    ),
    var(
        "MQTT_CLIENT_KEY_FILE",
        "none",
        "PEM private key of the client certificate",
        |c| client_certificate(c).to_owned(),
    ),
    var(
        "MQTT_KEEP_ALIVE_SECS",
        "30",
        "keep-alive interval, 5-3600 seconds",
        |c| c.mqtt.keep_alive.as_secs().to_string(),
    ),
    var(
        "MQTT_MAX_PACKET_BYTES",
        "4194304",
        "largest MQTT packet read or sent, 1024-268435455 bytes (CONNECT and SUBSCRIBE must fit); set the broker's max_packet_size to at most this",
        |c| c.mqtt.max_packet_bytes.to_string(),
    ),
    var(
        "OW_API_HOST",
        "required",
        "host[:port] means https://host[:port]; a full http(s):// URL is used as given",
        |c| match &c.openwhisk {
            Some(ow) => ow.api_host.as_str().trim_end_matches('/').to_owned(),
            None => "(none: --dry-run)".to_owned(),
        },
    ),
    secret(
        "OW_AUTH",
        "required",
        "API key uuid:key, sent as HTTP Basic auth (Secret; or OW_AUTH_FILE)",
        |c| masked(c.openwhisk.is_some()),
    ),
    var(
        "OW_NAMESPACE",
        "_",
        "namespace of the triggers (_ = the key's own)",
        |c| {
            c.openwhisk
                .as_ref()
                .map_or("_", |ow| &ow.namespace)
                .to_owned()
        },
    ),
    var(
        "OW_INSECURE",
        "false",
        "accept a self-signed OpenWhisk certificate (wsk -i)",
        |c| {
            c.openwhisk
                .as_ref()
                .is_some_and(|ow| ow.insecure)
                .to_string()
        },
    ),
    var(
        "OW_TRIGGER",
        "required with MQTT_TOPICS",
        "trigger fired for every message of MQTT_TOPICS",
        |c| match c.mqtt.topics.is_empty() {
            true => "(none)".to_owned(),
            false => c.routes[0].trigger.clone(),
        },
    ),
    var(
        "ROUTES",
        "none",
        "JSON array of {filter, trigger, namespace?}: more routes, each filter firing its trigger (with OW_AUTH)",
        |c| {
            let table = &c.routes[c.mqtt.topics.len()..];
            let shown: Vec<String> = table
                .iter()
                .map(|r| format!("{} -> /{}/{}", r.filter, r.namespace, r.trigger))
                .collect();
            match shown.is_empty() {
                true => "(none)".to_owned(),
                false => shown.join(", "),
            }
        },
    ),
    var(
        "FIRE_PARAMS",
        "{}",
        "JSON object added to every message fire (per-data-center parameters)",
        |c| json(&c.fire.params),
    ),
    var(
        "FIRE_SECRET_PARAMS_FILE",
        "none",
        "path of a JSON object (mounted from a Secret) added to every message fire like FIRE_PARAMS, no key in both; its values are never logged or shown",
        |c| match c.fire.secret_params.is_empty() {
            true => "(none)".to_owned(),
            false => {
                let keys: Vec<&str> = c.fire.secret_params.keys().collect();
                format!("******** (keys: {})", keys.join(", "))
            }
        },
    ),
    var(
        "FIRE_CONCURRENCY",
        "64",
        "most fires in flight at once, 1-10000; bounds memory",
        |c| c.fire.concurrency.to_string(),
    ),
    var(
        "FIRE_TIMEOUT_SECS",
        "30",
        "timeout of one fire request, 1-3600 seconds",
        |c| c.fire.timeout.as_secs().to_string(),
    ),
    var(
        "FIRE_BATCH_MAX",
        "1",
        "1-10000; above 1, up to this many messages travel in one fire",
        |c| c.fire.batch_max.to_string(),
    ),
    var(
        "FIRE_BATCH_WAIT_MS",
        "100",
        "how long a partial batch waits for more messages, 0-60000 ms",
        |c| c.fire.batch_wait.as_millis().to_string(),
    ),
    var(
        "FIRE_MAX_PAYLOAD_BYTES",
        "1048576",
        "OpenWhisk's payload limit on a fire, 1024-52428800 bytes; a larger fire is rejected \
         without being sent. A fire is the payload as a JSON string (\\\" and \\\\ 2 bytes, \
         control characters up to 6: \\u0000) or, if not UTF-8, base64 (4/3 of its size), plus \
         the topic escaped alike, FIRE_PARAMS and ~180 bytes of keys (see README)",
        |c| c.fire.max_payload_bytes.to_string(),
    ),
    var(
        "ALARM_CRON",
        "none",
        "cron expression, 5 fields (minute precision) or 6 (leading seconds)",
        |c| single_alarm(c).map_or("(none)".to_owned(), |a| a.expression.clone()),
    ),
    var(
        "ALARM_TRIGGER",
        "required with ALARM_CRON",
        "trigger fired on schedule",
        |c| single_alarm(c).map_or("(none)".to_owned(), |a| a.trigger.clone()),
    ),
    var(
        "ALARM_TIMEZONE",
        "UTC",
        "IANA zone the cron expression is read in, e.g. Europe/Rome",
        |c| single_alarm(c).map_or("(none)".to_owned(), |a| a.zone.to_string()),
    ),
    var(
        "ALARM_PAYLOAD",
        "{}",
        "JSON object sent as the alarm fire's parameters",
        |c| single_alarm(c).map_or("(none)".to_owned(), |a| json(&a.payload)),
    ),
    var(
        "ALARMS",
        "none",
        "JSON array of {name, cron, trigger, timezone?, payload?} for several alarms",
        |c| {
            let names: Vec<&str> = c.alarms[usize::from(c.single_alarm)..]
                .iter()
                .map(|a| a.name.as_str())
                .collect();
            match names.is_empty() {
                true => "(none)".to_owned(),
                false => names.join(", "),
            }
        },
    ),
    var(
        "ALARM_CATCHUP_SECS",
        "0",
        "0-604800 seconds; above 0 (needs STATE_DIR), a tick missed while the provider was down fires once on start if at most this old; 0 = off",
        |c| match c.alarm_catchup {
            Some(window) => window.as_secs().to_string(),
            None => "0 (off)".to_owned(),
        },
    ),
    var(
        "HTTP_PORT",
        "3000",
        "port of /healthz, /readyz and /metrics, 0-65535",
        |c| c.http_port.to_string(),
    ),
    var(
        "LOG_FORMAT",
        "text",
        "text or json; the level comes from RUST_LOG (default info)",
        |c| format!("{:?}", c.log_format).to_lowercase(),
    ),
    var(
        "STATE_DIR",
        "none",
        "absolute path of a persistent volume for state that survives restarts; turns on the feed API (its registry lives here) and keeps the alarms' last ticks for ALARM_CATCHUP_SECS",
        |c| {
            c.state_dir.as_ref().map_or_else(
                || "(none: no feed API)".to_owned(),
                |d| d.display().to_string(),
            )
        },
    ),
    secret(
        "STATE_KEY",
        "none",
        "32 bytes as base64 or hex that encrypt the feed's stored API keys (Secret; usually STATE_KEY_FILE)",
        |c| masked(c.state_key.is_some()),
    ),
    var(
        "FEED_ALLOWED_BROKERS",
        "none",
        "comma-separated host:port of brokers a feed registration may name besides MQTT_URL's",
        |c| {
            let brokers: Vec<String> = c
                .feed
                .allowed_brokers
                .iter()
                .map(|(h, p)| format!("{h}:{p}"))
                .collect();
            match brokers.is_empty() {
                true => "(none: MQTT_URL's broker only)".to_owned(),
                false => brokers.join(","),
            }
        },
    ),
    var(
        "FEED_LEGACY_API",
        "false",
        "also serve the older feed action's POST /mqtt and DELETE /mqtt/{namespace}/{trigger} (see README: security)",
        |c| c.feed.legacy_api.to_string(),
    ),
    var(
        "FEED_DISABLE_AFTER_SECS",
        "600",
        "a feed trigger answered 401/403/404 this long is disabled (active: false), 1-2592000 seconds",
        |c| c.feed.disable_after.as_secs().to_string(),
    ),
    var(
        "SPOOL",
        "false",
        "true: every message is fsynced to STATE_DIR/spool before the broker is acknowledged, and fired from there (needs STATE_DIR)",
        |c| c.spool.is_some().to_string(),
    ),
    var(
        "SPOOL_MAX_BYTES",
        "1073741824",
        "disk the spool may take, at least 65536 bytes; when full the broker is not acknowledged (it keeps the rest)",
        |c| {
            c.spool
                .map_or_else(|| "(no spool)".to_owned(), |s| s.max_bytes.to_string())
        },
    ),
    var(
        "SHUTDOWN_GRACE_SECS",
        "20",
        "on SIGTERM, how long fires in flight may take to finish, 0-3600 seconds",
        |c| c.shutdown_grace.as_secs().to_string(),
    ),
];

/// How `--check` shows a secret: only whether it is set.
fn masked(set: bool) -> String {
    match set {
        true => "******** (set)".to_owned(),
        false => "(none)".to_owned(),
    }
}

/// A JSON object as `--check` shows it: credential-like values masked.
fn json(object: &Map<String, Value>) -> String {
    redacted(object).to_string()
}

fn client_certificate(config: &Config) -> &'static str {
    match config.mqtt.tls.as_ref().map(|tls| &tls.client_auth) {
        Some(Some(_)) => "(loaded)",
        Some(None) => "(none)",
        None => "(none: not mqtts://)",
    }
}

/// The alarm of `ALARM_CRON`, which comes first.
fn single_alarm(config: &Config) -> Option<&Alarm> {
    config.alarms.first().filter(|_| config.single_alarm)
}

/// Prefixes that mark a variable as meant for this provider, so a typo is noticed.
const KNOWN_PREFIXES: &[&str] = &[
    "MQTT_", "OW_", "FIRE_", "ALARM", "ROUTE", "STATE_", "FEED_", "SPOOL",
];

/// An environment variable that looks meant for this provider but is not one it reads.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownVariable<'a> {
    pub name: &'a str,
    /// The variable it spells in another case (`mqtt_url` for `MQTT_URL`).
    pub meant: Option<String>,
}

impl fmt::Display for UnknownVariable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not a variable this provider reads", self.name)?;
        match &self.meant {
            Some(meant) => write!(f, "; did you mean {meant}?"),
            None => write!(f, " (a typo?)"),
        }
    }
}

/// Names the provider does not read that look meant for it: likely typos. That is a
/// name with a known prefix, or a known name in another case (`mqtt_url`, `http_port`),
/// in any case; the reader compares names exactly.
pub fn unknown_variables<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<UnknownVariable<'a>> {
    let mut unknown: Vec<UnknownVariable> = names
        .into_iter()
        .filter(|name| !known_names().any(|known| known == *name))
        .filter_map(|name| {
            let meant = known_names().find(|known| known.eq_ignore_ascii_case(name));
            let upper = name.to_ascii_uppercase();
            let prefixed = KNOWN_PREFIXES.iter().any(|p| upper.starts_with(p));
            (meant.is_some() || prefixed).then_some(UnknownVariable { name, meant })
        })
        .collect();
    unknown.sort_unstable_by_key(|u| u.name);
    unknown
}

/// Every name the reader looks up: the table's, and `NAME_FILE` for each secret.
fn known_names() -> impl Iterator<Item = String> {
    VARIABLES.iter().flat_map(|v| {
        let file = v.secret.then(|| format!("{}_FILE", v.name));
        std::iter::once(v.name.to_owned()).chain(file)
    })
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

    fn names(unknown: Vec<UnknownVariable<'_>>) -> Vec<(&str, Option<String>)> {
        unknown.into_iter().map(|u| (u.name, u.meant)).collect()
    }

    #[test]
    fn typos_with_known_prefixes_are_reported_and_known_names_are_not() {
        let names_given = [
            "MQTT_TOPIC",
            "MQTT_TOPICS",
            "OW_AUTH_FILE",
            "FIRE_PARAM",
            "PATH",
            "HOME",
        ];
        assert_eq!(
            names(unknown_variables(names_given)),
            [("FIRE_PARAM", None), ("MQTT_TOPIC", None)]
        );
    }

    #[test]
    fn a_spelling_in_another_case_names_the_real_variable() {
        let unknown = unknown_variables(["mqtt_url", "Ow_Auth_File", "mqtt_topic", "http_port"]);
        assert_eq!(
            names(unknown),
            [
                ("Ow_Auth_File", Some("OW_AUTH_FILE".to_owned())),
                ("http_port", Some("HTTP_PORT".to_owned())),
                ("mqtt_topic", None),
                ("mqtt_url", Some("MQTT_URL".to_owned())),
            ]
        );
        let warning = unknown_variables(["mqtt_url"])[0].to_string();
        assert_eq!(
            warning,
            "mqtt_url is not a variable this provider reads; did you mean MQTT_URL?"
        );
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
