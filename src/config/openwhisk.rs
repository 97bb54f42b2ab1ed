//! The OpenWhisk section: API host, key and namespace.

use secrecy::SecretString;
use url::Url;

use super::Problems;
use super::names::check_entity_name;
use super::raw::RawEnv;

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

pub(super) fn parse(
    raw: &RawEnv,
    dry_run: bool,
    problems: &mut Problems,
) -> Option<OpenWhiskConfig> {
    let namespace = raw.get("OW_NAMESPACE").map_or("_", str::trim).to_owned();
    // `_`, the key's own namespace, is a valid name too.
    check_entity_name(problems, "OW_NAMESPACE", &namespace, "namespace");
    let insecure = problems.parse(
        "OW_INSECURE",
        raw.get("OW_INSECURE"),
        false,
        "true or false",
    );
    let auth = raw.get("OW_AUTH");
    if dry_run && raw.get("OW_API_HOST").is_none() && auth.is_none() {
        return None;
    }
    let api_host = problems
        .required(
            "OW_API_HOST",
            raw.get("OW_API_HOST"),
            "openwhisk.openwhisk.svc.cluster.local:443",
        )
        .and_then(|host| {
            api_host(host)
                .map_err(|message| problems.push("OW_API_HOST", &message))
                .ok()
        });
    let auth = match auth.map(str::trim) {
        // Given, but unusable: reported already.
        None if problems.reported("OW_AUTH") || problems.reported("OW_AUTH_FILE") => None,
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

/// Parses `OW_API_HOST` as wsk does: a bare `host[:port]` means https.
fn api_host(text: &str) -> Result<Url, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
