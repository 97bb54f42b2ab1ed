//! The MQTT section: broker URL, topic filters, session, credentials and TLS material.

use std::sync::Arc;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::SecretString;
use url::Url;

use super::Problems;
use super::files::read_bounded;
use super::mqtt_limits::{Encoding, MAX_PACKET_BYTES, check_packets_fit, fits_a_string};
use super::raw::RawEnv;
use super::routes::filter_error;

/// How to reach the broker and as whom; cloned (with another host, credentials and
/// client id) for each connection a feed registration needs.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub tls: Option<Arc<MqttTls>>,
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

#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Option<SecretString>,
}

pub(super) fn parse(raw: &RawEnv, problems: &mut Problems) -> MqttConfig {
    let mut config = MqttConfig {
        host: String::new(),
        port: 1883,
        tls: None,
        topics: Vec::new(),
        qos: problems.parse_in("MQTT_QOS", raw.get("MQTT_QOS"), 1, 0..=2, "QoS"),
        client_id: raw
            .get("MQTT_CLIENT_ID")
            .map_or_else(default_client_id, |id| id.trim().to_owned()),
        clean_session: problems.parse(
            "MQTT_CLEAN_SESSION",
            raw.get("MQTT_CLEAN_SESSION"),
            false,
            "true or false",
        ),
        credentials: None,
        keep_alive: Duration::from_secs(problems.parse_in(
            "MQTT_KEEP_ALIVE_SECS",
            raw.get("MQTT_KEEP_ALIVE_SECS"),
            30,
            5..=3600,
            "seconds",
        )),
        max_packet_bytes: problems.parse_in(
            "MQTT_MAX_PACKET_BYTES",
            raw.get("MQTT_MAX_PACKET_BYTES"),
            4 * 1024 * 1024,
            MAX_PACKET_BYTES,
            "bytes",
        ),
    };
    let mut strings_fit = fits_a_string(
        problems,
        "MQTT_CLIENT_ID",
        None,
        &config.client_id,
        Encoding::Utf8,
    );
    let mut url_credentials = None;
    if let Some(url) = problems.required("MQTT_URL", raw.get("MQTT_URL"), "mqtt://mosquitto:1883") {
        match BrokerUrl::parse(url, Spellings::MqttUrl) {
            Ok(parsed) => {
                config.host = parsed.host;
                config.port = parsed.port;
                config.tls = parsed.tls.then(Arc::default);
                url_credentials = parsed.credentials;
            }
            Err(message) => problems.push("MQTT_URL", &message),
        }
    }
    // Required unless ROUTES or the feed give routes: see `routes`.
    if let Some(topics) = raw.get("MQTT_TOPICS") {
        config.topics = topics.split(',').map(|t| t.trim().to_owned()).collect();
        for (index, topic) in config.topics.iter().enumerate() {
            let part = format!("filter {}", index + 1);
            if !fits_a_string(problems, "MQTT_TOPICS", Some(&part), topic, Encoding::Utf8) {
                strings_fit = false;
            } else if let Some(error) = filter_error(topic) {
                problems.push("MQTT_TOPICS", &format!("{topic:?} is {error}"));
            }
        }
    }
    let (credentials, credentials_fit) = credentials(raw, url_credentials, problems);
    config.credentials = credentials;
    let tls_files = [
        raw.get("MQTT_CA_FILE"),
        raw.get("MQTT_CLIENT_CERT_FILE"),
        raw.get("MQTT_CLIENT_KEY_FILE"),
    ];
    if let Some(tls) = config.tls.as_mut() {
        *tls = Arc::new(tls_material(raw, problems));
    } else if tls_files.iter().any(|f| f.is_some()) {
        problems.push("MQTT_URL", "TLS files are set but the URL is not mqtts://");
    }
    // Packets of strings that do not fit are reported as those strings.
    if strings_fit && credentials_fit {
        check_packets_fit(&config, problems);
    }
    config
}

/// The user name and password, each from its variable or else from the URL, and whether
/// both fit MQTT strings.
fn credentials(
    raw: &RawEnv,
    from_url: Option<(String, Option<String>)>,
    problems: &mut Problems,
) -> (Option<Credentials>, bool) {
    let (url_user, url_password) = from_url.unzip();
    let username = match raw.get("MQTT_USERNAME") {
        Some(username) => Some(("MQTT_USERNAME", username.to_owned())),
        None => url_user.map(|user| ("MQTT_URL", user)),
    };
    let password = match raw.get("MQTT_PASSWORD") {
        Some(password) => Some(("MQTT_PASSWORD", password.to_owned())),
        None => url_password
            .flatten()
            .map(|password| ("MQTT_URL", password)),
    };
    let mut fit = true;
    for (value, encoding) in [(&username, Encoding::Utf8), (&password, Encoding::Binary)] {
        if let Some((variable, value)) = value {
            fit &= fits_a_string(problems, variable, None, value, encoding);
        }
    }
    let credentials = match (username, password) {
        (Some((_, username)), password) => Some(Credentials {
            username,
            password: password.map(|(_, p)| SecretString::from(p)),
        }),
        (None, Some(_)) => {
            problems.push(
                "MQTT_PASSWORD",
                "a password needs a user name (MQTT_USERNAME or the URL's user)",
            );
            None
        }
        (None, None) => None,
    };
    (credentials, fit)
}

/// A PEM file holds a few certificates (the Mozilla bundle is about 220 KB) or a key.
const PEM_FILE_MAX_BYTES: u64 = 4 * 1024 * 1024;

fn tls_material(raw: &RawEnv, problems: &mut Problems) -> MqttTls {
    let mut certs = |variable: &str, path: Option<&str>| {
        let path = path?;
        let parsed = read_bounded(path, PEM_FILE_MAX_BYTES)
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
    let ca = certs("MQTT_CA_FILE", raw.get("MQTT_CA_FILE"));
    let chain = certs("MQTT_CLIENT_CERT_FILE", raw.get("MQTT_CLIENT_CERT_FILE"));
    let key = raw.get("MQTT_CLIENT_KEY_FILE").and_then(|path| {
        // The key is a secret: name the file, never its content.
        read_bounded(path, PEM_FILE_MAX_BYTES)
            .and_then(|pem| {
                PrivateKeyDer::from_pem_slice(&pem)
                    .map_err(|e| format!("no PEM private key read from {path}: {e}"))
            })
            .map_err(|message| problems.push("MQTT_CLIENT_KEY_FILE", &message))
            .ok()
    });
    if raw.get("MQTT_CLIENT_CERT_FILE").is_some() != raw.get("MQTT_CLIENT_KEY_FILE").is_some() {
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

/// A parsed broker URL (`MQTT_URL`, or a feed registration's `url`).
pub struct BrokerUrl {
    /// Lower-cased, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// User and optional password from the URL, percent-decoded.
    pub credentials: Option<(String, Option<String>)>,
}

/// Which scheme spellings a broker URL may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spellings {
    /// `MQTT_URL`: `mqtt://`, `mqtts://` and the aliases `tcp://`, `ssl://`.
    MqttUrl,
    /// A feed registration's `url`: also `tls://`, and `http://` for plain MQTT, as the
    /// older feeds' deployments wrote it.
    Feed,
}

impl BrokerUrl {
    /// Parses `mqtt://[user:pass@]host[:port]` or `mqtts://...`. Error messages never
    /// repeat the URL, since it may carry a password.
    pub fn parse(text: &str, spellings: Spellings) -> Result<BrokerUrl, String> {
        let url = Url::parse(text.trim())
            .map_err(|e| format!("expected mqtt://[user:pass@]host[:port]: {e}"))?;
        let (tls, default_port) = match (url.scheme(), spellings) {
            ("mqtt" | "tcp", _) | ("http", Spellings::Feed) => (false, 1883),
            ("mqtts" | "ssl", _) | ("tls", Spellings::Feed) => (true, 8883),
            (other, _) => {
                return Err(format!(
                    "scheme must be mqtt:// or mqtts://, got {other}://"
                ));
            }
        };
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase(),
            _ => return Err("expected a host, as in mqtt://mosquitto:1883".to_owned()),
        };
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return Err("expected no path or query after host[:port]".to_owned());
        }
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let credentials = (!url.username().is_empty())
            .then(|| (decode(url.username()), url.password().map(decode)));
        Ok(BrokerUrl {
            host,
            port: url.port().unwrap_or(default_port),
            tls,
            credentials,
        })
    }
}

fn default_client_id() -> String {
    format!(
        "mqtt-whisk-provider-{}",
        gethostname::gethostname().to_string_lossy()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_url_defaults_ports_by_scheme_and_decodes_credentials() {
        let plain = BrokerUrl::parse("mqtt://mosquitto", Spellings::MqttUrl).unwrap();
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.tls),
            ("mosquitto", 1883, false)
        );
        let tls =
            BrokerUrl::parse("mqtts://u%40dc1:p%3Ass@broker:9999", Spellings::MqttUrl).unwrap();
        assert_eq!((tls.port, tls.tls), (9999, true));
        assert_eq!(tls.credentials, Some(("u@dc1".into(), Some("p:ss".into()))));
    }

    #[test]
    fn feed_urls_may_use_the_older_feeds_spellings() {
        for (url, tls) in [
            ("http://test:test@mosquitto:1883", false),
            ("tcp://mosquitto", false),
            ("tls://mosquitto", true),
            ("ssl://mosquitto", true),
        ] {
            let parsed = BrokerUrl::parse(url, Spellings::Feed).unwrap();
            assert_eq!(
                (parsed.host.as_str(), parsed.tls),
                ("mosquitto", tls),
                "{url}"
            );
        }
        assert!(BrokerUrl::parse("http://mosquitto", Spellings::MqttUrl).is_err());
        assert!(BrokerUrl::parse("ws://mosquitto", Spellings::Feed).is_err());
    }

    #[test]
    fn mqtt_url_errors_never_repeat_the_password() {
        let error = BrokerUrl::parse("http://user:hunter2@broker", Spellings::MqttUrl)
            .err()
            .unwrap();
        assert!(error.contains("http://"), "{error}");
        assert!(!error.contains("hunter2"));
    }
}
