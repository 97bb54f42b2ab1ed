//! The OpenWhisk side: the [`Sink`] that fires go to, a reqwest client that fires
//! triggers and sorts every answer into the few [`Verdict`]s the delivery rules of SPEC
//! section 4 care about, and the dry run's stand-in for it.

mod dry_run;
#[cfg(test)]
pub(crate) mod scripted;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER};
use secrecy::ExposeSecret;
use url::Url;

use crate::config::{ApiKey, OpenWhiskConfig};

pub use dry_run::DryRun;

/// Where fires go: OpenWhisk, or the log of a dry run. The delivery rules are the same
/// for both, so only the sink knows which it is.
pub trait Sink: Send + Sync {
    /// Sends one fire. Never fails: no answer (refused, reset, timed out) is an answer too.
    fn fire<'a>(&'a self, target: &'a Target, body: Bytes) -> Pending<'a, Answer>;

    /// The check at start that `target`'s key works and its trigger exists; `None` when
    /// the sink sends nowhere, so there is nothing to check.
    fn check_trigger<'a>(&'a self, target: &'a Target) -> Pending<'a, Option<Answer>>;
}

/// What a [`Sink`] answers with, boxed so that the sink can be chosen at start.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Fires any [`Target`] at `OW_API_HOST`, over one connection pool.
pub struct OpenWhiskClient {
    http: reqwest::Client,
    base: Url,
}

/// One trigger and the key it is fired with: what a fire needs besides its body. The
/// message fires and each alarm have their own, so that many triggers, namespaces and
/// keys are data, not special cases. The API host is the client's: one OpenWhisk per
/// data center.
#[derive(Clone)]
pub struct Target {
    /// As configured; `_` is the key's own namespace. 429 pauses are per namespace.
    pub namespace: Arc<str>,
    pub trigger: Arc<str>,
    /// `Basic base64(uuid:key)`, built once and marked sensitive so it is never logged;
    /// `None` only in a dry run without `OW_AUTH`.
    authorization: Option<HeaderValue>,
}

impl Target {
    pub fn new(key: Option<&ApiKey>, namespace: &str, trigger: &str) -> Target {
        let authorization = key.map(|key| {
            let credentials = format!("{}:{}", key.uuid, key.key.expose_secret());
            let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
            let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
                .expect("base64 is a valid header value");
            value.set_sensitive(true);
            value
        });
        Target {
            namespace: namespace.into(),
            trigger: trigger.into(),
            authorization,
        }
    }
}

/// What one request came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx other than 204: an activation was started.
    Accepted,
    /// 204: OpenWhisk took the fire but no active rule starts an action.
    NoActiveRule,
    /// 400 with OpenWhisk's own error body: this payload can never be accepted.
    Rejected,
    /// 413 with OpenWhisk's own error body: larger than the namespace's payload limit.
    TooLarge,
    /// 429: the namespace's fires-per-minute limit is reached.
    Throttled { retry_after: Option<Duration> },
    /// 401, 403, 404: wrong key or trigger not created (yet). A redirect (3xx), or a 400
    /// or 413 that is not OpenWhisk's own: not OpenWhisk answering at `OW_API_HOST`.
    /// Retry slowly.
    NotReady,
    /// Connection errors, timeouts, 408, 5xx and anything unexpected: retry.
    Transient { retry_after: Option<Duration> },
}

/// One request's result, with what an operator needs to read in a log.
#[derive(Debug, Clone)]
pub struct Answer {
    pub verdict: Verdict,
    /// `None` when no HTTP answer came (refused, reset, timed out; a dry run sends none).
    pub status: Option<StatusCode>,
    /// OpenWhisk's `error` text, a snippet of another body, or the connection error.
    pub detail: String,
}

impl OpenWhiskClient {
    pub fn new(config: &OpenWhiskConfig, timeout: Duration) -> anyhow::Result<OpenWhiskClient> {
        // reqwest and rumqttc are built without a default provider, to use ring (small,
        // builds for musl) rather than aws-lc; the first caller installs it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .tls_danger_accept_invalid_certs(config.insecure)
            // Following a redirect would turn the POST into a GET without a body (301, 302,
            // 303) whose 200 reads as an accepted fire, or send the key to another host.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mqtt-whisk-provider/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(OpenWhiskClient {
            http,
            base: config.api_host.clone(),
        })
    }

    /// `{api}/api/v1/namespaces/{ns}/triggers/{name}`, each segment percent-encoded.
    fn trigger_url(&self, target: &Target) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http(s) URLs have a path")
            .pop_if_empty()
            .extend([
                "api",
                "v1",
                "namespaces",
                &target.namespace,
                "triggers",
                &target.trigger,
            ]);
        url
    }

    /// `request` with the target's key, if it has one.
    fn authorized(request: reqwest::RequestBuilder, target: &Target) -> reqwest::RequestBuilder {
        match &target.authorization {
            Some(authorization) => request.header(AUTHORIZATION, authorization.clone()),
            None => request,
        }
    }
}

impl Sink for OpenWhiskClient {
    /// POSTs the fire; a transport error is a [`Verdict::Transient`] answer.
    fn fire<'a>(&'a self, target: &'a Target, body: Bytes) -> Pending<'a, Answer> {
        let request = self
            .http
            .post(self.trigger_url(target))
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let request = Self::authorized(request, target);
        Box::pin(async move { answer(request.send().await).await })
    }

    /// GETs the trigger: the cheap check that the key works and the trigger exists.
    fn check_trigger<'a>(&'a self, target: &'a Target) -> Pending<'a, Option<Answer>> {
        let request = Self::authorized(self.http.get(self.trigger_url(target)), target);
        Box::pin(async move {
            let mut answer = answer(request.send().await).await;
            if answer.status == Some(StatusCode::OK) {
                answer.verdict = Verdict::Accepted;
            }
            Some(answer)
        })
    }
}

async fn answer(result: reqwest::Result<reqwest::Response>) -> Answer {
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            return Answer {
                verdict: Verdict::Transient { retry_after: None },
                status: None,
                detail: transport_error(&error),
            };
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let location = response.headers().get(LOCATION).cloned();
    // Read the body even on success, so the connection can serve the next fire.
    let body = response.bytes().await.unwrap_or_default();
    let openwhisk_error = openwhisk_error(&body);
    let verdict = classify(status, retry_after, openwhisk_error.is_some());
    let detail = if status.is_success() {
        String::new()
    } else if status.is_redirection() {
        redirect_detail(location.as_ref())
    } else {
        openwhisk_error.unwrap_or_else(|| body_snippet(&body))
    };
    Answer {
        verdict,
        status: Some(status),
        detail,
    }
}

/// Maps an answer to the delivery rule it calls for (SPEC section 4). `from_openwhisk`:
/// whether the body is OpenWhisk's own error (see [`openwhisk_error`]); a 400 or 413 is
/// final only then, since a proxy's (nginx's, when plain http reaches its https port)
/// says nothing about the fire.
pub fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    from_openwhisk: bool,
) -> Verdict {
    match status.as_u16() {
        204 => Verdict::NoActiveRule,
        200..=299 => Verdict::Accepted,
        300..=399 => Verdict::NotReady,
        400 if from_openwhisk => Verdict::Rejected,
        413 if from_openwhisk => Verdict::TooLarge,
        400 | 413 | 401 | 403 | 404 => Verdict::NotReady,
        429 => Verdict::Throttled { retry_after },
        _ => Verdict::Transient { retry_after },
    }
}

/// Where a redirect points, which is what `OW_API_HOST` may have to become.
fn redirect_detail(location: Option<&HeaderValue>) -> String {
    match location {
        Some(location) => format!(
            "redirected to {}, which is not followed",
            String::from_utf8_lossy(location.as_bytes())
        ),
        None => "redirected without a Location, which is not followed".to_owned(),
    }
}

/// The `error` text of OpenWhisk's own error body, `{"error": "...", "code": "<tid>"}`
/// (the transaction id is numeric in old releases). `None` for any other body: an nginx
/// page, a proxy's or a load balancer's answer, which cannot make a fire final.
fn openwhisk_error(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
        code: serde_json::Value,
    }
    let parsed: ErrorBody = serde_json::from_slice(body).ok()?;
    (parsed.code.is_string() || parsed.code.is_u64()).then_some(parsed.error)
}

/// The start of a body that is not OpenWhisk's, whitespace squashed (an nginx page).
fn body_snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    text.chars().take(160).collect()
}

/// The innermost cause ("Connection refused (os error 111)"), which is what an operator
/// can act on; reqwest's own text only says "error sending request".
fn transport_error(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut source: &dyn std::error::Error = error;
    while let Some(inner) = source.source() {
        source = inner;
    }
    format!("{kind}: {source}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(api_host: &str) -> OpenWhiskClient {
        OpenWhiskClient::new(
            &OpenWhiskConfig {
                api_host: Url::parse(api_host).unwrap(),
                auth: key(),
                namespace: "_".into(),
                insecure: false,
            },
            Duration::from_secs(1),
        )
        .unwrap()
    }

    fn key() -> ApiKey {
        ApiKey {
            uuid: "u".into(),
            key: "k".to_owned().into(),
        }
    }

    #[test]
    fn trigger_url_percent_encodes_namespace_and_name() {
        let target = Target::new(Some(&key()), "guest@dc 1", "my trigger&x");
        let url = client("https://ow.example:31001/").trigger_url(&target);
        assert_eq!(
            url.as_str(),
            "https://ow.example:31001/api/v1/namespaces/guest@dc%201/triggers/my%20trigger&x"
        );
        let url = client("http://ow.example/prefix").trigger_url(&Target::new(None, "_", "t"));
        assert_eq!(
            url.as_str(),
            "http://ow.example/prefix/api/v1/namespaces/_/triggers/t"
        );
    }

    #[test]
    fn a_targets_key_is_basic_auth_and_never_shown() {
        let target = Target::new(Some(&key()), "_", "t");
        let authorization = target.authorization.unwrap();
        // base64("u:k")
        assert_eq!(authorization, "Basic dTpr");
        assert!(authorization.is_sensitive());
        assert!(!format!("{authorization:?}").contains("dTpr"));
    }

    #[test]
    fn statuses_map_to_the_delivery_rules() {
        let s = |code| classify(StatusCode::from_u16(code).unwrap(), None, true);
        assert_eq!(s(202), Verdict::Accepted);
        assert_eq!(s(204), Verdict::NoActiveRule);
        assert_eq!(s(400), Verdict::Rejected);
        assert_eq!(s(413), Verdict::TooLarge);
        for code in [301, 302, 303, 307, 308, 401, 403, 404] {
            assert_eq!(s(code), Verdict::NotReady);
        }
        assert_eq!(s(429), Verdict::Throttled { retry_after: None });
        for code in [408, 500, 502, 503, 504, 409] {
            assert_eq!(s(code), Verdict::Transient { retry_after: None });
        }
    }

    #[test]
    fn a_redirect_names_its_location() {
        let location =
            HeaderValue::from_static("https://ow.example/api/v1/namespaces/_/triggers/t");
        assert_eq!(
            redirect_detail(Some(&location)),
            "redirected to https://ow.example/api/v1/namespaces/_/triggers/t, which is not followed"
        );
        assert!(redirect_detail(None).contains("without a Location"));
    }

    #[test]
    fn a_400_or_413_is_final_only_when_openwhisk_itself_answered() {
        let s = |code, from_openwhisk| {
            classify(StatusCode::from_u16(code).unwrap(), None, from_openwhisk)
        };
        assert_eq!(s(400, true), Verdict::Rejected);
        assert_eq!(s(413, true), Verdict::TooLarge);
        assert_eq!(s(400, false), Verdict::NotReady);
        assert_eq!(s(413, false), Verdict::NotReady);
        assert_eq!(s(202, false), Verdict::Accepted);
        assert_eq!(s(503, false), Verdict::Transient { retry_after: None });
    }

    #[test]
    fn only_openwhisks_error_shape_is_its_own() {
        let text = |body: &str| openwhisk_error(body.as_bytes());
        let malformed = r#"{"error":"The request content was malformed:\nx","code":"4aVpO2x7k1"}"#;
        assert_eq!(
            text(malformed).as_deref(),
            Some("The request content was malformed:\nx")
        );
        let old_release = r#"{"error":"Request larger than allowed: 2 > 1 bytes.","code":1234}"#;
        assert!(text(old_release).is_some(), "numeric transaction ids");
        for foreign in [
            "<html><head><title>400 Bad Request</title></head></html>",
            r#"{"error":"bad request"}"#,
            r#"{"message":"Bad Request","code":"400"}"#,
            r#"{"error":{"reason":"x"},"code":"y"}"#,
            "",
        ] {
            assert_eq!(text(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn a_foreign_body_is_squashed_into_a_snippet() {
        assert_eq!(
            body_snippet(b"<html>\n<h1>502   Bad Gateway</h1></html>"),
            "<html> <h1>502 Bad Gateway</h1></html>"
        );
    }
}
