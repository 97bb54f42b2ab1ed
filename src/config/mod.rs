//! Environment -> typed, validated [`Config`]. Every problem is collected, so an operator
//! fixes a ConfigMap in one round instead of one variable per restart.

mod alarms;
mod check;
mod env;
mod names;
mod variables;

use std::ffi::OsString;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::SecretString;
use serde_json::{Map, Value};
use url::Url;

pub use alarms::Alarm;
pub use check::render_check;
use names::valid_entity_name;
pub use variables::{help_text, unknown_variables};

/// Keys every message fire sets itself; `FIRE_PARAMS` may not override them.
pub const MESSAGE_KEYS: &[&str] = &[
    "type",
    "topic",
    "body",
    "encoding",
    "qos",
    "retain",
    "received_at",
    "message_id",
    "messages",
];

/// The whole configuration, validated.
#[derive(Debug)]
pub struct Config {
    pub mqtt: MqttConfig,
    /// `None` only in `--dry-run` without `OW_API_HOST`/`OW_AUTH`.
    pub openwhisk: Option<OpenWhiskConfig>,
    pub fire: FireConfig,
    /// The cron alarms (`ALARM_CRON` and `ALARMS`), possibly none.
    pub alarms: Vec<Alarm>,
    pub http_port: u16,
    pub log_format: LogFormat,
    /// How long SIGTERM waits for fires in flight before leaving them to the broker.
    pub shutdown_grace: Duration,
    pub dry_run: bool,
}

#[derive(Debug)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub tls: Option<MqttTls>,
    pub topics: Vec<String>,
    /// QoS as configured (0..=2); see `mqtt::subscription_qos` for what is subscribed.
    pub qos: u8,
    pub client_id: String,
    pub clean_session: bool,
    pub credentials: Option<Credentials>,
    pub keep_alive: Duration,
    pub max_packet_bytes: usize,
}

/// TLS material for `mqtts://`, read at start so a bad file fails before connecting.
#[derive(Debug, Default)]
pub struct MqttTls {
    /// Trusted CA certificates; `None` trusts the Mozilla roots.
    pub ca: Option<Vec<CertificateDer<'static>>>,
    /// Certificate chain and private key for client authentication.
    pub client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

#[derive(Debug)]
pub struct Credentials {
    pub username: String,
    pub password: Option<SecretString>,
}

#[derive(Debug)]
pub struct OpenWhiskConfig {
    /// Base URL, e.g. `https://openwhisk.example:443`, without a trailing slash.
    pub api_host: Url,
    pub auth: ApiKey,
    pub namespace: String,
    pub insecure: bool,
}

/// OpenWhisk's `uuid:key`, sent as HTTP Basic auth.
#[derive(Debug)]
pub struct ApiKey {
    pub uuid: String,
    pub key: SecretString,
}

#[derive(Debug)]
pub struct FireConfig {
    pub trigger: String,
    /// Added to every message fire: the data center's own parameters.
    pub params: Map<String, Value>,
    pub concurrency: usize,
    pub timeout: Duration,
    /// Above 1, up to this many messages travel in one fire.
    pub batch_max: usize,
    /// How long a partial batch waits for more messages.
    pub batch_wait: Duration,
    pub max_payload_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// One configuration problem, naming its variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub variable: String,
    pub message: String,
}

/// Collects problems while parsing goes on, so all are reported together.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn push(&mut self, variable: &str, message: &str) {
        self.0.push(Problem {
            variable: variable.to_owned(),
            message: message.to_owned(),
        });
    }

    /// Parses `raw` as `T`, or records "expected {expected}" and falls back to `default`.
    fn parse<T: std::str::FromStr>(
        &mut self,
        variable: &str,
        raw: Option<&str>,
        default: T,
        expected: &str,
    ) -> T {
        match raw.map(str::trim) {
            None => default,
            Some(text) => text.parse().unwrap_or_else(|_| {
                self.push(variable, &format!("expected {expected}, got {text:?}"));
                default
            }),
        }
    }

    /// Like [`Problems::parse`], and the value must also lie in `range`.
    fn parse_in<T>(
        &mut self,
        variable: &str,
        raw: Option<&str>,
        default: T,
        range: std::ops::RangeInclusive<T>,
        unit: &str,
    ) -> T
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let expected = format!("{unit} from {} to {}", range.start(), range.end());
        let value = self.parse(variable, raw, default, &expected);
        if range.contains(&value) {
            value
        } else {
            self.push(variable, &format!("expected {expected}, got {value}"));
            default
        }
    }

    fn required<'a>(
        &mut self,
        variable: &str,
        raw: &'a Option<String>,
        example: &str,
    ) -> Option<&'a str> {
        let value = raw.as_deref().map(str::trim);
        if value.is_none() {
            self.push(variable, &format!("required, e.g. {example}"));
        }
        value
    }
}

/// The configuration could not be used; the process exits with status 2.
#[derive(Debug, thiserror::Error)]
#[error("{}", render_problems(.0))]
pub struct ConfigError(pub Vec<Problem>);

fn render_problems(problems: &[Problem]) -> String {
    let mut text = format!(
        "invalid configuration ({} problem{}):",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        text.push_str(&format!("\n  {}: {}", p.variable, p.message));
    }
    text
}

impl Config {
    /// Reads and validates the configuration from environment variables.
    pub fn from_env(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
        dry_run: bool,
    ) -> Result<Config, ConfigError> {
        let mut problems = Problems::default();
        let pairs = env::utf8_pairs(vars, &mut problems);
        let raw = env::RawEnv::from_pairs(pairs);
        let config = parse(raw, dry_run, &mut problems);
        if problems.0.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(problems.0))
        }
    }
}

fn parse(raw: env::RawEnv, dry_run: bool, problems: &mut Problems) -> Config {
    let mqtt_password = env::secret(
        "MQTT_PASSWORD",
        raw.mqtt_password.clone(),
        raw.mqtt_password_file.clone(),
        problems,
    );
    let ow_auth = env::secret(
        "OW_AUTH",
        raw.ow_auth.clone(),
        raw.ow_auth_file.clone(),
        problems,
    );
    Config {
        mqtt: parse_mqtt(&raw, mqtt_password, problems),
        openwhisk: parse_openwhisk(&raw, ow_auth, dry_run, problems),
        fire: parse_fire(&raw, problems),
        alarms: alarms::parse_alarms(
            alarms::SingleAlarmVars {
                cron: raw.alarm_cron.as_deref(),
                trigger: raw.alarm_trigger.as_deref(),
                timezone: raw.alarm_timezone.as_deref(),
                payload: raw.alarm_payload.as_deref(),
            },
            raw.alarms.as_deref(),
            problems,
        ),
        http_port: problems.parse(
            "HTTP_PORT",
            raw.http_port.as_deref(),
            3000,
            "a TCP port 0-65535",
        ),
        log_format: match raw.log_format.as_deref().map(str::trim) {
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
        shutdown_grace: Duration::from_secs(problems.parse(
            "SHUTDOWN_GRACE_SECS",
            raw.shutdown_grace_secs.as_deref(),
            20,
            "a whole number of seconds",
        )),
        dry_run,
    }
}

fn parse_mqtt(raw: &env::RawEnv, password: Option<String>, problems: &mut Problems) -> MqttConfig {
    let mut config = MqttConfig {
        host: String::new(),
        port: 1883,
        tls: None,
        topics: Vec::new(),
        qos: 1,
        client_id: default_client_id(),
        clean_session: problems.parse(
            "MQTT_CLEAN_SESSION",
            raw.mqtt_clean_session.as_deref(),
            false,
            "true or false",
        ),
        credentials: None,
        keep_alive: Duration::from_secs(30),
        max_packet_bytes: problems.parse(
            "MQTT_MAX_PACKET_BYTES",
            raw.mqtt_max_packet_bytes.as_deref(),
            4 * 1024 * 1024,
            "a number of bytes",
        ),
    };
    let mut url_credentials = None;
    if let Some(url) = problems.required("MQTT_URL", &raw.mqtt_url, "mqtt://mosquitto:1883") {
        match names::mqtt_url(url) {
            Ok(parsed) => {
                config.host = parsed.host;
                config.port = parsed.port;
                config.tls = parsed.tls.then(MqttTls::default);
                url_credentials = parsed.credentials;
            }
            Err(message) => problems.push("MQTT_URL", &message),
        }
    }
    if let Some(topics) = problems.required("MQTT_TOPICS", &raw.mqtt_topics, "dc1/sensors/#") {
        config.topics = topics.split(',').map(|t| t.trim().to_owned()).collect();
        for topic in &config.topics {
            if topic.is_empty() || !rumqttc::valid_filter(topic) {
                problems.push(
                    "MQTT_TOPICS",
                    &format!("{topic:?} is not a valid topic filter (+ must fill a whole level, # must be the last level)"),
                );
            }
        }
    }
    config.qos = problems.parse_in("MQTT_QOS", raw.mqtt_qos.as_deref(), 1u8, 0..=2, "QoS");
    if let Some(id) = raw.mqtt_client_id.as_deref() {
        config.client_id = id.trim().to_owned();
    }
    let keep_alive = problems.parse_in(
        "MQTT_KEEP_ALIVE_SECS",
        raw.mqtt_keep_alive_secs.as_deref(),
        30,
        5..=3600,
        "seconds",
    );
    config.keep_alive = Duration::from_secs(keep_alive);
    config.credentials = credentials(raw, url_credentials, password, problems);
    let tls_files = [
        &raw.mqtt_ca_file,
        &raw.mqtt_client_cert_file,
        &raw.mqtt_client_key_file,
    ];
    if let Some(tls) = config.tls.as_mut() {
        *tls = tls_material(raw, problems);
    } else if tls_files.iter().any(|f| f.is_some()) {
        problems.push("MQTT_URL", "TLS files are set but the URL is not mqtts://");
    }
    config
}

fn credentials(
    raw: &env::RawEnv,
    from_url: Option<(String, Option<String>)>,
    password: Option<String>,
    problems: &mut Problems,
) -> Option<Credentials> {
    let (url_user, url_password) = from_url.unzip();
    let username = raw.mqtt_username.clone().or(url_user);
    let password = password.or(url_password.flatten());
    match (username, password) {
        (Some(username), password) => Some(Credentials {
            username,
            password: password.map(SecretString::from),
        }),
        (None, Some(_)) => {
            problems.push(
                "MQTT_PASSWORD",
                "a password needs a user name (MQTT_USERNAME or the URL's user)",
            );
            None
        }
        (None, None) => None,
    }
}

fn tls_material(raw: &env::RawEnv, problems: &mut Problems) -> MqttTls {
    let mut certs = |variable: &str, path: &Option<String>| {
        let path = path.as_deref()?;
        let parsed = std::fs::read(path)
            .map_err(|e| format!("cannot read {path}: {e}"))
            .and_then(|pem| {
                CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("{path} is not PEM: {e}"))
            })
            .and_then(|certs| match certs.is_empty() {
                true => Err(format!("{path} holds no PEM certificate")),
                false => Ok(certs),
            });
        parsed
            .map_err(|message| problems.push(variable, &message))
            .ok()
    };
    let ca = certs("MQTT_CA_FILE", &raw.mqtt_ca_file);
    let chain = certs("MQTT_CLIENT_CERT_FILE", &raw.mqtt_client_cert_file);
    let key = raw.mqtt_client_key_file.as_deref().and_then(|path| {
        // The key is a secret: name the file, never its content.
        PrivateKeyDer::from_pem_file(path)
            .map_err(|e| {
                problems.push(
                    "MQTT_CLIENT_KEY_FILE",
                    &format!("no PEM private key read from {path}: {e}"),
                )
            })
            .ok()
    });
    if raw.mqtt_client_cert_file.is_some() != raw.mqtt_client_key_file.is_some() {
        problems.push(
            "MQTT_CLIENT_CERT_FILE",
            "a client certificate needs both MQTT_CLIENT_CERT_FILE and MQTT_CLIENT_KEY_FILE",
        );
    }
    MqttTls {
        ca,
        client_auth: chain.zip(key),
    }
}

fn parse_openwhisk(
    raw: &env::RawEnv,
    auth: Option<String>,
    dry_run: bool,
    problems: &mut Problems,
) -> Option<OpenWhiskConfig> {
    let namespace = raw
        .ow_namespace
        .as_deref()
        .map_or("_", str::trim)
        .to_owned();
    if namespace != "_" && !names::valid_entity_name(&namespace) {
        problems.push(
            "OW_NAMESPACE",
            &format!("{namespace:?} is not a valid OpenWhisk namespace name"),
        );
    }
    let insecure = problems.parse(
        "OW_INSECURE",
        raw.ow_insecure.as_deref(),
        false,
        "true or false",
    );
    if dry_run && raw.ow_api_host.is_none() && auth.is_none() {
        return None;
    }
    let api_host = problems
        .required(
            "OW_API_HOST",
            &raw.ow_api_host,
            "openwhisk.openwhisk.svc.cluster.local:443",
        )
        .and_then(|host| {
            names::api_host(host)
                .map_err(|message| problems.push("OW_API_HOST", &message))
                .ok()
        });
    let auth = match auth.as_deref().map(str::trim) {
        None => {
            problems.push(
                "OW_AUTH",
                "required (or OW_AUTH_FILE): the API key as uuid:key",
            );
            None
        }
        Some(auth) => match auth.split_once(':') {
            Some((uuid, key)) if !uuid.is_empty() && !key.is_empty() => Some(ApiKey {
                uuid: uuid.to_owned(),
                key: SecretString::from(key.to_owned()),
            }),
            // Never echo the value: it is a secret.
            _ => {
                problems.push(
                    "OW_AUTH",
                    "expected the API key as uuid:key (value not shown)",
                );
                None
            }
        },
    };
    Some(OpenWhiskConfig {
        api_host: api_host?,
        auth: auth?,
        namespace,
        insecure,
    })
}

fn parse_fire(raw: &env::RawEnv, problems: &mut Problems) -> FireConfig {
    let trigger = problems
        .required("OW_TRIGGER", &raw.ow_trigger, "addReadingToDbTrigger")
        .unwrap_or_default()
        .to_owned();
    if !trigger.is_empty() && !names::valid_entity_name(&trigger) {
        problems.push(
            "OW_TRIGGER",
            &format!("{trigger:?} is not a valid OpenWhisk trigger name"),
        );
    }
    let params = json_object(problems, "FIRE_PARAMS", raw.fire_params.as_deref());
    for key in params.keys().filter(|k| MESSAGE_KEYS.contains(&k.as_str())) {
        problems.push(
            "FIRE_PARAMS",
            &format!("key {key:?} collides with a key every message fire sets"),
        );
    }
    let concurrency = problems.parse_in(
        "FIRE_CONCURRENCY",
        raw.fire_concurrency.as_deref(),
        64,
        1..=10_000,
        "a number",
    );
    let timeout = problems.parse_in(
        "FIRE_TIMEOUT_SECS",
        raw.fire_timeout_secs.as_deref(),
        30,
        1..=3600,
        "seconds",
    );
    let batch_max = problems.parse_in(
        "FIRE_BATCH_MAX",
        raw.fire_batch_max.as_deref(),
        1,
        1..=10_000,
        "a number",
    );
    let batch_wait_ms: u64 = problems.parse(
        "FIRE_BATCH_WAIT_MS",
        raw.fire_batch_wait_ms.as_deref(),
        100,
        "milliseconds",
    );
    FireConfig {
        trigger,
        params,
        concurrency,
        timeout: Duration::from_secs(timeout),
        batch_max,
        batch_wait: Duration::from_millis(batch_wait_ms),
        max_payload_bytes: problems.parse(
            "FIRE_MAX_PAYLOAD_BYTES",
            raw.fire_max_payload_bytes.as_deref(),
            1_048_576,
            "a number of bytes",
        ),
    }
}

/// Parses a JSON object, naming the variable and what was wrong.
fn json_object(problems: &mut Problems, variable: &str, raw: Option<&str>) -> Map<String, Value> {
    let Some(text) = raw else {
        return Map::new();
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        Ok(other) => {
            problems.push(
                variable,
                &format!("expected a JSON object, got {}", json_kind(&other)),
            );
            Map::new()
        }
        Err(e) => {
            problems.push(variable, &format!("expected a JSON object: {e}"));
            Map::new()
        }
    }
}

/// How an error message names the kind of a JSON value ("an array").
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn default_client_id() -> String {
    format!(
        "mqtt-whisk-provider-{}",
        gethostname::gethostname().to_string_lossy()
    )
}

#[cfg(test)]
mod tests;
