//! Properties of the configuration parser over arbitrary environments: it never panics,
//! every problem names a variable, lower-case spellings are never read, and `--check`
//! (or an error) never shows a secret. `PROPTEST_CASES` sets the number of cases
//! (256 by default).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::LazyLock;

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::variables::VARIABLES;
use super::{Config, render_check};

/// Files a `_FILE` or TLS variable may name: usable, empty, not UTF-8, too large,
/// endless, a directory, missing.
struct Files {
    _dir: tempfile::TempDir,
    paths: Vec<String>,
}

static FILES: LazyLock<Files> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (name, content) in [
        (
            "auth",
            b"23bc46b1-71f6-4ed5-8c54-816aa4f8c502:key\n".to_vec(),
        ),
        ("empty", Vec::new()),
        ("binary", vec![0xff, 0xfe, b'\n']),
        ("large", vec![b'a'; 70_000]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        paths.push(path.to_str().unwrap().to_owned());
    }
    paths.push(dir.path().to_str().unwrap().to_owned());
    paths.push("/dev/zero".to_owned());
    paths.push("/nonexistent/file".to_owned());
    Files { _dir: dir, paths }
});

/// Every name the reader looks up, and `NAME_FILE` of the secrets.
fn known_names() -> Vec<String> {
    VARIABLES
        .iter()
        .flat_map(|v| {
            let file = v.secret.then(|| format!("{}_FILE", v.name));
            std::iter::once(v.name.to_owned()).chain(file)
        })
        .collect()
}

/// Names: the provider's own (often), in lower or mixed case, unrelated ones, and
/// ones that are not UTF-8.
fn name() -> impl Strategy<Value = OsString> {
    let known = prop::sample::select(known_names());
    prop_oneof![
        6 => known.clone().prop_map(OsString::from),
        1 => known.clone().prop_map(|n| OsString::from(n.to_ascii_lowercase())),
        1 => (known, any::<u64>()).prop_map(|(n, bits)| {
            let mixed: String = n
                .chars()
                .enumerate()
                .map(|(i, c)| if bits >> (i % 64) & 1 == 1 { c.to_ascii_lowercase() } else { c })
                .collect();
            OsString::from(mixed)
        }),
        1 => "[A-Za-z_][A-Za-z0-9_]{0,12}".prop_map(OsString::from),
        1 => prop::collection::vec(1u8..=255, 1..12).prop_map(OsString::from_vec),
    ]
}

/// A JSON value whose object keys are often credential-like.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..4)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "token",
            "Password",
            "api_key",
            "AUTH",
            "secret",
            "passwd",
            "credentials",
            "name",
            "cron",
            "trigger",
            "timezone",
            "payload",
            "type",
            "topic",
            "body",
            "alarm",
            "scheduled_at",
            "datacenter_id",
        ])
        .prop_map(str::to_owned),
        ".{0,8}",
    ]
}

fn number() -> BoxedStrategy<String> {
    prop_oneof![
        (0u64..70_000).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        Just("-1".to_owned()),
        Just(" 5 ".to_owned()),
        Just("340282366920938463463374607431768211456".to_owned()),
    ]
    .boxed()
}

fn url() -> BoxedStrategy<String> {
    (
        prop::sample::select(vec!["mqtt", "mqtts", "tcp", "ssl", "http", ""]),
        prop::option::of("[a-z%:@]{0,8}"),
        prop::sample::select(vec!["mosquitto", "[::1]", "", "a b", "10.0.0.1"]),
        prop::option::of(any::<u32>()),
    )
        .prop_map(|(scheme, user, host, port)| {
            let user = user.map(|u| format!("{u}@")).unwrap_or_default();
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{scheme}://{user}{host}{port}")
        })
        .boxed()
}

/// Cron expressions, mostly of valid fields (so schedules get computed), some not.
fn cron() -> BoxedStrategy<String> {
    let field = |valid: Vec<&'static str>| {
        prop_oneof![
            4 => prop::sample::select(valid),
            1 => prop::sample::select(vec!["60", "25", "0-", "*/0", "L", "W", "5#2", "?", "JAN", "", "x"]),
        ]
    };
    let fields = (
        field(vec!["0", "30", "*/15", "*", "0,30"]),
        field(vec!["0", "30", "*/15", "*", "5-10"]),
        field(vec!["3", "*", "2,14", "*/6", "0-23"]),
        field(vec!["*", "1", "L", "15W", "31", "30"]),
        field(vec!["*", "2", "FEB", "1-6"]),
        field(vec!["*", "MON", "1-5", "5#2", "0", "7"]),
    );
    (any::<bool>(), fields)
        .prop_map(|(seconds, (s, m, h, dom, mon, dow))| match seconds {
            true => format!("{s} {m} {h} {dom} {mon} {dow}"),
            false => format!("{m} {h} {dom} {mon} {dow}"),
        })
        .boxed()
}

fn topics() -> BoxedStrategy<String> {
    let filter = prop::collection::vec(
        prop::sample::select(vec!["dc1", "+", "#", "", "$SYS", "a/b", "x+", "\u{0}"]),
        1..5,
    )
    .prop_map(|levels| levels.join("/"));
    prop::collection::vec(filter, 1..4)
        .prop_map(|f| f.join(","))
        .boxed()
}

/// Names for triggers, namespaces, client ids and users: valid, nearly valid, long.
fn entity_name() -> BoxedStrategy<String> {
    prop_oneof![
        "[A-Za-z0-9_][A-Za-z0-9_@ .&-]{0,20}",
        ".{0,12}",
        (250usize..260).prop_map(|n| "t".repeat(n)),
    ]
    .boxed()
}

fn zone() -> BoxedStrategy<String> {
    prop::sample::select(vec![
        "UTC",
        "Europe/Rome",
        "europe/rome",
        "Mars/Olympus",
        "",
    ])
    .prop_map(str::to_owned)
    .boxed()
}

fn alarms() -> BoxedStrategy<String> {
    let entry = (
        prop::option::of(prop_oneof![Just("default".to_owned()), "[a-z]{0,6}"]),
        prop::option::of(cron()),
        prop::option::of(entity_name()),
        prop::option::of(zone()),
        prop::option::of(json()),
        prop::option::of(key()),
    );
    prop::collection::vec(entry, 0..3)
        .prop_map(|entries| {
            let entries: Vec<Value> = entries
                .into_iter()
                .map(|(name, cron, trigger, timezone, payload, extra)| {
                    let fields = [
                        ("name".to_owned(), name.map(Value::from)),
                        ("cron".to_owned(), cron.map(Value::from)),
                        ("trigger".to_owned(), trigger.map(Value::from)),
                        ("timezone".to_owned(), timezone.map(Value::from)),
                        ("payload".to_owned(), payload),
                        (extra.unwrap_or_default(), Some(Value::Null)),
                    ];
                    let entry = fields
                        .into_iter()
                        .filter_map(|(key, value)| Some((key, value?)))
                        .collect();
                    Value::Object(entry)
                })
                .collect();
            Value::Array(entries).to_string()
        })
        .boxed()
}

/// Text any variable might be given: anything above, or arbitrary.
fn any_text() -> BoxedStrategy<String> {
    prop_oneof![
        number(),
        prop::sample::select(vec!["true", "false", "TRUE", "json", "text", "", " ", "_"])
            .prop_map(str::to_owned),
        url(),
        cron(),
        topics(),
        json().prop_map(|v| v.to_string()),
        alarms(),
        prop::sample::select(FILES.paths.clone()),
        ".{0,24}",
        Just("x".repeat(65_536)),
    ]
    .boxed()
}

/// A value shaped like what `name` takes, valid or nearly so; for other names, any.
fn value_for(name: &str) -> BoxedStrategy<String> {
    let files = || prop::sample::select(FILES.paths.clone()).boxed();
    let typed = match name {
        "MQTT_URL" => url(),
        "MQTT_TOPICS" => topics(),
        "OW_API_HOST" => prop::sample::select(vec![
            "openwhisk.local",
            "http://10.0.0.1:3233",
            "ftp://x",
            "",
        ])
        .prop_map(str::to_owned)
        .boxed(),
        "OW_AUTH" => "[a-z0-9-]{0,8}:?[a-z0-9]{0,8}".boxed(),
        "FIRE_PARAMS" | "ALARM_PAYLOAD" => json().prop_map(|v| v.to_string()).boxed(),
        "ALARM_CRON" => cron(),
        "ALARM_TIMEZONE" => zone(),
        "ALARMS" => alarms(),
        "OW_TRIGGER" | "ALARM_TRIGGER" | "OW_NAMESPACE" | "MQTT_CLIENT_ID" | "MQTT_USERNAME"
        | "MQTT_PASSWORD" => entity_name(),
        "MQTT_CLEAN_SESSION" | "OW_INSECURE" => prop::sample::select(vec!["true", "false", "yes"])
            .prop_map(str::to_owned)
            .boxed(),
        "LOG_FORMAT" => prop::sample::select(vec!["text", "json", "xml"])
            .prop_map(str::to_owned)
            .boxed(),
        name if name.ends_with("_FILE") => files(),
        _ => number(),
    };
    prop_oneof![3 => typed, 1 => any_text()].boxed()
}

/// Values for any name: text, or bytes that are often not UTF-8.
fn value() -> impl Strategy<Value = OsString> {
    prop_oneof![
        8 => any_text().prop_map(OsString::from),
        1 => prop::collection::vec(any::<u8>(), 0..24).prop_map(OsString::from_vec),
    ]
}

/// A pair: mostly one of the provider's variables with a value shaped for it.
fn pair() -> impl Strategy<Value = (OsString, OsString)> {
    let typed = prop::sample::select(known_names()).prop_flat_map(|name| {
        (
            Just(OsString::from(&name)),
            value_for(&name).prop_map(OsString::from),
        )
    });
    prop_oneof![3 => typed, 1 => (name(), value())]
}

/// An environment: sometimes a valid base to reach deeper checks, then any pairs,
/// with repeated names now and then.
fn environment() -> impl Strategy<Value = Vec<(OsString, OsString)>> {
    (
        any::<bool>(),
        prop::collection::vec(pair(), 0..12),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(with_base, pairs, repeat)| {
            let mut env: Vec<(OsString, OsString)> = Vec::new();
            if with_base {
                for (name, value) in [
                    ("MQTT_URL", "mqtt://mosquitto:1883"),
                    ("MQTT_TOPICS", "dc1/sensors/#"),
                    ("OW_API_HOST", "openwhisk.local"),
                    ("OW_AUTH", "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:key"),
                    ("OW_TRIGGER", "addReadingToDbTrigger"),
                ] {
                    env.push((name.into(), value.into()));
                }
            }
            env.extend(pairs);
            if !env.is_empty() {
                let again = env[repeat.index(env.len())].clone();
                env.push(again);
            }
            env
        })
}

/// Whether `variable` names something the operator set: a table variable, a secret's
/// `NAME_FILE`, or an `ALARMS` or `ROUTES` entry or one of its keys.
fn names_a_variable(variable: &str) -> bool {
    if known_names().iter().any(|known| known == variable) {
        return true;
    }
    let Some(entry) = ["ALARMS[", "ROUTES["]
        .iter()
        .find_map(|table| variable.strip_prefix(table))
    else {
        return false;
    };
    let Some((index, rest)) = entry.split_once(']') else {
        return false;
    };
    !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
        && (rest.is_empty() || rest.starts_with('.'))
}

/// Secret values that may appear in no output: marked so that they cannot occur there
/// by chance.
fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{10}".prop_map(|s| format!("Zq{s}"))
}

/// A JSON object with secrets under credential-like keys, at any depth, next to plain
/// values.
fn object_with_secrets() -> impl Strategy<Value = (Value, Vec<String>)> {
    let credential_key = prop::sample::select(vec![
        "influx_token",
        "Password",
        "apiKey",
        "AUTH",
        "client_secret",
        "db_passwd",
        "Credential",
    ]);
    let plain = prop::collection::vec(("[a-z_]{1,8}", "[a-z0-9./:]{0,12}"), 0..3);
    (
        prop::collection::vec((credential_key, secret(), 0usize..4), 1..4),
        plain,
    )
        .prop_map(|(secrets, plain)| {
            let mut object: Map<String, Value> = plain
                .into_iter()
                .filter(|(k, _)| !super::fire::MESSAGE_KEYS.contains(&k.as_str()))
                .filter(|(k, _)| !super::alarms::ALARM_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k, Value::from(v)))
                .collect();
            let mut values = Vec::new();
            for (key, value, depth) in secrets {
                let n = values.len();
                if depth == 0 {
                    object.insert(format!("{key}{n}"), Value::from(value.clone()));
                } else {
                    // Under a plain key at the top, then in objects and arrays.
                    let mut nested = serde_json::json!({ key: value.clone() });
                    for level in 1..depth {
                        nested = match level % 2 {
                            1 => serde_json::json!([1, nested]),
                            _ => serde_json::json!({ "inner": nested }),
                        };
                    }
                    object.insert(format!("group{n}"), nested);
                }
                values.push(value);
            }
            (Value::Object(object), values)
        })
}

proptest! {
    #[test]
    fn the_parser_never_panics_and_every_problem_names_a_variable(env in environment()) {
        for dry_run in [false, true] {
            if let Err(error) = Config::from_env(env.clone(), dry_run) {
                prop_assert!(!error.0.is_empty());
                for problem in &error.0 {
                    prop_assert!(
                        names_a_variable(&problem.variable),
                        "{problem:?} names no variable"
                    );
                    prop_assert!(!problem.message.is_empty(), "{problem:?}");
                }
            }
        }
    }

    #[test]
    fn names_in_another_case_are_never_read(
        env in environment(),
        others in prop::collection::vec((prop::sample::select(known_names()), value()), 1..6),
    ) {
        let with_others: Vec<_> = env
            .iter()
            .cloned()
            .chain(others.into_iter().map(|(n, v)| (OsString::from(n.to_ascii_lowercase()), v)))
            .collect();
        let outcome = |vars| format!("{:?}", Config::from_env(vars, false));
        prop_assert_eq!(outcome(env), outcome(with_others));
    }

    #[test]
    fn check_and_errors_never_show_a_secret(
        key in secret(),
        password in secret(),
        url_password in secret(),
        (params, param_secrets) in object_with_secrets(),
        (payload, payload_secrets) in object_with_secrets(),
        (entry_payload, entry_secrets) in object_with_secrets(),
        noise in prop::collection::vec(pair(), 0..4),
    ) {
        let alarms = serde_json::json!([{
            "name": "hourly", "cron": "0 * * * *", "trigger": "t", "payload": entry_payload,
        }]);
        let mut env: Vec<(OsString, OsString)> = [
            ("MQTT_URL", format!("mqtt://dc1:{url_password}@mosquitto")),
            ("MQTT_TOPICS", "dc1/sensors/#".to_owned()),
            ("MQTT_USERNAME", "dc1".to_owned()),
            ("MQTT_PASSWORD", password.clone()),
            ("OW_API_HOST", "openwhisk.local".to_owned()),
            ("OW_AUTH", format!("23bc46b1-71f6-4ed5-8c54-816aa4f8c502:{key}")),
            ("OW_TRIGGER", "addReadingToDbTrigger".to_owned()),
            ("FIRE_PARAMS", params.to_string()),
            ("ALARM_CRON", "0 3 * * *".to_owned()),
            ("ALARM_TRIGGER", "aggregatesTrigger".to_owned()),
            ("ALARM_PAYLOAD", payload.to_string()),
            ("ALARMS", alarms.to_string()),
        ]
        .into_iter()
        .map(|(n, v)| (OsString::from(n), OsString::from(v)))
        .collect();
        // Other variables change what is shown, or turn it into an error; the secrets
        // stay where they are.
        let secret_names = ["MQTT_URL", "MQTT_PASSWORD", "OW_AUTH"];
        env.extend(noise.into_iter().filter(|(n, _)| {
            n.to_str().is_none_or(|n| !secret_names.iter().any(|s| n.starts_with(s)))
        }));
        let shown = match Config::from_env(env, false) {
            Ok(config) => render_check(&config),
            Err(error) => error.to_string(),
        };
        let secrets = [key, password, url_password]
            .into_iter()
            .chain(param_secrets)
            .chain(payload_secrets)
            .chain(entry_secrets);
        for secret in secrets {
            prop_assert!(!shown.contains(&secret), "{secret} shown:\n{shown}");
        }
    }
}
