//! The JSON a message fire carries (SPEC section 3). `FIRE_PARAMS` is serialised once at
//! start and spliced into every body, so the per-message path serialises only the message.

use std::borrow::Cow;

use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

/// One received message, as the fire describes it.
pub struct MessageFields<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
    pub received_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct MessageJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    topic: &'a str,
    body: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
    qos: u8,
    retain: bool,
    received_at: String,
}

/// Builds message fire bodies with the data center's parameters added.
pub struct MessageBodies {
    /// `FIRE_PARAMS` members as JSON text without braces (`"a":1,"b":2`), or empty.
    params: String,
}

impl MessageBodies {
    pub fn new(params: &Map<String, Value>) -> MessageBodies {
        let object = Value::Object(params.clone()).to_string();
        MessageBodies {
            params: object[1..object.len() - 1].to_owned(),
        }
    }

    /// `{"type":"message","topic":…,"body":…,…, <FIRE_PARAMS>}`. A payload that is not
    /// UTF-8 travels base64-encoded with `"encoding":"base64"`.
    pub fn render(&self, message: &MessageFields<'_>) -> Bytes {
        let (body, encoding) = match std::str::from_utf8(message.payload) {
            Ok(text) => (Cow::Borrowed(text), None),
            Err(_) => (
                Cow::Owned(base64::engine::general_purpose::STANDARD.encode(message.payload)),
                Some("base64"),
            ),
        };
        let json = MessageJson {
            kind: "message",
            topic: message.topic,
            body,
            encoding,
            qos: message.qos,
            retain: message.retain,
            received_at: message
                .received_at
                .to_rfc3339_opts(SecondsFormat::Millis, true),
        };
        let mut out = Vec::with_capacity(
            message.payload.len() + message.topic.len() + self.params.len() + 128,
        );
        serde_json::to_writer(&mut out, &json).expect("serialising to a Vec cannot fail");
        if !self.params.is_empty() {
            out.pop();
            out.push(b',');
            out.extend_from_slice(self.params.as_bytes());
            out.push(b'}');
        }
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(payload: &[u8]) -> MessageFields<'_> {
        MessageFields {
            topic: "dc1/sensors/t1",
            payload,
            qos: 1,
            retain: false,
            received_at: "2026-11-24T03:00:00.123456Z".parse().unwrap(),
        }
    }

    #[test]
    fn body_is_the_payload_as_a_string_plus_fire_params() {
        let params = json!({"datacenter_id": "dc1", "influx": {"url": "http://influx:8086"}});
        let bodies = MessageBodies::new(params.as_object().unwrap());
        let payload = br#"{"temperature":21.5,"humidity":40}"#;
        let rendered: Value = serde_json::from_slice(&bodies.render(&fields(payload))).unwrap();
        assert_eq!(
            rendered,
            json!({
                "type": "message", "topic": "dc1/sensors/t1",
                "body": r#"{"temperature":21.5,"humidity":40}"#,
                "qos": 1, "retain": false, "received_at": "2026-11-24T03:00:00.123Z",
                "datacenter_id": "dc1", "influx": {"url": "http://influx:8086"}
            })
        );
    }

    #[test]
    fn non_utf8_payload_is_base64_with_encoding() {
        let bodies = MessageBodies::new(&Map::new());
        let rendered: Value =
            serde_json::from_slice(&bodies.render(&fields(&[0xff, 0x00, 0x41]))).unwrap();
        assert_eq!(rendered["body"], "/wBB");
        assert_eq!(rendered["encoding"], "base64");
        assert!(rendered.get("encoding").is_some());
    }

    #[test]
    fn without_params_the_body_is_plain_message_json() {
        let bodies = MessageBodies::new(&Map::new());
        let rendered: Value = serde_json::from_slice(&bodies.render(&fields(b"21.5"))).unwrap();
        assert_eq!(rendered.as_object().unwrap().len(), 6);
        assert!(rendered.get("encoding").is_none());
    }
}
