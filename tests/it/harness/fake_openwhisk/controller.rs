//! The controller's rules for a request: routes, then auth 401, entitlement 403, throttle
//! 429 (a fixed window per wall-clock minute), size 413, body 400/415, lookup 404, in that
//! order (`shared/reference/openwhisk.md`, checklist item 3). Everything after auth acts on
//! the namespace of the request's key.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use base64::prelude::{BASE64_STANDARD, Engine as _};
use hyper::Method;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::http::request::Parts;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};

use super::Shared;
use super::answers::{Answer, MAX_PAYLOAD_BYTES, NOT_FOUND, too_large, too_many_requests};
use super::namespace::Namespace;
use super::records::RecordedFire;

/// A namespace's limits on fires.
pub(super) struct Limits {
    /// `None` means unlimited; a real OpenWhisk allows 60 (`limits.triggers.fires.perMinute`).
    fires_per_minute: Option<u32>,
    /// Larger bodies are answered 413 (`allowedMaxPayloadSize` of the namespace).
    max_payload_bytes: u64,
    /// The throttle's fixed window: (epoch minute, fires counted in it).
    window: (u64, u32),
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fires_per_minute: None,
            max_payload_bytes: MAX_PAYLOAD_BYTES,
            window: (0, 0),
        }
    }
}

impl Limits {
    /// Sets the fires allowed per minute and starts counting afresh.
    pub fn set_fires_per_minute(&mut self, limit: Option<u32>) {
        self.fires_per_minute = limit;
        self.window = (current_minute(), 0);
    }

    pub fn set_max_payload_bytes(&mut self, limit: u64) {
        self.max_payload_bytes = limit;
    }

    /// Counts a fire in this minute's window: 429 once the count passes the limit.
    fn count_fire(&mut self) -> Result<(), Answer> {
        let minute = current_minute();
        if self.window.0 != minute {
            self.window = (minute, 0);
        }
        self.window.1 += 1;
        match self.fires_per_minute {
            Some(allowed) if self.window.1 > allowed => Err(Answer::Throttled(
                too_many_requests(self.window.1, allowed),
                None,
            )),
            _ => Ok(()),
        }
    }

    /// 413 when the declared `Content-Length` passes the payload limit.
    fn check_size(&self, content_length: u64) -> Result<(), Answer> {
        if content_length > self.max_payload_bytes {
            let message = too_large(content_length, self.max_payload_bytes);
            return Err(Answer::error(413, message));
        }
        Ok(())
    }
}

/// Routes one request; a POST on a trigger is recorded with the status it gets.
pub(super) async fn route(shared: &Shared, parts: &Parts, body: &Bytes, at: SystemTime) -> Answer {
    let Some(segments) = decode_path(parts.uri.path()) else {
        return Answer::error(400, "The request content was malformed:\nbad path encoding");
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["ping"] | ["api", "v1"]) => Answer::Text("pong"),
        (&Method::GET, ["api", "v1", "namespaces"]) => {
            match Caller::identify(shared, parts).authenticated() {
                Ok(namespace) => Answer::Json(200, json!([namespace.name()])),
                Err(denied) => denied,
            }
        }
        (method, ["api", "v1", "namespaces", namespace, "triggers", name]) => {
            let request = TriggerRequest {
                shared,
                caller: Caller::identify(shared, parts),
                parts,
                namespace,
                name,
                body,
            };
            match *method {
                Method::POST => {
                    let answer = fire(&request).await;
                    request.record(answer.status(), at);
                    answer
                }
                Method::GET | Method::PUT | Method::DELETE => {
                    manage_trigger(&request).unwrap_or_else(|rejection| rejection)
                }
                _ => Answer::error(
                    405,
                    "HTTP method not allowed, supported methods: GET, PUT, DELETE, POST",
                ),
            }
        }
        _ => Answer::error(404, NOT_FOUND),
    }
}

/// Who a request says it is from, read from its Basic credentials.
struct Caller {
    /// Whether the request has an `Authorization` header at all.
    presented: bool,
    /// The namespace whose uuid the credentials name, right key or not: where the fire is
    /// recorded, and what `_` stands for in the records.
    claimed: Option<Namespace>,
    /// Whether the key is the claimed namespace's own, and not revoked.
    authentic: bool,
}

impl Caller {
    fn identify(shared: &Shared, parts: &Parts) -> Caller {
        let Some(value) = header(parts, "authorization") else {
            return Caller {
                presented: false,
                claimed: None,
                authentic: false,
            };
        };
        let credentials = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .and_then(|(_, encoded)| BASE64_STANDARD.decode(encoded.trim()).ok())
            .and_then(|decoded| String::from_utf8(decoded).ok());
        let uuid_and_key = credentials.as_deref().and_then(|c| c.split_once(':'));
        let claimed = uuid_and_key.and_then(|(uuid, _)| shared.find(|ns| ns.uuid() == uuid));
        let authentic = match (&claimed, uuid_and_key) {
            (Some(namespace), Some((_, key))) => namespace.accepts(key),
            _ => false,
        };
        Caller {
            presented: true,
            claimed,
            authentic,
        }
    }

    /// The namespace the key authenticates: 401 "missing" or "invalid" otherwise.
    fn authenticated(&self) -> Result<&Namespace, Answer> {
        match &self.claimed {
            Some(namespace) if self.authentic => Ok(namespace),
            _ if !self.presented => Err(Answer::error(
                401,
                "The resource requires authentication, which was not supplied with the request",
            )),
            _ => Err(Answer::error(401, "The supplied authentication is invalid")),
        }
    }
}

/// A request on `/api/v1/namespaces/{namespace}/triggers/{name}`, segments decoded.
pub(super) struct TriggerRequest<'a> {
    shared: &'a Shared,
    caller: Caller,
    pub parts: &'a Parts,
    /// As written in the path, so possibly `_`.
    namespace: &'a str,
    pub name: &'a str,
    pub body: &'a Bytes,
}

impl TriggerRequest<'_> {
    pub fn header(&self, name: &str) -> Option<String> {
        header(self.parts, name)
    }

    /// 401, then 400 for an illegal name, then 403 for a namespace other than the key's
    /// own; else the key's namespace, the one the request acts on.
    fn check_access(&self) -> Result<&Namespace, Answer> {
        let own = self.caller.authenticated()?;
        if !is_entity_name(self.name) {
            return Err(Answer::error(
                400,
                "The name of the entity contains illegal characters.",
            ));
        }
        if self.namespace != "_" && self.namespace != own.name() {
            let resource = format!("{}/{}", self.namespace, self.name);
            let message =
                format!("The supplied authentication is not authorized to access '{resource}'.");
            return Err(Answer::error(403, message));
        }
        Ok(own)
    }

    /// A non-empty body must be a JSON object sent as `application/json`: else 415 or 400.
    pub fn json_body(&self) -> Result<Map<String, Value>, Answer> {
        if self.body.is_empty() {
            return Ok(Map::new());
        }
        let media_type = self.header(CONTENT_TYPE.as_str()).unwrap_or_default();
        let media_type = media_type.split(';').next().unwrap_or_default().trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            let message =
                "The request's Content-Type is not supported. Expected:\napplication/json";
            return Err(Answer::error(415, message));
        }
        match serde_json::from_slice::<Value>(self.body) {
            Ok(Value::Object(fields)) => Ok(fields),
            Ok(_) => Err(Answer::error(
                400,
                "The request content was malformed:\nObject expected",
            )),
            Err(e) => Err(Answer::error(
                400,
                format!("The request content was malformed:\n{e}"),
            )),
        }
    }

    /// Records the fire in the namespace it belongs to (see [`Namespace::fires`]).
    fn record(&self, status: u16, at: SystemTime) {
        let headers = self.parts.headers.iter().map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), value)
        });
        let claimed = self.caller.claimed.as_ref();
        let resolved_namespace = match self.namespace {
            "_" => claimed.map(|namespace| namespace.name().to_string()),
            named => Some(named.to_string()),
        };
        let fire = RecordedFire {
            namespace: self.namespace.to_string(),
            resolved_namespace,
            trigger: self.name.to_string(),
            body: serde_json::from_slice(self.body).unwrap_or(Value::Null),
            raw_body: self.body.to_vec(),
            headers: headers.collect(),
            status,
            at,
        };
        let owner = claimed
            .cloned()
            .or_else(|| self.shared.find(|ns| ns.name() == self.namespace))
            .unwrap_or_else(|| self.shared.default_namespace());
        owner.state().records.record(fire);
    }
}

/// POST on a trigger: auth, the key's namespace's injected fault, then the controller's
/// checks.
async fn fire(request: &TriggerRequest<'_>) -> Answer {
    let fault = match request.caller.authenticated() {
        Ok(namespace) => namespace.state().fault.clone(),
        Err(denied) => return denied,
    };
    if let Some(answer) = fault.answer(request).await {
        return answer;
    }
    accept_fire(request).unwrap_or_else(|rejection| rejection)
}

/// Entitlement, throttle, size, body and lookup, in the controller's order; then 204 or 202.
fn accept_fire(request: &TriggerRequest<'_>) -> Result<Answer, Answer> {
    let namespace = request.check_access()?;
    let mut state = namespace.state();
    state.limits.count_fire()?;
    let content_length = request
        .header(CONTENT_LENGTH.as_str())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    state.limits.check_size(content_length)?;
    request.json_body()?;
    state.triggers.fire(request.name)
}

/// GET, PUT or DELETE on a trigger, once auth, name and entitlement pass.
fn manage_trigger(request: &TriggerRequest<'_>) -> Result<Answer, Answer> {
    let namespace = request.check_access()?;
    namespace.state().triggers.manage(namespace.name(), request)
}

/// OpenWhisk's entity name rule: `\A([\w]|[\w][\w@ .&-]{0,254}[\w@.&-])\z`.
fn is_entity_name(name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let chars: Vec<char> = name.chars().collect();
    match chars.as_slice() {
        [] => false,
        [only] => word(*only),
        [first, middle @ .., last] => {
            chars.len() <= 256
                && word(*first)
                && middle.iter().all(|&c| word(c) || "@ .&-".contains(c))
                && (word(*last) || "@.&-".contains(*last))
        }
    }
}

/// The path's segments, percent-decoded; `None` if one is not UTF-8 once decoded.
fn decode_path(path: &str) -> Option<Vec<String>> {
    let decode = |segment: &str| {
        let decoded = percent_decode_str(segment).decode_utf8().ok()?;
        Some(decoded.into_owned())
    };
    path.strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(decode)
        .collect()
}

fn header(parts: &Parts, name: &str) -> Option<String> {
    let value = parts.headers.get(name)?;
    Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
}

fn current_minute() -> u64 {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    millis / 60_000
}
