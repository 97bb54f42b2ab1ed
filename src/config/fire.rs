//! The fire section: the data center's parameters (plain and secret), concurrency,
//! batching and the payload limit.

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde_json::{Map, Value};

use super::files::read_bounded;
use super::raw::RawEnv;
use super::{Problems, json_kind, json_object};

/// Keys every message fire sets itself; `FIRE_PARAMS` may not override them.
pub(crate) const MESSAGE_KEYS: &[&str] = &[
    "type",
    "topic",
    "body",
    "encoding",
    "qos",
    "retain",
    "received_at",
    "message_id",
    "messages",
];

#[derive(Debug)]
pub struct FireConfig {
    /// Added to every message fire: the data center's own parameters.
    pub params: Map<String, Value>,
    /// `FIRE_SECRET_PARAMS_FILE`: added to every message fire too, never shown.
    pub secret_params: SecretParams,
    pub concurrency: usize,
    pub timeout: Duration,
    /// Above 1, up to this many messages travel in one fire.
    pub batch_max: usize,
    /// How long a partial batch waits for more messages.
    pub batch_wait: Duration,
    pub max_payload_bytes: usize,
}

/// Parameters from a mounted Secret (SPEC section 10), such as a data center's own
/// InfluxDB token. `Debug` shows only the keys, so no log of the configuration can hold
/// a value.
#[derive(Default)]
pub struct SecretParams(Map<String, Value>);

impl SecretParams {
    /// The keys, which are not secret: `--check` and the dry-run log show them masked.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.keys()).finish()
    }
}

impl FireConfig {
    /// What every message fire carries besides the message: `FIRE_PARAMS` and the
    /// secret parameters, which share no key.
    pub fn message_params(&self) -> Map<String, Value> {
        let mut params = self.params.clone();
        params.extend(self.secret_params.0.clone());
        params
    }
}

/// A parameters file holds a few keys and tokens; anything much larger is a wrong file.
const SECRET_PARAMS_MAX_BYTES: u64 = 65_536;

/// Reads `FIRE_SECRET_PARAMS_FILE`. Problems say what is wrong with the file, never
/// what it holds: not even serde_json's messages, which can quote the text.
fn secret_params(
    raw: &RawEnv,
    params: &Map<String, Value>,
    problems: &mut Problems,
) -> SecretParams {
    const VARIABLE: &str = "FIRE_SECRET_PARAMS_FILE";
    let Some(path) = raw.get(VARIABLE).map(str::trim) else {
        return SecretParams::default();
    };
    let read =
        read_bounded(path, SECRET_PARAMS_MAX_BYTES).and_then(
            |bytes| match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(map)) => Ok(map),
                Ok(other) => Err(format!(
                    "{path} holds {}, expected a JSON object (values not shown)",
                    json_kind(&other)
                )),
                Err(e) => Err(format!(
                    "{path} is not JSON: error at line {} column {} (values not shown)",
                    e.line(),
                    e.column()
                )),
            },
        );
    let map = match read {
        Ok(map) => map,
        Err(message) => {
            problems.push(VARIABLE, &message);
            return SecretParams::default();
        }
    };
    let mut clean = true;
    for key in map.keys() {
        let clash = if MESSAGE_KEYS.contains(&key.as_str()) {
            "a key every message fire sets"
        } else if params.contains_key(key) {
            "a key of FIRE_PARAMS; keep it in one of them"
        } else {
            continue;
        };
        problems.push(VARIABLE, &format!("key {key:?} collides with {clash}"));
        clean = false;
    }
    match clean {
        true => SecretParams(map),
        false => SecretParams::default(),
    }
}

pub(super) fn parse(raw: &RawEnv, problems: &mut Problems) -> FireConfig {
    let params = json_object(problems, "FIRE_PARAMS", raw.get("FIRE_PARAMS"));
    for key in params.keys().filter(|k| MESSAGE_KEYS.contains(&k.as_str())) {
        problems.push(
            "FIRE_PARAMS",
            &format!("key {key:?} collides with a key every message fire sets"),
        );
    }
    let secret_params = secret_params(raw, &params, problems);
    let concurrency = problems.parse_in(
        "FIRE_CONCURRENCY",
        raw.get("FIRE_CONCURRENCY"),
        64,
        1..=10_000,
        "a number",
    );
    let timeout = problems.parse_in(
        "FIRE_TIMEOUT_SECS",
        raw.get("FIRE_TIMEOUT_SECS"),
        30,
        1..=3600,
        "seconds",
    );
    let batch_max = problems.parse_in(
        "FIRE_BATCH_MAX",
        raw.get("FIRE_BATCH_MAX"),
        1,
        1..=10_000,
        "a number",
    );
    // Longer than a minute, a partial batch would hold its messages' acks for longer
    // than OpenWhisk's rate window, which batching is there to respect.
    let batch_wait_ms = problems.parse_in(
        "FIRE_BATCH_WAIT_MS",
        raw.get("FIRE_BATCH_WAIT_MS"),
        100,
        0..=60_000,
        "milliseconds",
    );
    let max_payload_bytes = problems.parse_in(
        "FIRE_MAX_PAYLOAD_BYTES",
        raw.get("FIRE_MAX_PAYLOAD_BYTES"),
        1_048_576,
        MAX_PAYLOAD_BYTES,
        "bytes",
    );
    let fire = FireConfig {
        params,
        secret_params,
        concurrency,
        timeout: Duration::from_secs(timeout),
        batch_max,
        batch_wait: Duration::from_millis(batch_wait_ms),
        max_payload_bytes,
    };
    check_room_for_a_reading(&fire.message_params(), max_payload_bytes, problems);
    fire
}

/// `FIRE_MAX_PAYLOAD_BYTES`: room for a small reading at least, and at most the 50 MiB
/// that OpenWhisk's controller reads of a request body at all (its configurable payload
/// limit, 1 MiB by default, sits below that).
const MAX_PAYLOAD_BYTES: RangeInclusive<usize> = 1024..=52_428_800;

/// The most a message fire's own keys take (`type`, `topic`, `body`, `encoding`, `qos`,
/// `retain`, `received_at`, `message_id`, with empty topic and body): 176 bytes.
const MESSAGE_KEYS_BYTES: usize = 176;

/// A fire carries `FIRE_PARAMS` and the message keys besides the reading, so the limit
/// must leave room for at least a small one, or every reading would be rejected.
fn check_room_for_a_reading(
    params: &Map<String, Value>,
    max_payload_bytes: usize,
    problems: &mut Problems,
) {
    let params_bytes = Value::Object(params.clone()).to_string().len();
    let room = max_payload_bytes.saturating_sub(params_bytes + MESSAGE_KEYS_BYTES);
    if room < *MAX_PAYLOAD_BYTES.start() {
        problems.push(
            "FIRE_MAX_PAYLOAD_BYTES",
            &format!(
                "{max_payload_bytes} leaves {room} bytes for a reading's topic and body once \
                 FIRE_PARAMS and the secret parameters ({params_bytes} bytes as JSON) and the message keys \
                 ({MESSAGE_KEYS_BYTES} bytes) are in; at least {} are needed",
                MAX_PAYLOAD_BYTES.start()
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::fire_body::{MessageBodies, MessageFields};

    #[test]
    fn message_keys_bytes_is_what_the_largest_empty_message_fire_takes() {
        let payload = [0xff]; // not UTF-8: the fire also carries "encoding"
        let fire = MessageBodies::new(&Map::new()).render(&MessageFields {
            topic: "",
            payload: &payload,
            qos: 2,
            retain: false,
            received_at: Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap(),
            boot: u64::MAX,
            seq: u64::MAX,
        });
        let body = "/w==".len();
        assert_eq!(fire.len() - body, MESSAGE_KEYS_BYTES, "{fire:?}");
    }
}
