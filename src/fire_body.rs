//! The JSON a message fire carries (SPEC section 3). `FIRE_PARAMS` is serialised once at
//! start and spliced into every body, so the per-message path serialises only the message.
//!
//! Every message also carries a `message_id`: this process's random boot id and the
//! message's receipt number. Each fire of one receipt (retries, parts of a split batch)
//! carries the same id and `received_at`, so an action can recognise the duplicates that
//! at-least-once delivery makes; a message received again after a restart gets a new one.

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
    /// The receipt number (see [`MessageId`]).
    pub seq: u64,
}

/// `<boot id as 16 hex digits>-<receipt number>`, written without allocating.
struct MessageId {
    boot: u64,
    seq: u64,
}

impl Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{:016x}-{}", self.boot, self.seq))
    }
}

#[derive(Serialize)]
struct MessageJson<'a> {
    /// `"message"` for a fire of its own; absent inside a batch.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    topic: &'a str,
    body: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
    qos: u8,
    retain: bool,
    received_at: String,
    message_id: MessageId,
}

impl<'a> MessageJson<'a> {
    fn new(message: &MessageFields<'a>, kind: Option<&'static str>, boot: u64) -> MessageJson<'a> {
        let (body, encoding) = match std::str::from_utf8(message.payload) {
            Ok(text) => (Cow::Borrowed(text), None),
            Err(_) => (
                Cow::Owned(base64::engine::general_purpose::STANDARD.encode(message.payload)),
                Some("base64"),
            ),
        };
        MessageJson {
            kind,
            topic: message.topic,
            body,
            encoding,
            qos: message.qos,
            retain: message.retain,
            received_at: message
                .received_at
                .to_rfc3339_opts(SecondsFormat::Millis, true),
            message_id: MessageId {
                boot,
                seq: message.seq,
            },
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("serialising to a Vec cannot fail");
    }
}

/// Builds message and batch fire bodies with the data center's parameters added.
pub struct MessageBodies {
    /// `FIRE_PARAMS` members as JSON text without braces (`"a":1,"b":2`), or empty.
    params: String,
    /// Random per process, so that message ids never repeat across restarts.
    boot: u64,
}

const BATCH_OPEN: &[u8] = br#"{"type":"batch","messages":["#;

impl MessageBodies {
    pub fn new(params: &Map<String, Value>) -> MessageBodies {
        let object = Value::Object(params.clone()).to_string();
        MessageBodies {
            params: object[1..object.len() - 1].to_owned(),
            boot: rand::random(),
        }
    }

    /// `{"type":"message","topic":…,"body":…,…, <FIRE_PARAMS>}`. A payload that is not
    /// UTF-8 travels base64-encoded with `"encoding":"base64"`.
    pub fn render(&self, message: &MessageFields<'_>) -> Bytes {
        let mut out = Vec::with_capacity(message.payload.len() + self.params.len() + 160);
        MessageJson::new(message, Some("message"), self.boot).write(&mut out);
        self.close_with_params(out)
    }

    /// One message as an element of a batch: the message keys without `type`.
    pub fn batch_entry(&self, message: &MessageFields<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.payload.len() + 160);
        MessageJson::new(message, None, self.boot).write(&mut out);
        out
    }

    /// Size of a batch body holding entries of `entries_len` bytes in total, `count` of them.
    pub fn batch_len(&self, entries_len: usize, count: usize) -> usize {
        let params = if self.params.is_empty() {
            0
        } else {
            self.params.len() + 1
        };
        BATCH_OPEN.len() + entries_len + count.saturating_sub(1) + 2 + params
    }

    /// `{"type":"batch","messages":[…],<FIRE_PARAMS>}`.
    pub fn batch<'e>(&self, entries: impl ExactSizeIterator<Item = &'e [u8]>) -> Bytes {
        let mut out = Vec::with_capacity(64 * 1024);
        out.extend_from_slice(BATCH_OPEN);
        for (i, entry) in entries.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(entry);
        }
        out.extend_from_slice(b"]}");
        self.close_with_params(out)
    }

    /// Replaces the closing brace of `object` with `,<FIRE_PARAMS>}`.
    fn close_with_params(&self, mut object: Vec<u8>) -> Bytes {
        if !self.params.is_empty() {
            object.pop();
            object.push(b',');
            object.extend_from_slice(self.params.as_bytes());
            object.push(b'}');
        }
        Bytes::from(object)
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
            seq: 42,
        }
    }

    /// The `message_id` of receipt 42 in this process.
    fn id_42(bodies: &MessageBodies) -> String {
        format!("{:016x}-42", bodies.boot)
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
                "message_id": id_42(&bodies),
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
    fn batch_holds_the_message_keys_without_type_plus_fire_params() {
        let bodies = MessageBodies::new(json!({"datacenter_id": "dc1"}).as_object().unwrap());
        let entries = [
            bodies.batch_entry(&fields(b"1")),
            bodies.batch_entry(&fields(&[0xff])),
        ];
        let body = bodies.batch(entries.iter().map(Vec::as_slice));
        let entries_len = entries.iter().map(Vec::len).sum();
        assert_eq!(
            body.len(),
            bodies.batch_len(entries_len, 2),
            "batch_len predicts the size"
        );
        let rendered: Value = serde_json::from_slice(&body).unwrap();
        let message = |body: &str| {
            json!({"topic": "dc1/sensors/t1", "body": body, "qos": 1, "retain": false,
                   "received_at": "2026-11-24T03:00:00.123Z", "message_id": id_42(&bodies)})
        };
        let mut binary = message("/w==");
        binary["encoding"] = json!("base64");
        assert_eq!(
            rendered,
            json!({"type": "batch", "messages": [message("1"), binary], "datacenter_id": "dc1"})
        );
    }

    #[test]
    fn batch_len_is_exact_without_params_too() {
        let bodies = MessageBodies::new(&Map::new());
        let entry = bodies.batch_entry(&fields(b"x"));
        assert_eq!(
            bodies.batch(std::iter::once(entry.as_slice())).len(),
            bodies.batch_len(entry.len(), 1)
        );
    }

    #[test]
    fn without_params_the_body_is_plain_message_json() {
        let bodies = MessageBodies::new(&Map::new());
        let rendered: Value = serde_json::from_slice(&bodies.render(&fields(b"21.5"))).unwrap();
        assert_eq!(rendered.as_object().unwrap().len(), 7);
        assert!(rendered.get("encoding").is_none());
    }
}
