//! The alarms' configuration (`ALARM_*` or `ALARMS`), validated into [`Alarm`]s that the
//! runner (`crate::alarm`) fires.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use super::names::check_entity_name;
use super::raw::RawEnv;
use super::{Problems, entry_string, json_kind};
use crate::redact::redacted;
use crate::schedule::{Schedule, rfc3339};

/// Keys every alarm fire sets itself; a payload may not override them.
pub(super) const ALARM_KEYS: &[&str] = &["type", "alarm", "scheduled_at"];

/// The name of the alarm configured by `ALARM_CRON`, as sent in `"alarm"` and used in
/// logs and metrics.
pub(super) const SINGLE_ALARM_NAME: &str = "default";

/// The keys of one `ALARMS` entry; any other key is a typo and reported as such.
const ENTRY_KEYS: &[&str] = &["name", "cron", "trigger", "timezone", "payload"];

/// One alarm, validated.
#[derive(Debug, Clone)]
pub struct Alarm {
    pub name: String,
    /// The cron expression as configured, for logs and `--check`.
    pub expression: String,
    pub schedule: Schedule,
    pub zone: Tz,
    pub trigger: String,
    /// Parameters of every fire of this alarm.
    pub payload: Map<String, Value>,
}

impl Alarm {
    /// One line for `--check`: what fires when (credential-like payload values masked),
    /// and the next fire time after `now` in the alarm's zone, so an operator sees at
    /// once whether the expression means what they meant.
    pub fn describe(&self, now: DateTime<Utc>) -> String {
        let next = self.schedule.next_after(now).map_or_else(
            || "never".to_owned(),
            |t| rfc3339(t.with_timezone(&self.zone)),
        );
        format!(
            "{}: {:?} in {} fires {} with {}; next fire {next}",
            self.name,
            self.expression,
            self.zone,
            self.trigger,
            redacted(&self.payload),
        )
    }
}

/// The `ALARM_*` variables of the single alarm, as given (unset = `None`).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SingleAlarmVars<'a> {
    pub cron: Option<&'a str>,
    pub trigger: Option<&'a str>,
    pub timezone: Option<&'a str>,
    pub payload: Option<&'a str>,
}

/// What one alarm's settings are called in problems: `ALARM_CRON` or `ALARMS[2].cron`.
struct Variables {
    cron: String,
    trigger: String,
    timezone: String,
    payload: String,
}

impl Variables {
    fn single() -> Variables {
        Variables {
            cron: "ALARM_CRON".to_owned(),
            trigger: "ALARM_TRIGGER".to_owned(),
            timezone: "ALARM_TIMEZONE".to_owned(),
            payload: "ALARM_PAYLOAD".to_owned(),
        }
    }

    fn entry(index: usize) -> Variables {
        let key = |key: &str| format!("ALARMS[{index}].{key}");
        Variables {
            cron: key("cron"),
            trigger: key("trigger"),
            timezone: key("timezone"),
            payload: key("payload"),
        }
    }
}

/// One alarm's settings before validation; a missing required one was reported already.
struct Settings<'a> {
    name: Option<String>,
    cron: Option<&'a str>,
    trigger: Option<&'a str>,
    timezone: Option<&'a str>,
    payload: Option<Value>,
}

/// `ALARM_CATCHUP_SECS` (SPEC section 9): how old a tick missed while the provider was
/// down may be and still fire on start; `None` when off (0, the default). Catch-up needs
/// the last fired tick of each alarm, kept in `STATE_DIR`.
pub(super) fn catchup(raw: &RawEnv, state_dir: bool, problems: &mut Problems) -> Option<Duration> {
    // A week: longer than any outage worth firing a stale tick for, short enough that a
    // wrong value (milliseconds, say) is noticed.
    let secs = problems.parse_in(
        "ALARM_CATCHUP_SECS",
        raw.get("ALARM_CATCHUP_SECS"),
        0,
        0..=604_800,
        "seconds",
    );
    if secs > 0 && !state_dir {
        problems.push(
            "ALARM_CATCHUP_SECS",
            "catch-up keeps each alarm's last fired tick in STATE_DIR: set STATE_DIR (a \
             persistent volume) or ALARM_CATCHUP_SECS=0",
        );
    }
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// Reads the alarms of `ALARM_*` and `ALARMS` (see [`parse_alarms`]).
pub(super) fn parse(raw: &RawEnv, problems: &mut Problems) -> Vec<Alarm> {
    let single = SingleAlarmVars {
        cron: raw.get("ALARM_CRON"),
        trigger: raw.get("ALARM_TRIGGER"),
        timezone: raw.get("ALARM_TIMEZONE"),
        payload: raw.get("ALARM_PAYLOAD"),
    };
    parse_alarms(single, raw.get("ALARMS"), problems)
}

/// Reads the single alarm (`ALARM_CRON`, `ALARM_TRIGGER`, `ALARM_TIMEZONE`,
/// `ALARM_PAYLOAD`, named [`SINGLE_ALARM_NAME`]) and the `ALARMS` array. Both may be
/// set; names must then differ. Every problem is recorded, each naming its variable
/// (`ALARMS[2].cron` for a field of an entry). The alarms returned are those that could
/// be built; they are only used when no problem was recorded.
pub(super) fn parse_alarms(
    single: SingleAlarmVars<'_>,
    alarms_json: Option<&str>,
    problems: &mut Problems,
) -> Vec<Alarm> {
    let mut alarms = Vec::new();
    // Each name with the variable that set it, for the duplicate check.
    let mut names: HashMap<String, String> = HashMap::new();
    if single.cron.is_some() {
        names.insert(SINGLE_ALARM_NAME.to_owned(), "ALARM_CRON".to_owned());
    }
    alarms.extend(parse_single(single, problems));
    let Some(text) = alarms_json else {
        return alarms;
    };
    let entries = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(entries)) => entries,
        Ok(other) => {
            problems.push(
                "ALARMS",
                &format!(
                    "expected a JSON array of {{name, cron, trigger, timezone?, payload?}}, got {}",
                    json_kind(&other)
                ),
            );
            return alarms;
        }
        Err(e) => {
            problems.push("ALARMS", &format!("expected a JSON array: {e}"));
            return alarms;
        }
    };
    for (index, entry) in entries.into_iter().enumerate() {
        let vars = Variables::entry(index);
        let name_variable = format!("ALARMS[{index}].name");
        let Value::Object(mut entry) = entry else {
            problems.push(
                &format!("ALARMS[{index}]"),
                &format!(
                    "expected an object {{name, cron, trigger, timezone?, payload?}}, got {}",
                    json_kind(&entry)
                ),
            );
            continue;
        };
        for key in entry.keys().filter(|k| !ENTRY_KEYS.contains(&k.as_str())) {
            problems.push(
                &format!("ALARMS[{index}].{key}"),
                "unknown key (a typo?); an alarm has name, cron, trigger, timezone and payload",
            );
        }
        let name = entry_string(
            &entry,
            "name",
            &name_variable,
            "\"nightly-aggregates\"",
            problems,
        );
        let cron = entry_string(&entry, "cron", &vars.cron, "\"0 3 * * *\"", problems);
        let trigger = entry_string(
            &entry,
            "trigger",
            &vars.trigger,
            "\"aggregatesTrigger\"",
            problems,
        );
        let timezone = match entry.get("timezone") {
            None | Some(Value::Null) => None,
            Some(_) => entry_string(
                &entry,
                "timezone",
                &vars.timezone,
                "\"Europe/Rome\"",
                problems,
            ),
        };
        let payload = entry.remove("payload").filter(|p| !p.is_null());
        if let Some(name) = &name {
            if let Some(first) = names.get(name) {
                problems.push(
                    &name_variable,
                    &format!("duplicate alarm name {name:?}, already used by {first}"),
                );
            } else {
                names.insert(name.clone(), name_variable.clone());
            }
        }
        let settings = Settings {
            name,
            cron: cron.as_deref(),
            trigger: trigger.as_deref(),
            timezone: timezone.as_deref(),
            payload,
        };
        alarms.extend(validate(settings, &vars, problems));
    }
    alarms
}

/// The single alarm of `ALARM_*`, if `ALARM_CRON` is set and it could be built.
fn parse_single(vars: SingleAlarmVars<'_>, problems: &mut Problems) -> Option<Alarm> {
    let Some(cron) = vars.cron.map(str::trim) else {
        let orphans: Vec<&str> = [
            ("ALARM_TRIGGER", vars.trigger),
            ("ALARM_TIMEZONE", vars.timezone),
            ("ALARM_PAYLOAD", vars.payload),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|_| name))
        .collect();
        if !orphans.is_empty() {
            problems.push(
                "ALARM_CRON",
                &format!(
                    "set ALARM_CRON or remove {}: they only configure the alarm ALARM_CRON schedules",
                    orphans.join(", ")
                ),
            );
        }
        return None;
    };
    let trigger = vars.trigger.map(str::trim);
    if trigger.is_none() {
        problems.push(
            "ALARM_TRIGGER",
            "required with ALARM_CRON: the trigger fired on schedule, e.g. aggregatesTrigger",
        );
    }
    let payload = match vars.payload.map(serde_json::from_str::<Value>) {
        None => None,
        Some(Ok(value)) => Some(value),
        Some(Err(e)) => {
            problems.push("ALARM_PAYLOAD", &format!("expected a JSON object: {e}"));
            None
        }
    };
    let settings = Settings {
        name: Some(SINGLE_ALARM_NAME.to_owned()),
        cron: Some(cron),
        trigger,
        timezone: vars.timezone.map(str::trim),
        payload,
    };
    validate(settings, &Variables::single(), problems)
}

/// Checks one alarm's settings, recording every problem; `None` when a required setting
/// is missing or the schedule is unusable.
fn validate(settings: Settings<'_>, vars: &Variables, problems: &mut Problems) -> Option<Alarm> {
    let zone = match settings.timezone {
        None => Tz::UTC,
        Some(text) => text.parse().unwrap_or_else(|_| {
            problems.push(&vars.timezone, &unknown_zone(text));
            Tz::UTC
        }),
    };
    let schedule = settings.cron.and_then(|cron| {
        Schedule::parse(cron, zone)
            .map_err(|message| problems.push(&vars.cron, &message))
            .ok()
    });
    if let Some(trigger) = settings.trigger {
        check_entity_name(problems, &vars.trigger, trigger, "trigger");
    }
    let payload = match settings.payload {
        None => Map::new(),
        Some(Value::Object(map)) => map,
        Some(other) => {
            problems.push(
                &vars.payload,
                &format!("expected a JSON object, got {}", json_kind(&other)),
            );
            Map::new()
        }
    };
    for key in payload.keys().filter(|k| ALARM_KEYS.contains(&k.as_str())) {
        problems.push(
            &vars.payload,
            &format!("key {key:?} collides with a key every alarm fire sets"),
        );
    }
    Some(Alarm {
        name: settings.name?,
        expression: settings.cron?.to_owned(),
        schedule: schedule?,
        zone,
        trigger: settings.trigger?.to_owned(),
        payload,
    })
}

/// The message for a zone chrono-tz does not know, with the right spelling when only
/// the case was wrong.
fn unknown_zone(text: &str) -> String {
    match chrono_tz::TZ_VARIANTS
        .iter()
        .find(|zone| zone.name().eq_ignore_ascii_case(text))
    {
        Some(zone) => format!(
            "unknown IANA time zone {text:?}; did you mean {}?",
            zone.name()
        ),
        None => format!("unknown IANA time zone {text:?}, e.g. Europe/Rome"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses and returns the alarms with the variable of every problem, in order, and
    /// the problems' `Debug` text for their messages (`Problems` keeps its list private).
    fn parse(single: SingleAlarmVars<'_>, json: Option<&str>) -> (Vec<Alarm>, Vec<String>, String) {
        let mut problems = Problems::default();
        let alarms = parse_alarms(single, json, &mut problems);
        let text = format!("{problems:?}");
        let variables = text
            .split("variable: \"")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap().to_owned())
            .collect();
        (alarms, variables, text)
    }

    fn single<'a>(cron: &'a str, trigger: &'a str) -> SingleAlarmVars<'a> {
        SingleAlarmVars {
            cron: Some(cron),
            trigger: Some(trigger),
            ..SingleAlarmVars::default()
        }
    }

    #[test]
    fn the_single_alarm_reads_every_variable_and_is_named_default() {
        let vars = SingleAlarmVars {
            timezone: Some("Europe/Rome"),
            payload: Some(r#"{"influx_url": "http://influx-dc1:8086"}"#),
            ..single("0 3 * * *", "aggregatesTrigger")
        };
        let (alarms, variables, _) = parse(vars, None);
        assert_eq!(variables, Vec::<String>::new());
        let [alarm] = alarms.as_slice() else {
            panic!("{alarms:?}")
        };
        assert_eq!(alarm.name, "default");
        assert_eq!(alarm.expression, "0 3 * * *");
        assert_eq!(alarm.zone, chrono_tz::Europe::Rome);
        assert_eq!(alarm.trigger, "aggregatesTrigger");
        assert_eq!(alarm.payload["influx_url"], "http://influx-dc1:8086");
    }

    #[test]
    fn no_alarm_variables_mean_no_alarms_and_no_problems() {
        let (alarms, variables, _) = parse(SingleAlarmVars::default(), None);
        assert!(alarms.is_empty());
        assert!(variables.is_empty());
    }

    #[test]
    fn alarm_cron_without_a_trigger_is_a_problem_on_alarm_trigger() {
        let vars = SingleAlarmVars {
            cron: Some("0 3 * * *"),
            ..SingleAlarmVars::default()
        };
        let (alarms, variables, text) = parse(vars, None);
        assert!(alarms.is_empty());
        assert_eq!(variables, ["ALARM_TRIGGER"]);
        assert!(text.contains("required with ALARM_CRON"), "{text}");
    }

    #[test]
    fn alarm_settings_without_alarm_cron_are_a_problem_on_alarm_cron() {
        let vars = SingleAlarmVars {
            trigger: Some("aggregatesTrigger"),
            timezone: Some("Europe/Rome"),
            ..SingleAlarmVars::default()
        };
        let (alarms, variables, text) = parse(vars, None);
        assert!(alarms.is_empty());
        assert_eq!(variables, ["ALARM_CRON"]);
        assert!(
            text.contains("set ALARM_CRON or remove ALARM_TRIGGER, ALARM_TIMEZONE"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_cron_expression_is_a_problem_on_alarm_cron() {
        let (_, variables, text) = parse(single("0 25 * * *", "t"), None);
        assert_eq!(variables, ["ALARM_CRON"]);
        assert!(text.contains(r#"hour field \"25\" is invalid"#), "{text}");
        let (_, variables, _) = parse(single("0 3 * *", "t"), None);
        assert_eq!(variables, ["ALARM_CRON"]);
    }

    #[test]
    fn an_unknown_time_zone_is_a_problem_on_alarm_timezone() {
        let vars = SingleAlarmVars {
            timezone: Some("Mars/Olympus"),
            ..single("0 3 * * *", "t")
        };
        let (_, variables, text) = parse(vars, None);
        assert_eq!(variables, ["ALARM_TIMEZONE"]);
        assert!(
            text.contains(r#"unknown IANA time zone \"Mars/Olympus\", e.g. Europe/Rome"#),
            "{text}"
        );
        let vars = SingleAlarmVars {
            timezone: Some("europe/rome"),
            ..single("0 3 * * *", "t")
        };
        let (_, _, text) = parse(vars, None);
        assert!(text.contains("did you mean Europe/Rome?"), "{text}");
    }

    #[test]
    fn a_payload_must_be_a_json_object_without_the_alarm_keys() {
        for (payload, expected) in [
            ("[1, 2]", "expected a JSON object, got an array"),
            ("{not json", "expected a JSON object: "),
            (r#"{"type": "x"}"#, r#"key \"type\" collides"#),
            (r#"{"alarm": "x"}"#, r#"key \"alarm\" collides"#),
            (
                r#"{"scheduled_at": "x"}"#,
                r#"key \"scheduled_at\" collides"#,
            ),
        ] {
            let vars = SingleAlarmVars {
                payload: Some(payload),
                ..single("0 3 * * *", "t")
            };
            let (_, variables, text) = parse(vars, None);
            assert_eq!(variables, ["ALARM_PAYLOAD"], "{payload}");
            assert!(text.contains(expected), "{payload}: {text}");
        }
    }

    #[test]
    fn a_trigger_must_be_a_valid_openwhisk_name() {
        let (_, variables, _) = parse(single("0 3 * * *", "aggregates/trigger"), None);
        assert_eq!(variables, ["ALARM_TRIGGER"]);
    }

    #[test]
    fn every_problem_of_an_alarm_is_reported_at_once() {
        let vars = SingleAlarmVars {
            cron: Some("61 * * * *"),
            trigger: None,
            timezone: Some("Nowhere"),
            payload: Some("42"),
        };
        let (_, variables, _) = parse(vars, None);
        assert_eq!(
            variables,
            [
                "ALARM_TRIGGER",
                "ALARM_TIMEZONE",
                "ALARM_CRON",
                "ALARM_PAYLOAD"
            ]
        );
    }

    #[test]
    fn alarms_reads_several_alarms_with_defaults() {
        let json = r#"[
            {"name": "nightly", "cron": "0 3 * * *", "trigger": "aggregatesTrigger",
             "timezone": "Europe/Rome", "payload": {"window": "1d"}},
            {"name": "hourly", "cron": "0 * * * *", "trigger": "hourlyTrigger", "payload": null}
        ]"#;
        let (alarms, variables, _) = parse(SingleAlarmVars::default(), Some(json));
        assert!(variables.is_empty(), "{variables:?}");
        let names: Vec<_> = alarms.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["nightly", "hourly"]);
        assert_eq!(alarms[0].payload["window"], "1d");
        assert_eq!(alarms[1].zone, Tz::UTC);
        assert!(alarms[1].payload.is_empty());
    }

    #[test]
    fn alarms_problems_name_the_entry_and_its_key() {
        let json = r#"[
            {"name": "ok", "cron": "0 3 * * *", "trigger": "t"},
            {"name": "bad", "cron": "61 * * * *", "trigger": "t", "timezone": "Nowhere"},
            {"name": "typo", "crn": "0 3 * * *", "trigger": "t"},
            {"cron": 5},
            "0 3 * * *"
        ]"#;
        let (alarms, variables, text) = parse(SingleAlarmVars::default(), Some(json));
        assert_eq!(alarms.len(), 1);
        assert_eq!(
            variables,
            [
                "ALARMS[1].timezone",
                "ALARMS[1].cron",
                "ALARMS[2].crn",
                "ALARMS[2].cron",
                "ALARMS[3].name",
                "ALARMS[3].cron",
                "ALARMS[3].trigger",
                "ALARMS[4]",
            ]
        );
        assert!(text.contains("unknown key (a typo?)"), "{text}");
        assert!(text.contains("expected a string, got a number"), "{text}");
        assert!(text.contains("expected an object"), "{text}");
    }

    #[test]
    fn alarm_names_must_be_unique() {
        let json = r#"[
            {"name": "x", "cron": "0 3 * * *", "trigger": "t"},
            {"name": "x", "cron": "0 4 * * *", "trigger": "t"},
            {"name": "default", "cron": "0 5 * * *", "trigger": "t"}
        ]"#;
        let (_, variables, text) = parse(single("0 3 * * *", "t"), Some(json));
        assert_eq!(variables, ["ALARMS[1].name", "ALARMS[2].name"]);
        assert!(
            text.contains(r#"duplicate alarm name \"x\", already used by ALARMS[0].name"#),
            "{text}"
        );
        assert!(text.contains("already used by ALARM_CRON"), "{text}");
    }

    #[test]
    fn alarms_must_be_a_json_array() {
        for json in [r#"{"name": "x"}"#, "[", ""] {
            let (_, variables, _) = parse(SingleAlarmVars::default(), Some(json));
            assert_eq!(variables, ["ALARMS"], "{json}");
        }
    }

    #[test]
    fn describe_shows_the_next_fire_in_the_alarms_zone() {
        let vars = SingleAlarmVars {
            timezone: Some("Europe/Rome"),
            ..single("30 2 * * *", "aggregatesTrigger")
        };
        let (alarms, _, _) = parse(vars, None);
        let now = "2026-03-28T12:00:00Z".parse().unwrap();
        assert_eq!(
            alarms[0].describe(now),
            "default: \"30 2 * * *\" in Europe/Rome fires aggregatesTrigger with {}; \
             next fire 2026-03-29T03:00:00+02:00"
        );
    }
}
