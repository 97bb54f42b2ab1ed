//! The static routes (SPEC section 7): `MQTT_TOPICS` + `OW_TRIGGER`, the shorthand for
//! "every filter fires one trigger", and `ROUTES`, a table of filter -> trigger (and
//! namespace). Both may be set; each filter is then subscribed once and a message fires
//! every route whose filter matches it.

use serde_json::Value;

use super::mqtt_limits::{Encoding, fits_a_string};
use super::names::check_entity_name;
use super::raw::RawEnv;
use super::{Problems, entry_string, json_kind};

/// The keys of one `ROUTES` entry; any other key is a typo and reported as such.
const ENTRY_KEYS: &[&str] = &["filter", "trigger", "namespace"];

/// One configured route, fired with `OW_AUTH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    pub filter: String,
    pub trigger: String,
    /// As configured (`OW_NAMESPACE` unless the entry names one); `_` is the key's own.
    pub namespace: String,
}

/// Why `filter` cannot be subscribed, or `None` when it is a valid MQTT topic filter.
pub fn filter_error(filter: &str) -> Option<&'static str> {
    (filter.is_empty() || !rumqttc::valid_filter(filter))
        .then_some("not a valid topic filter (+ must fill a whole level, # must be the last level)")
}

/// The routes of `MQTT_TOPICS` + `OW_TRIGGER`, then those of `ROUTES`. `topics` are the
/// filters of `MQTT_TOPICS` (validated with the broker settings); `feed` says whether
/// routes may also come from the feed API, which makes static ones optional.
pub(super) fn parse(
    raw: &RawEnv,
    topics: &[String],
    namespace: &str,
    feed: bool,
    problems: &mut Problems,
) -> Vec<StaticRoute> {
    let trigger = raw.get("OW_TRIGGER").map(str::trim);
    let table = raw.get("ROUTES");
    if let Some(trigger) = trigger {
        check_entity_name(problems, "OW_TRIGGER", trigger, "trigger");
    }
    let mut routes = Vec::new();
    match (topics.is_empty(), trigger) {
        (false, Some(trigger)) => routes.extend(topics.iter().map(|filter| StaticRoute {
            filter: filter.clone(),
            trigger: trigger.to_owned(),
            namespace: namespace.to_owned(),
        })),
        (false, None) if !problems.reported("OW_TRIGGER") => problems.push(
            "OW_TRIGGER",
            "required with MQTT_TOPICS: the trigger their messages fire, e.g. addReadingToDbTrigger",
        ),
        (true, Some(_)) if !problems.reported("MQTT_TOPICS") => problems.push(
            "MQTT_TOPICS",
            "required with OW_TRIGGER: the topic filters whose messages fire it, e.g. dc1/sensors/#",
        ),
        (true, None) if table.is_none() && !feed && !problems.reported("MQTT_TOPICS") => {
            problems.push(
                "MQTT_TOPICS",
                "required (with OW_TRIGGER) unless ROUTES or STATE_DIR (the feed API) give the routes, e.g. dc1/sensors/#",
            );
        }
        _ => {}
    }
    if let Some(text) = table {
        routes.extend(parse_table(text, namespace, problems));
    }
    routes
}

/// The entries of `ROUTES`, each problem naming its entry (`ROUTES[2].filter`).
fn parse_table(text: &str, namespace: &str, problems: &mut Problems) -> Vec<StaticRoute> {
    let entries = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(entries)) => entries,
        Ok(other) => {
            problems.push(
                "ROUTES",
                &format!(
                    "expected a JSON array of {{filter, trigger, namespace?}}, got {}",
                    json_kind(&other)
                ),
            );
            return Vec::new();
        }
        Err(e) => {
            problems.push("ROUTES", &format!("expected a JSON array: {e}"));
            return Vec::new();
        }
    };
    let mut routes = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let Value::Object(entry) = entry else {
            problems.push(
                &format!("ROUTES[{index}]"),
                &format!(
                    "expected an object {{filter, trigger, namespace?}}, got {}",
                    json_kind(entry)
                ),
            );
            continue;
        };
        for key in entry.keys().filter(|k| !ENTRY_KEYS.contains(&k.as_str())) {
            problems.push(
                &format!("ROUTES[{index}].{key}"),
                "unknown key (a typo?); a route has filter, trigger and namespace",
            );
        }
        let variable = |key: &str| format!("ROUTES[{index}].{key}");
        let filter = entry_string(
            entry,
            "filter",
            &variable("filter"),
            "\"dc1/sensors/#\"",
            problems,
        )
        .filter(|filter| {
            let variable = variable("filter");
            if !fits_a_string(problems, &variable, None, filter, Encoding::Utf8) {
                return false;
            }
            match filter_error(filter) {
                Some(error) => {
                    problems.push(&variable, &format!("{filter:?} is {error}"));
                    false
                }
                None => true,
            }
        });
        let trigger = entry_string(
            entry,
            "trigger",
            &variable("trigger"),
            "\"addReadingToDbTrigger\"",
            problems,
        );
        if let Some(trigger) = &trigger {
            check_entity_name(problems, &variable("trigger"), trigger, "trigger");
        }
        let own_namespace = match entry.get("namespace") {
            None | Some(Value::Null) => Some(namespace.to_owned()),
            Some(_) => entry_string(
                entry,
                "namespace",
                &variable("namespace"),
                "\"guest\"",
                problems,
            ),
        };
        if let Some(namespace) = &own_namespace
            && namespace != "_"
        {
            check_entity_name(problems, &variable("namespace"), namespace, "namespace");
        }
        if let (Some(filter), Some(trigger), Some(namespace)) = (filter, trigger, own_namespace) {
            routes.push(StaticRoute {
                filter,
                trigger,
                namespace,
            });
        }
    }
    routes
}
