//! The fire section: the message trigger, the data center's parameters, concurrency,
//! batching and the payload limit.

use std::time::Duration;

use serde_json::{Map, Value};

use super::names::check_entity_name;
use super::raw::RawEnv;
use super::{Problems, json_object};

/// Keys every message fire sets itself; `FIRE_PARAMS` may not override them.
pub const MESSAGE_KEYS: &[&str] = &[
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
    pub trigger: String,
    /// Added to every message fire: the data center's own parameters.
    pub params: Map<String, Value>,
    pub concurrency: usize,
    pub timeout: Duration,
    /// Above 1, up to this many messages travel in one fire.
    pub batch_max: usize,
    /// How long a partial batch waits for more messages.
    pub batch_wait: Duration,
    pub max_payload_bytes: usize,
}

pub(super) fn parse(raw: &RawEnv, problems: &mut Problems) -> FireConfig {
    let trigger = problems
        .required("OW_TRIGGER", raw.get("OW_TRIGGER"), "addReadingToDbTrigger")
        .unwrap_or_default()
        .to_owned();
    if !trigger.is_empty() {
        check_entity_name(problems, "OW_TRIGGER", &trigger, "trigger");
    }
    let params = json_object(problems, "FIRE_PARAMS", raw.get("FIRE_PARAMS"));
    for key in params.keys().filter(|k| MESSAGE_KEYS.contains(&k.as_str())) {
        problems.push(
            "FIRE_PARAMS",
            &format!("key {key:?} collides with a key every message fire sets"),
        );
    }
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
    let batch_wait_ms: u64 = problems.parse(
        "FIRE_BATCH_WAIT_MS",
        raw.get("FIRE_BATCH_WAIT_MS"),
        100,
        "milliseconds",
    );
    FireConfig {
        trigger,
        params,
        concurrency,
        timeout: Duration::from_secs(timeout),
        batch_max,
        batch_wait: Duration::from_millis(batch_wait_ms),
        max_payload_bytes: problems.parse(
            "FIRE_MAX_PAYLOAD_BYTES",
            raw.get("FIRE_MAX_PAYLOAD_BYTES"),
            1_048_576,
            "a number of bytes",
        ),
    }
}
