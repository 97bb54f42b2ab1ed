//! The JSON a message fire carries (SPEC section 3). `FIRE_PARAMS` is serialised once at
//! start and spliced into every body, so the per-message path serialises only the message.
//!
//! Every message also carries a `message_id`: the random boot id of the process that
//! received it and the message's receipt number. Each fire of one receipt (retries, parts
//! of a split batch, fires from the spool after a restart) carries the same id and
//! `received_at`, so an action can recognise the duplicates that at-least-once delivery
//! makes; a message the broker delivers again after a restart gets a new one.

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
    /// The boot id of the process that received it and its receipt number there (see
    /// [`MessageId`]).
    pub boot: u64,
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
    fn new(message: &MessageFields<'a>, kind: Option<&'static str>) -> MessageJson<'a> {
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
                boot: message.boot,
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

    /// This process's boot id, for the messages it receives.
    pub fn boot(&self) -> u64 {
        self.boot
    }

    /// `{"type":"message","topic":…,"body":…,…, <FIRE_PARAMS>}`. A payload that is not
    /// UTF-8 travels base64-encoded with `"encoding":"base64"`.
    pub fn render(&self, message: &MessageFields<'_>) -> Bytes {
        let mut out = Vec::with_capacity(message.payload.len() + self.params.len() + 160);
        MessageJson::new(message, Some("message")).write(&mut out);
        self.close_with_params(out)
    }

    /// One message as an element of a batch: the message keys without `type`.
    pub fn batch_entry(&self, message: &MessageFields<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.payload.len() + 160);
        MessageJson::new(message, None).write(&mut out);
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
    pub fn batch<'e>(&self, entries: impl Iterator<Item = &'e [u8]>) -> Bytes {
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

    const BOOT: u64 = 0x0123_4567_89ab_cdef;

    fn fields(payload: &[u8]) -> MessageFields<'_> {
        MessageFields {
            topic: "dc1/sensors/t1",
            payload,
            qos: 1,
            retain: false,
            received_at: "2026-11-24T03:00:00.123456Z".parse().unwrap(),
            boot: BOOT,
            seq: 42,
        }
    }

    /// The `message_id` of receipt 42 in process `BOOT`.
    fn id_42() -> String {
        format!("{BOOT:016x}-42")
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
                "message_id": id_42(),
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
                   "received_at": "2026-11-24T03:00:00.123Z", "message_id": id_42()})
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

/// Properties of the bodies over arbitrary topics, payloads (UTF-8 or not) and
/// `FIRE_PARAMS`; the strategies also serve the batcher's properties.
#[cfg(test)]
pub(crate) mod properties {
    use chrono::{SubsecRound, TimeZone};
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::config::MESSAGE_KEYS;

    /// A message to render, owned.
    #[derive(Debug, Clone)]
    pub struct Reading {
        topic: String,
        payload: Vec<u8>,
        qos: u8,
        retain: bool,
        received_at: DateTime<Utc>,
        boot: u64,
        seq: u64,
    }

    impl Reading {
        pub fn fields(&self) -> MessageFields<'_> {
            MessageFields {
                topic: &self.topic,
                payload: &self.payload,
                qos: self.qos,
                retain: self.retain,
                received_at: self.received_at,
                boot: self.boot,
                seq: self.seq,
            }
        }
    }

    /// Any text: control characters, quotes, backslashes, NUL and non-ASCII included.
    fn text(max: usize) -> impl Strategy<Value = String> {
        vec(any::<char>(), 0..max).prop_map(String::from_iter)
    }

    /// Payloads that are UTF-8 (any text) and payloads that are mostly not (any bytes).
    fn payload() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            text(200).prop_map(String::into_bytes),
            vec(any::<u8>(), 0..300)
        ]
    }

    pub fn reading() -> impl Strategy<Value = Reading> {
        // From 1970 to 2100, to the nanosecond.
        let instant = (0..4_102_444_800i64, 0..1_000_000_000u32)
            .prop_map(|(secs, nanos)| Utc.timestamp_opt(secs, nanos).unwrap());
        (
            text(40),
            payload(),
            0..=2u8,
            any::<bool>(),
            instant,
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(
                |(topic, payload, qos, retain, received_at, boot, seq)| Reading {
                    topic,
                    payload,
                    qos,
                    retain,
                    received_at,
                    boot,
                    seq,
                },
            )
    }

    /// Any JSON value whose numbers survive a round trip through text exactly.
    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (any::<i32>(), 0..8u8)
                .prop_map(|(n, eighths)| Value::from(f64::from(n) + f64::from(eighths) / 8.0)),
            text(20).prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::from),
                vec((text(8), inner), 0..4)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    /// `FIRE_PARAMS` as the configuration lets it be: no key a message fire sets itself.
    pub fn fire_params() -> impl Strategy<Value = Map<String, Value>> {
        let key = text(12).prop_filter("a message key", |k| !MESSAGE_KEYS.contains(&k.as_str()));
        vec((key, json()), 0..5).prop_map(|members| members.into_iter().collect())
    }

    /// `message` is `reading` as a fire describes it, with its payload intact.
    fn describes(message: &Map<String, Value>, reading: &Reading) -> Result<(), TestCaseError> {
        prop_assert_eq!(&message["topic"], &reading.topic);
        let body = message["body"].as_str().expect("body is a string");
        match std::str::from_utf8(&reading.payload) {
            Ok(text) => {
                prop_assert_eq!(body, text);
                prop_assert!(!message.contains_key("encoding"));
            }
            Err(_) => {
                prop_assert_eq!(&message["encoding"], "base64");
                let decoded = base64::engine::general_purpose::STANDARD.decode(body);
                prop_assert_eq!(decoded.as_deref(), Ok(&reading.payload[..]));
            }
        }
        prop_assert_eq!(&message["qos"], reading.qos);
        prop_assert_eq!(&message["retain"], reading.retain);
        let received_at = message["received_at"].as_str().expect("a string");
        prop_assert!(received_at.ends_with('Z'), "{}", received_at);
        let parsed = DateTime::parse_from_rfc3339(received_at).map(|t| t.to_utc());
        prop_assert_eq!(parsed, Ok(reading.received_at.trunc_subsecs(3)));
        let id = format!("{:016x}-{}", reading.boot, reading.seq);
        prop_assert_eq!(&message["message_id"], &id);
        Ok(())
    }

    /// Every `FIRE_PARAMS` member is in `body` as it was given.
    fn carries(
        body: &Map<String, Value>,
        params: &Map<String, Value>,
    ) -> Result<(), TestCaseError> {
        for (key, value) in params {
            prop_assert_eq!(body.get(key), Some(value), "{}", key);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn a_message_body_is_json_that_round_trips_its_payload(
            reading in reading(),
            params in fire_params(),
        ) {
            let bodies = MessageBodies::new(&params);
            let rendered = bodies.render(&reading.fields());
            let body: Map<String, Value> = serde_json::from_slice(&rendered).expect("JSON");
            prop_assert_eq!(&body["type"], "message");
            describes(&body, &reading)?;
            carries(&body, &params)?;
            let own = 7 + usize::from(body.contains_key("encoding"));
            prop_assert_eq!(body.len(), own + params.len(), "nothing else");
        }

        #[test]
        fn a_batch_body_is_json_that_round_trips_every_payload_and_batch_len_is_its_size(
            readings in vec(reading(), 1..8),
            params in fire_params(),
        ) {
            let bodies = MessageBodies::new(&params);
            let entries: Vec<_> = readings.iter().map(|r| bodies.batch_entry(&r.fields())).collect();
            let rendered = bodies.batch(entries.iter().map(Vec::as_slice));
            let entries_len = entries.iter().map(Vec::len).sum();
            prop_assert_eq!(rendered.len(), bodies.batch_len(entries_len, entries.len()));
            let body: Map<String, Value> = serde_json::from_slice(&rendered).expect("JSON");
            prop_assert_eq!(&body["type"], "batch");
            let messages = body["messages"].as_array().expect("an array");
            prop_assert_eq!(messages.len(), readings.len());
            for (message, reading) in messages.iter().zip(&readings) {
                let message = message.as_object().expect("an object");
                prop_assert!(!message.contains_key("type"));
                describes(message, reading)?;
            }
            carries(&body, &params)?;
            prop_assert_eq!(body.len(), 2 + params.len(), "nothing else");
        }
    }
}
