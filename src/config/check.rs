//! `--check`: the effective configuration as an operator reads it, secrets masked.

use std::fmt::Write;

use super::Config;

const MASK: &str = "******** (set)";

/// Renders the effective configuration, one `NAME = value` line per variable.
pub fn render_check(config: &Config) -> String {
    let mut out = String::new();
    let mut line = |name: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{name:24} = {value}");
    };
    let mqtt = &config.mqtt;
    let scheme = if mqtt.tls.is_some() { "mqtts" } else { "mqtt" };
    line(
        "MQTT_URL",
        &format!("{scheme}://{}:{}", mqtt.host, mqtt.port),
    );
    line("MQTT_TOPICS", &mqtt.topics.join(","));
    line("MQTT_QOS", &mqtt.qos);
    line("MQTT_CLIENT_ID", &mqtt.client_id);
    line("MQTT_CLEAN_SESSION", &mqtt.clean_session);
    match &mqtt.credentials {
        Some(c) => {
            line("MQTT_USERNAME", &c.username);
            line(
                "MQTT_PASSWORD",
                &if c.password.is_some() { MASK } else { "(none)" },
            );
        }
        None => line("MQTT_USERNAME", &"(anonymous)"),
    }
    if let Some(tls) = &mqtt.tls {
        line(
            "MQTT_CA_FILE",
            &if tls.ca.is_some() {
                "(loaded)"
            } else {
                "(Mozilla roots)"
            },
        );
        line(
            "MQTT_CLIENT_CERT_FILE",
            &if tls.client_auth.is_some() {
                "(loaded)"
            } else {
                "(none)"
            },
        );
    }
    line("MQTT_KEEP_ALIVE_SECS", &mqtt.keep_alive.as_secs());
    line("MQTT_MAX_PACKET_BYTES", &mqtt.max_packet_bytes);
    match &config.openwhisk {
        Some(ow) => {
            line("OW_API_HOST", &ow.api_host.as_str().trim_end_matches('/'));
            line("OW_AUTH", &MASK);
            line("OW_NAMESPACE", &ow.namespace);
            line("OW_INSECURE", &ow.insecure);
        }
        None => line("OW_API_HOST", &"(none: --dry-run)"),
    }
    let fire = &config.fire;
    line("OW_TRIGGER", &fire.trigger);
    line(
        "FIRE_PARAMS",
        &serde_json::Value::Object(fire.params.clone()),
    );
    line("FIRE_CONCURRENCY", &fire.concurrency);
    line("FIRE_TIMEOUT_SECS", &fire.timeout.as_secs());
    line("FIRE_BATCH_MAX", &fire.batch_max);
    line("FIRE_BATCH_WAIT_MS", &fire.batch_wait.as_millis());
    line("FIRE_MAX_PAYLOAD_BYTES", &fire.max_payload_bytes);
    if config.alarms.is_empty() {
        line("ALARMS", &"(none)");
    }
    let now = chrono::Utc::now();
    for alarm in &config.alarms {
        line("ALARM", &alarm.describe(now));
    }
    line("HTTP_PORT", &config.http_port);
    line(
        "LOG_FORMAT",
        &format!("{:?}", config.log_format).to_lowercase(),
    );
    line("SHUTDOWN_GRACE_SECS", &config.shutdown_grace.as_secs());
    out
}
