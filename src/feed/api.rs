//! The feed API on `HTTP_PORT` (SPEC section 8), what the project's feed action calls:
//!
//! - `PUT    /feed/v1/namespaces/{ns}/triggers/{name}`: CREATE, body `{topic, url?, qos?}`;
//! - `GET`   the same: READ; `PATCH`: UPDATE (any of `topic`, `url`, `qos`, `active`);
//! - `DELETE` the same: DELETE.
//!
//! The caller's OpenWhisk key comes as HTTP Basic auth. With `FEED_LEGACY_API`, also the
//! older feed action's `POST /mqtt` and `DELETE /mqtt/{ns}/{trigger}`. Every refusal is
//! `{"error": "..."}` naming the field.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post, put};
use base64::Engine;
use secrecy::SecretString;
use serde_json::{Map, Value, json};

use super::service::{Caller, Feed, FeedError, Params};
use crate::config::ApiKey;

/// Largest request body read: a registration is a few hundred bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The feed's routes; `legacy` adds the older feed action's.
pub fn router(feed: Arc<Feed>, legacy: bool) -> Router {
    let mut router = Router::new().route(
        "/feed/v1/namespaces/{namespace}/triggers/{trigger}",
        put(create).get(read).patch(update).delete(remove),
    );
    if legacy {
        router = router
            .route("/mqtt", post(legacy_create))
            .route("/mqtt/{namespace}/{trigger}", delete(legacy_delete));
    }
    router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(feed)
}

impl IntoResponse for FeedError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({"error": self.message}))).into_response()
    }
}

type Answer = Result<axum::Json<Value>, FeedError>;

async fn create(
    State(feed): State<Arc<Feed>>,
    Path((namespace, trigger)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let key = caller_key(&headers)?;
    let params = params(body)?;
    let caller = caller(&namespace, &trigger, &key)?;
    feed.create(&caller, params).await.map(axum::Json)
}

async fn read(
    State(feed): State<Arc<Feed>>,
    Path((namespace, trigger)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let key = caller_key(&headers)?;
    let caller = caller(&namespace, &trigger, &key)?;
    feed.read(&caller).await.map(axum::Json)
}

async fn update(
    State(feed): State<Arc<Feed>>,
    Path((namespace, trigger)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let key = caller_key(&headers)?;
    let params = params(body)?;
    let caller = caller(&namespace, &trigger, &key)?;
    feed.update(&caller, params).await.map(axum::Json)
}

async fn remove(
    State(feed): State<Arc<Feed>>,
    Path((namespace, trigger)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let key = caller_key(&headers)?;
    let caller = caller(&namespace, &trigger, &key)?;
    feed.delete(&caller).await.map(axum::Json)
}

/// The older feed action's CREATE: `{"trigger":"/ns/name","url","topic","username":"<uuid>","password":"<key>"}`;
/// it takes nothing but a 200 as success.
async fn legacy_create(
    State(feed): State<Arc<Feed>>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let mut object = object(body)?;
    let mut text = |field: &str| match object.remove(field) {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text),
        Some(_) => Err(FeedError::bad_request(format!(
            "{field} must be a non-empty string"
        ))),
        None => Err(FeedError::bad_request(format!("{field} is required"))),
    };
    let trigger_path = text("trigger")?;
    let topic = text("topic")?;
    let url = text("url")?;
    let key = ApiKey {
        uuid: text("username")?,
        key: SecretString::from(text("password")?),
    };
    let Some((namespace, trigger)) = trigger_path.trim_start_matches('/').split_once('/') else {
        return Err(FeedError::bad_request("trigger must be /namespace/name"));
    };
    let caller = caller(namespace, trigger, &key)?;
    let params = Params {
        topic: Some(topic),
        url: Some(url.into()),
        ..Params::default()
    };
    feed.create(&caller, params).await.map(axum::Json)
}

/// The older feed action's DELETE, without credentials (README says what that allows).
async fn legacy_delete(
    State(feed): State<Arc<Feed>>,
    Path((namespace, trigger)): Path<(String, String)>,
) -> Answer {
    feed.delete_unverified(&namespace, &trigger).await?;
    Ok(axum::Json(json!({})))
}

/// The caller's `uuid:key`, from HTTP Basic auth.
fn caller_key(headers: &HeaderMap) -> Result<ApiKey, FeedError> {
    let unauthorized = |message: &str| FeedError::new(StatusCode::UNAUTHORIZED, message);
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "Authorization is required: the caller's OpenWhisk key as HTTP Basic auth (the feed action sends its authKey)",
        ));
    };
    let decoded = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|bytes| String::from_utf8(bytes).ok());
    match decoded.as_deref().and_then(|d| d.split_once(':')) {
        Some((uuid, key)) if !uuid.is_empty() && !key.is_empty() => Ok(ApiKey {
            uuid: uuid.to_owned(),
            key: SecretString::from(key.to_owned()),
        }),
        _ => Err(unauthorized(
            "Authorization must be HTTP Basic auth with an OpenWhisk key uuid:key",
        )),
    }
}

fn caller<'a>(
    namespace: &'a str,
    trigger: &'a str,
    key: &'a ApiKey,
) -> Result<Caller<'a>, FeedError> {
    if namespace == "_" {
        return Err(FeedError::bad_request(
            "namespace must be named, not _: the feed action resolves _ to the caller's namespace (__OW_NAMESPACE)",
        ));
    }
    for (field, value) in [("namespace", namespace), ("trigger", trigger)] {
        if value.trim().is_empty() {
            return Err(FeedError::bad_request(format!("{field} must not be empty")));
        }
    }
    Ok(Caller {
        namespace,
        trigger,
        key,
    })
}

/// A JSON object body; an empty body is `{}`.
fn object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, FeedError> {
    let body = body.map_err(|rejection| {
        FeedError::new(
            rejection.status(),
            format!(
                "the request body could not be read (at most {MAX_BODY_BYTES} bytes): {rejection}"
            ),
        )
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(FeedError::bad_request("the body must be a JSON object")),
        Err(error) => Err(FeedError::bad_request(format!(
            "the body is not JSON: {error}"
        ))),
    }
}

/// The registration fields of a CREATE or UPDATE body; any other key is refused.
fn params(body: Result<Bytes, BytesRejection>) -> Result<Params, FeedError> {
    let mut params = Params::default();
    for (field, value) in object(body)? {
        match (field.as_str(), value) {
            ("topic", Value::String(topic)) => params.topic = Some(topic.trim().to_owned()),
            ("url", Value::String(url)) => params.url = Some(url.into()),
            ("qos", value) => params.qos = Some(qos(&value)?),
            ("active", Value::Bool(active)) => params.active = Some(active),
            ("topic" | "url", _) => {
                return Err(FeedError::bad_request(format!("{field} must be a string")));
            }
            ("active", _) => {
                return Err(FeedError::bad_request("active must be true or false"));
            }
            (other, _) => {
                return Err(FeedError::bad_request(format!(
                    "unknown field {other:?}: a registration has topic, url, qos and active"
                )));
            }
        }
    }
    Ok(params)
}

/// 0, 1 or 2, as a number or a numeric string (`-p qos 1` arrives as either).
fn qos(value: &Value) -> Result<u8, FeedError> {
    let number = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    match number {
        Some(q @ 0..=2) => Ok(q as u8),
        _ => Err(FeedError::bad_request(format!(
            "qos must be 0, 1 or 2, got {value}"
        ))),
    }
}
