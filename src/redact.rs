//! Masks credential-like values in JSON shown to people (`--check`, the dry-run log):
//! `FIRE_PARAMS` and alarm payloads are meant for ids and URLs, but an InfluxDB token
//! put there must not end up on a terminal or in a log.

use serde_json::{Map, Value};

/// What a masked value is shown as.
pub const MASK: &str = "********";

/// Parts of a key that mark its value as a credential, compared case-insensitively
/// (`influx_token`, `apiKey`, `Authorization`, `db_passwd`). A harmless key that
/// happens to contain one (`monkey`) is masked too: showing too little is the safe side.
const CREDENTIAL_WORDS: &[&str] = &[
    "token",
    "password",
    "passwd",
    "secret",
    "key",
    "auth",
    "credential",
];

/// Replaces the value of every credential-like key with [`MASK`], whatever the value
/// is, in nested objects and in objects inside arrays too.
pub fn redact_credentials(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if is_credential_key(key) {
                    *value = Value::String(MASK.to_owned());
                } else {
                    redact_credentials(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_credentials),
        _ => {}
    }
}

/// A copy of `object` with [`redact_credentials`] applied, ready to show.
pub fn redacted(object: &Map<String, Value>) -> Value {
    let mut value = Value::Object(object.clone());
    redact_credentials(&mut value);
    value
}

fn is_credential_key(key: &str) -> bool {
    let key = key.to_lowercase();
    CREDENTIAL_WORDS.iter().any(|word| key.contains(word))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn redact(mut value: Value) -> Value {
        redact_credentials(&mut value);
        value
    }

    #[test]
    fn credential_like_keys_are_masked_in_any_case_and_any_value() {
        let value = json!({
            "datacenter_id": "dc1",
            "influx_url": "http://influx:8086",
            "influx_token": "t0k3n",
            "apiKey": 42,
            "Authorization": {"scheme": "Basic"},
            "DB_PASSWD": ["a", "b"],
            "client_secret": null,
            "Credentials": true,
            "password": "",
        });
        assert_eq!(
            redact(value),
            json!({
                "datacenter_id": "dc1",
                "influx_url": "http://influx:8086",
                "influx_token": MASK,
                "apiKey": MASK,
                "Authorization": MASK,
                "DB_PASSWD": MASK,
                "client_secret": MASK,
                "Credentials": MASK,
                "password": MASK,
            })
        );
    }

    #[test]
    fn nested_objects_and_objects_in_arrays_are_masked_too() {
        let value = json!({
            "central": {"url": "http://c:8086", "auth": {"user": "u", "pass": "p"}},
            "sinks": [{"name": "a", "token": "x"}, "plain", [{"secretValue": 1}]],
        });
        assert_eq!(
            redact(value),
            json!({
                "central": {"url": "http://c:8086", "auth": MASK},
                "sinks": [{"name": "a", "token": MASK}, "plain", [{"secretValue": MASK}]],
            })
        );
    }

    #[test]
    fn redacted_masks_a_copy() {
        let Value::Object(object) = json!({"id": "dc1", "token": "x"}) else {
            unreachable!()
        };
        assert_eq!(redacted(&object), json!({"id": "dc1", "token": MASK}));
        assert_eq!(object["token"], "x");
    }

    #[test]
    fn values_without_credential_keys_are_unchanged() {
        for value in [
            json!({"datacenter_id": "dc1", "window": "1d", "levels": [1, 2]}),
            json!("a string that says password"),
            json!([{"id": 1}]),
        ] {
            assert_eq!(redact(value.clone()), value);
        }
    }
}
