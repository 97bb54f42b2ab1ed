//! Parsers for the structured values: broker URL, OpenWhisk API host, entity names.

use percent_encoding::percent_decode_str;
use url::Url;

/// A parsed `MQTT_URL`.
pub struct MqttUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// User and optional password from the URL, percent-decoded.
    pub credentials: Option<(String, Option<String>)>,
}

/// Parses `mqtt://[user:pass@]host[:port]` or `mqtts://...`. Error messages never repeat
/// the URL, since it may carry a password.
pub fn mqtt_url(text: &str) -> Result<MqttUrl, String> {
    let url =
        Url::parse(text).map_err(|e| format!("expected mqtt://[user:pass@]host[:port]: {e}"))?;
    let (tls, default_port) = match url.scheme() {
        "mqtt" | "tcp" => (false, 1883),
        "mqtts" | "ssl" => (true, 8883),
        other => {
            return Err(format!(
                "scheme must be mqtt:// or mqtts://, got {other}://"
            ));
        }
    };
    let host = match url.host_str() {
        Some(host) if !host.is_empty() => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        _ => return Err("expected a host, as in mqtt://mosquitto:1883".to_owned()),
    };
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err("expected no path or query after host[:port]".to_owned());
    }
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let credentials =
        (!url.username().is_empty()).then(|| (decode(url.username()), url.password().map(decode)));
    Ok(MqttUrl {
        host,
        port: url.port().unwrap_or(default_port),
        tls,
        credentials,
    })
}

/// Parses `OW_API_HOST` as wsk does: a bare `host[:port]` means https.
pub fn api_host(text: &str) -> Result<Url, String> {
    let text = text.trim_end_matches('/');
    let full = if text.starts_with("http://") || text.starts_with("https://") {
        text.to_owned()
    } else if text.contains("://") {
        return Err("scheme must be http:// or https:// (or none, meaning https)".to_owned());
    } else {
        format!("https://{text}")
    };
    let url =
        Url::parse(&full).map_err(|e| format!("expected host[:port] or an http(s):// URL: {e}"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err("expected a host".to_owned());
    }
    if url.query().is_some() || !url.username().is_empty() {
        return Err(
            "expected no credentials or query in the URL; the key goes in OW_AUTH".to_owned(),
        );
    }
    Ok(url)
}

/// OpenWhisk's entity-name rule (`EntityPath.scala`): word characters, then also
/// space, `@`, `.`, `&` and `-`; no trailing space; at most 256 characters.
pub(crate) fn valid_entity_name(name: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let inner = |c: char| word(c) || matches!(c, '@' | ' ' | '.' | '&' | '-');
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    word(first) && name.chars().count() <= 256 && chars.all(inner) && !name.ends_with(' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_url_defaults_ports_by_scheme_and_decodes_credentials() {
        let plain = mqtt_url("mqtt://mosquitto").unwrap();
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.tls),
            ("mosquitto", 1883, false)
        );
        let tls = mqtt_url("mqtts://u%40dc1:p%3Ass@broker:9999").unwrap();
        assert_eq!((tls.port, tls.tls), (9999, true));
        assert_eq!(tls.credentials, Some(("u@dc1".into(), Some("p:ss".into()))));
    }

    #[test]
    fn mqtt_url_errors_never_repeat_the_password() {
        let error = mqtt_url("http://user:hunter2@broker").err().unwrap();
        assert!(error.contains("http://"), "{error}");
        assert!(!error.contains("hunter2"));
    }

    #[test]
    fn api_host_follows_wsk_rules() {
        assert_eq!(
            api_host("ow.example").unwrap().as_str(),
            "https://ow.example/"
        );
        assert_eq!(
            api_host("ow.example:31001/").unwrap().as_str(),
            "https://ow.example:31001/"
        );
        assert_eq!(
            api_host("http://10.0.0.1:3233").unwrap().as_str(),
            "http://10.0.0.1:3233/"
        );
        assert!(api_host("ftp://ow").is_err());
    }

    #[test]
    fn entity_names_follow_openwhisk_rules() {
        for ok in ["a", "addReadingToDbTrigger", "my trigger@dc1.x&y-z", "_"] {
            assert!(valid_entity_name(ok), "{ok}");
        }
        for bad in ["", " lead", "trail ", "-x", "a/b", "a#b", &"x".repeat(257)] {
            assert!(!valid_entity_name(bad), "{bad}");
        }
    }
}
