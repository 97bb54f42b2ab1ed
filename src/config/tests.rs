use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
}

const MINIMAL: &[(&str, &str)] = &[
    ("MQTT_URL", "mqtt://mosquitto:1883"),
    ("MQTT_TOPICS", "dc1/sensors/#, dc1/+/status"),
    ("OW_API_HOST", "openwhisk.local:31001"),
    ("OW_AUTH", "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:secretkey"),
    ("OW_TRIGGER", "addReadingToDbTrigger"),
];

fn with(extra: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    let mut all = env(MINIMAL);
    for (k, v) in extra {
        all.retain(|(name, _)| name != k);
        all.push((k.into(), v.into()));
    }
    all
}

fn problems(vars: Vec<(OsString, OsString)>) -> Vec<Problem> {
    Config::from_env(vars, false).unwrap_err().0
}

#[test]
fn minimal_configuration_gets_the_spec_defaults() {
    let config = Config::from_env(env(MINIMAL), false).unwrap();
    assert_eq!(config.mqtt.topics, ["dc1/sensors/#", "dc1/+/status"]);
    assert_eq!(config.mqtt.qos, 1);
    assert!(!config.mqtt.clean_session);
    assert!(config.mqtt.client_id.starts_with("mqtt-whisk-provider-"));
    assert_eq!(config.mqtt.keep_alive, Duration::from_secs(30));
    let ow = config.openwhisk.unwrap();
    assert_eq!(ow.api_host.as_str(), "https://openwhisk.local:31001/");
    assert_eq!(ow.namespace, "_");
    assert_eq!(config.fire.concurrency, 64);
    assert_eq!(config.fire.timeout, Duration::from_secs(30));
    assert_eq!(config.fire.max_payload_bytes, 1_048_576);
    assert_eq!(config.http_port, 3000);
    assert_eq!(config.log_format, LogFormat::Text);
}

#[test]
fn every_problem_is_reported_at_once_each_naming_its_variable() {
    let found = problems(env(&[
        ("MQTT_QOS", "3"),
        ("FIRE_PARAMS", "[1,2]"),
        ("FIRE_CONCURRENCY", "many"),
        ("LOG_FORMAT", "xml"),
    ]));
    let variables: Vec<&str> = found.iter().map(|p| p.variable.as_str()).collect();
    for expected in [
        "MQTT_URL",
        "MQTT_TOPICS",
        "MQTT_QOS",
        "OW_API_HOST",
        "OW_AUTH",
        "FIRE_PARAMS",
        "FIRE_CONCURRENCY",
        "LOG_FORMAT",
    ] {
        assert!(variables.contains(&expected), "{expected} not in {found:?}");
    }
    let params = found.iter().find(|p| p.variable == "FIRE_PARAMS").unwrap();
    assert_eq!(params.message, "expected a JSON object, got an array");
}

#[test]
fn fire_params_may_not_override_message_keys() {
    let found = problems(with(&[(
        "FIRE_PARAMS",
        r#"{"influx_url":"http://influx:8086","topic":"x"}"#,
    )]));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].variable, "FIRE_PARAMS");
    assert!(found[0].message.contains("\"topic\""));
}

#[test]
fn invalid_topic_filters_are_named() {
    let found = problems(with(&[("MQTT_TOPICS", "ok/#,bad/#/x,a+/b,")]));
    let messages: Vec<&str> = found.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(found.len(), 3, "{messages:?}");
    assert!(messages[0].contains("bad/#/x"));
    assert!(messages[1].contains("a+/b"));
}

#[test]
fn secrets_come_from_files_and_never_appear_in_errors_or_check() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("auth");
    std::fs::write(&key_file, "uuid:s3cr3t-from-file\n").unwrap();
    let vars = with(&[
        ("OW_AUTH", ""),
        ("OW_AUTH_FILE", key_file.to_str().unwrap()),
        ("MQTT_URL", "mqtt://dc1:pw-in-url@mosquitto"),
    ]);
    let config = Config::from_env(vars, false).unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&config.openwhisk.as_ref().unwrap().auth.key),
        "s3cr3t-from-file"
    );
    let check = render_check(&config);
    assert!(
        !check.contains("s3cr3t") && !check.contains("pw-in-url"),
        "{check}"
    );
    assert!(check.contains("MQTT_USERNAME") && check.contains("dc1"));

    let bad = problems(with(&[("OW_AUTH", "no-colon-s3cr3t")]));
    assert!(!format!("{bad:?}").contains("s3cr3t"));
}

#[test]
fn secret_and_its_file_together_are_a_problem() {
    let found = problems(with(&[
        ("MQTT_PASSWORD", "a"),
        ("MQTT_PASSWORD_FILE", "/nonexistent"),
    ]));
    assert_eq!(variables_of(&found), ["MQTT_PASSWORD"]);
    let found = problems(with(&[("OW_AUTH_FILE", "/nonexistent")]));
    assert_eq!(variables_of(&found), ["OW_AUTH"]);
    let found = problems(with(&[
        ("OW_AUTH", ""),
        ("OW_AUTH_FILE", "/nonexistent/auth"),
    ]));
    assert_eq!(variables_of(&found), ["OW_AUTH_FILE"]);
    assert!(found[0].message.contains("/nonexistent/auth"));
}

#[test]
fn dry_run_needs_no_openwhisk() {
    let vars: Vec<_> = env(&MINIMAL[..2])
        .into_iter()
        .chain(env(&[("OW_TRIGGER", "t")]))
        .collect();
    let config = Config::from_env(vars, true).unwrap();
    assert!(config.openwhisk.is_none());
}

#[test]
fn non_utf8_values_are_reported_not_panicked_on() {
    use std::os::unix::ffi::OsStringExt;
    let mut vars = env(MINIMAL);
    vars.push((
        "FIRE_PARAMS".into(),
        OsString::from_vec(vec![b'{', 0xff, b'}']),
    ));
    let found = problems(vars);
    assert_eq!(
        found,
        [Problem {
            variable: "FIRE_PARAMS".into(),
            message: "is not valid UTF-8".into()
        }]
    );
}

#[test]
fn blank_values_fall_back_to_defaults() {
    let config = Config::from_env(with(&[("MQTT_QOS", " "), ("FIRE_PARAMS", "")]), false).unwrap();
    assert_eq!(config.mqtt.qos, 1);
    assert!(config.fire.params.is_empty());
}

#[test]
fn the_table_and_everything_derived_from_it_agree() {
    use super::variables::VARIABLES;
    let table: std::collections::BTreeSet<&str> = VARIABLES.iter().map(|v| v.name).collect();
    assert_eq!(table.len(), VARIABLES.len(), "a name is in the table twice");

    // The reader looks up every variable of the table, and only those.
    let mut problems = Problems::default();
    let every: Vec<(&str, &str)> = VARIABLES.iter().map(|v| (v.name, "1")).collect();
    let raw = RawEnv::read(env(&every), &mut problems);
    let _ = parse(&raw, false, &mut problems);
    assert_eq!(raw.names_read(), table);

    // --help lists every variable, and --check shows every one.
    let help = help_text();
    let check = render_check(&Config::from_env(env(MINIMAL), false).unwrap());
    for name in &table {
        assert!(
            help.contains(&format!("\n  {name} ")),
            "--help lacks {name}"
        );
        assert!(
            check
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "--check lacks {name}:\n{check}"
        );
    }

    // The typo check knows every name (and NAME_FILE of a secret), in any other case too.
    let files: Vec<String> = VARIABLES
        .iter()
        .filter(|v| v.secret)
        .map(|v| format!("{}_FILE", v.name))
        .collect();
    let known: Vec<&str> = table
        .iter()
        .copied()
        .chain(files.iter().map(String::as_str))
        .collect();
    assert_eq!(unknown_variables(known.iter().copied()), []);
    let lower: Vec<String> = known.iter().map(|n| n.to_ascii_lowercase()).collect();
    let typos = unknown_variables(lower.iter().map(String::as_str));
    assert_eq!(typos.len(), known.len());
    for typo in typos {
        assert_eq!(typo.meant, Some(typo.name.to_ascii_uppercase()));
    }
}

#[test]
fn a_lower_case_spelling_of_a_variable_is_not_read_and_never_panics() {
    let config = Config::from_env(with(&[("mqtt_url", "mqtt://elsewhere:1884")]), false).unwrap();
    assert_eq!(
        (config.mqtt.host.as_str(), config.mqtt.port),
        ("mosquitto", 1883)
    );
    let only_lower = env(&[("mqtt_url", "mqtt://elsewhere:1884")]);
    let found = problems(only_lower);
    assert!(found.contains(&Problem {
        variable: "MQTT_URL".into(),
        message: "required, e.g. mqtt://mosquitto:1883".into()
    }));
}

#[test]
fn unrelated_variables_that_are_not_utf8_are_ignored() {
    use std::os::unix::ffi::OsStringExt;
    let mut vars = env(MINIMAL);
    vars.push(("LESSOPEN".into(), OsString::from_vec(vec![b'|', 0xff])));
    vars.push((OsString::from_vec(vec![b'X', 0xfe]), "y".into()));
    assert!(Config::from_env(vars, false).is_ok());

    let mut vars = env(MINIMAL);
    vars.push(("OW_AUTH_FILE".into(), OsString::from_vec(vec![b'/', 0xff])));
    let found = problems(vars);
    assert_eq!(found[0].variable, "OW_AUTH_FILE");
    assert_eq!(found[0].message, "is not valid UTF-8");
}

#[test]
fn a_variable_given_twice_must_have_one_value() {
    let mut vars = env(MINIMAL);
    vars.push(("OW_TRIGGER".into(), "addReadingToDbTrigger".into()));
    assert!(Config::from_env(vars.clone(), false).is_ok());
    vars.push(("OW_TRIGGER".into(), "otherTrigger".into()));
    let found = problems(vars);
    assert_eq!(
        found,
        [Problem {
            variable: "OW_TRIGGER".into(),
            message: "is set more than once, with different values; keep one".into()
        }]
    );
}

fn variables_of(found: &[Problem]) -> Vec<&str> {
    found.iter().map(|p| p.variable.as_str()).collect()
}

#[test]
fn entity_names_are_judged_by_openwhisks_ascii_rule() {
    for (variable, extra) in [
        ("OW_TRIGGER", vec![("OW_TRIGGER", "addReadingToDbTriggerЖ")]),
        ("OW_NAMESPACE", vec![("OW_NAMESPACE", "guest²")]),
        (
            "ALARM_TRIGGER",
            vec![("ALARM_CRON", "0 3 * * *"), ("ALARM_TRIGGER", "agrégats")],
        ),
        (
            "ALARMS[0].trigger",
            vec![(
                "ALARMS",
                r#"[{"name": "n", "cron": "0 3 * * *", "trigger": "t\u0661"}]"#,
            )],
        ),
    ] {
        let found = problems(with(&extra));
        assert_eq!(variables_of(&found), [variable], "{found:?}");
        assert!(found[0].message.contains("ASCII"), "{found:?}");
    }
    let longest = "t".repeat(256);
    let config = Config::from_env(
        with(&[
            ("OW_TRIGGER", &longest),
            ("OW_NAMESPACE", "my ns@dc1.x&y-z"),
        ]),
        false,
    )
    .unwrap();
    assert_eq!(config.routes[0].trigger, longest);
}

/// The problems of `vars`, which must not parse (no `Debug` of the whole `Config`,
/// whose long values would flood the output).
fn problems_quietly(vars: Vec<(OsString, OsString)>) -> Vec<Problem> {
    match Config::from_env(vars, false) {
        Ok(_) => panic!("the configuration was accepted"),
        Err(error) => error.0,
    }
}

#[test]
fn numbers_the_protocol_or_product_cannot_honour_are_named_with_their_range() {
    for (variable, value, expected) in [
        (
            "FIRE_MAX_PAYLOAD_BYTES",
            "0",
            "expected bytes from 1024 to 52428800, got 0",
        ),
        (
            "MQTT_MAX_PACKET_BYTES",
            "0",
            "expected bytes from 1024 to 268435455, got 0",
        ),
        (
            "FIRE_BATCH_WAIT_MS",
            "18446744073709551615",
            "expected milliseconds from 0 to 60000, got 18446744073709551615",
        ),
        (
            "SHUTDOWN_GRACE_SECS",
            "18446744073709551615",
            "expected seconds from 0 to 3600, got 18446744073709551615",
        ),
        (
            "HTTP_PORT",
            "65536",
            "expected a TCP port from 0 to 65535, got \"65536\"",
        ),
    ] {
        let found = problems_quietly(with(&[(variable, value)]));
        assert_eq!(variables_of(&found), [variable], "{found:?}");
        assert_eq!(found[0].message, expected);
    }
}

#[test]
fn mqtt_strings_longer_than_65535_bytes_are_named() {
    let long = "x".repeat(65_536);
    let just_fits = "x".repeat(65_535);
    for variable in [
        "MQTT_CLIENT_ID",
        "MQTT_USERNAME",
        "MQTT_PASSWORD",
        "MQTT_TOPICS",
    ] {
        let mut extra = vec![
            (variable, long.as_str()),
            ("MQTT_MAX_PACKET_BYTES", "268435455"),
        ];
        if variable == "MQTT_PASSWORD" {
            extra.push(("MQTT_USERNAME", "u"));
        }
        let found = problems_quietly(with(&extra));
        assert_eq!(variables_of(&found), [variable], "{variable}");
        assert!(
            found[0].message.starts_with("at most 65535 bytes")
                && found[0].message.contains("got 65536"),
            "{:?}",
            found[0]
        );
        extra[0].1 = just_fits.as_str();
        assert!(Config::from_env(with(&extra), false).is_ok(), "{variable}");
    }
    let url = format!("mqtt://u:{long}@mosquitto");
    let found = problems_quietly(with(&[
        ("MQTT_URL", &url),
        ("MQTT_MAX_PACKET_BYTES", "268435455"),
    ]));
    assert_eq!(variables_of(&found), ["MQTT_URL"]);
    assert!(!found[0].message.contains("xxx"), "the password is echoed");
}

#[test]
fn mqtt_strings_with_a_nul_character_are_named() {
    for variable in ["MQTT_CLIENT_ID", "MQTT_USERNAME", "MQTT_TOPICS"] {
        let found = problems(with(&[(variable, "a\u{0}b")]));
        assert_eq!(variables_of(&found), [variable], "{found:?}");
        assert!(found[0].message.contains("U+0000"), "{found:?}");
    }
    // A password is binary data in MQTT 3.1.1: any byte goes.
    let config = Config::from_env(
        with(&[("MQTT_USERNAME", "u"), ("MQTT_PASSWORD", "a\u{0}b")]),
        false,
    );
    assert!(config.is_ok());
}

#[test]
fn the_connect_and_subscribe_packets_must_fit_mqtt_max_packet_bytes() {
    let id = "c".repeat(2000);
    let found = problems(with(&[
        ("MQTT_CLIENT_ID", &id),
        ("MQTT_MAX_PACKET_BYTES", "1024"),
    ]));
    assert_eq!(variables_of(&found), ["MQTT_MAX_PACKET_BYTES"]);
    assert!(
        found[0].message.contains("CONNECT packet of 2015 bytes"),
        "{found:?}"
    );
    let filters = vec!["dc1/sensors/aaaaaaaaaaaaaaaaaaaaaaaa/#"; 40].join(",");
    let found = problems(with(&[
        ("MQTT_TOPICS", &filters),
        ("MQTT_MAX_PACKET_BYTES", "1024"),
    ]));
    assert_eq!(variables_of(&found), ["MQTT_MAX_PACKET_BYTES"]);
    assert!(
        found[0].message.contains("SUBSCRIBE packet of"),
        "{found:?}"
    );
}

#[test]
fn fire_params_must_leave_room_for_a_reading() {
    let params = format!(r#"{{"blob": "{}"}}"#, "p".repeat(2000));
    let found = problems(with(&[
        ("FIRE_PARAMS", &params),
        ("FIRE_MAX_PAYLOAD_BYTES", "2048"),
    ]));
    assert_eq!(variables_of(&found), ["FIRE_MAX_PAYLOAD_BYTES"]);
    assert!(found[0].message.contains("FIRE_PARAMS"), "{found:?}");
}

#[test]
fn check_masks_credential_like_keys_of_parameters_and_payloads() {
    let config = Config::from_env(
        with(&[
            (
                "FIRE_PARAMS",
                r#"{"datacenter_id": "dc1", "influx_token": "S3CRET-1", "db": {"Password": "S3CRET-2"}}"#,
            ),
            ("ALARM_CRON", "0 3 * * *"),
            ("ALARM_TRIGGER", "aggregatesTrigger"),
            ("ALARM_PAYLOAD", r#"{"central": {"api_key": "S3CRET-3"}}"#),
            (
                "ALARMS",
                r#"[{"name": "n", "cron": "0 4 * * *", "trigger": "t", "payload": {"auth": ["S3CRET-4"]}}]"#,
            ),
        ]),
        false,
    )
    .unwrap();
    let check = render_check(&config);
    assert!(!check.contains("S3CRET"), "{check}");
    assert!(check.contains(r#""datacenter_id":"dc1""#), "{check}");
    assert!(check.contains(r#""influx_token":"********""#), "{check}");
}

#[test]
fn files_that_never_end_are_a_problem_not_a_hang() {
    let found = problems(with(&[("OW_AUTH", ""), ("OW_AUTH_FILE", "/dev/zero")]));
    assert_eq!(variables_of(&found), ["OW_AUTH_FILE"]);
    assert_eq!(
        found[0].message,
        "/dev/zero is larger than 65536 bytes, more than it should hold"
    );
    let found = problems(with(&[
        ("MQTT_URL", "mqtts://mosquitto"),
        ("MQTT_CA_FILE", "/dev/zero"),
        ("MQTT_CLIENT_CERT_FILE", "/dev/zero"),
        ("MQTT_CLIENT_KEY_FILE", "/dev/zero"),
    ]));
    assert_eq!(
        variables_of(&found),
        [
            "MQTT_CA_FILE",
            "MQTT_CLIENT_CERT_FILE",
            "MQTT_CLIENT_KEY_FILE"
        ]
    );
}

/// `vars` without the named variables.
fn without(names: &[&str], vars: Vec<(OsString, OsString)>) -> Vec<(OsString, OsString)> {
    let kept = vars
        .into_iter()
        .filter(|(name, _)| !names.iter().any(|n| name == n));
    kept.collect()
}

#[test]
fn routes_come_from_mqtt_topics_and_the_routes_table() {
    let config = Config::from_env(
        with(&[
            ("OW_NAMESPACE", "dc1"),
            (
                "ROUTES",
                r#"[{"filter":"dc1/alerts/#","trigger":"alertTrigger"},
                    {"filter":"dc1/+/door","trigger":"doorTrigger","namespace":"security"}]"#,
            ),
        ]),
        false,
    )
    .unwrap();
    let routes: Vec<(&str, &str, &str)> = config
        .routes
        .iter()
        .map(|r| (r.filter.as_str(), r.namespace.as_str(), r.trigger.as_str()))
        .collect();
    assert_eq!(
        routes,
        [
            ("dc1/sensors/#", "dc1", "addReadingToDbTrigger"),
            ("dc1/+/status", "dc1", "addReadingToDbTrigger"),
            ("dc1/alerts/#", "dc1", "alertTrigger"),
            ("dc1/+/door", "security", "doorTrigger"),
        ]
    );
    let only_table = without(
        &["MQTT_TOPICS", "OW_TRIGGER"],
        with(&[("ROUTES", r#"[{"filter":"a/#","trigger":"t"}]"#)]),
    );
    assert_eq!(Config::from_env(only_table, false).unwrap().routes.len(), 1);
}

#[test]
fn each_bad_routes_entry_is_named_with_its_field() {
    let found = problems(with(&[(
        "ROUTES",
        r#"[{"filter":"a/#/b","trigger":"t"}, {"trigger":"bad name!"}, 3,
            {"filter":"x","trigger":"t","namespace":"", "topic":"y"}]"#,
    )]));
    assert_eq!(
        variables_of(&found),
        [
            "ROUTES[0].filter",
            "ROUTES[1].filter",
            "ROUTES[1].trigger",
            "ROUTES[2]",
            "ROUTES[3].topic",
            "ROUTES[3].namespace",
        ],
        "{found:#?}"
    );
    let not_array = problems(with(&[("ROUTES", r#"{"filter":"a"}"#)]));
    assert_eq!(variables_of(&not_array), ["ROUTES"]);
}

#[test]
fn mqtt_topics_and_ow_trigger_need_each_other_unless_routes_come_from_elsewhere() {
    let found = problems(without(&["OW_TRIGGER"], env(MINIMAL)));
    assert_eq!(variables_of(&found), ["OW_TRIGGER"]);
    let found = problems(without(&["MQTT_TOPICS"], env(MINIMAL)));
    assert_eq!(variables_of(&found), ["MQTT_TOPICS"]);
    let none = without(&["MQTT_TOPICS", "OW_TRIGGER"], env(MINIMAL));
    assert_eq!(variables_of(&problems(none.clone())), ["MQTT_TOPICS"]);
    let feed_only = Config::from_env(
        none.into_iter()
            .chain(env(&[("STATE_DIR", "/var/lib/provider")])),
        false,
    )
    .unwrap();
    assert!(feed_only.routes.is_empty());
    assert_eq!(feed_only.feed.disable_after, Duration::from_secs(600));
}

#[test]
fn feed_settings_are_checked_and_need_state_dir() {
    let found = problems(with(&[
        ("FEED_ALLOWED_BROKERS", "broker2:1883"),
        ("FEED_LEGACY_API", "true"),
    ]));
    assert_eq!(
        variables_of(&found),
        ["FEED_ALLOWED_BROKERS", "FEED_LEGACY_API"]
    );
    assert!(found[0].message.contains("STATE_DIR"), "{found:?}");
    let found = problems(with(&[
        ("STATE_DIR", "relative/dir"),
        (
            "FEED_ALLOWED_BROKERS",
            "broker2:1883, mqtts://broker3, nohost, broker4:x",
        ),
        ("FEED_DISABLE_AFTER_SECS", "0"),
    ]));
    assert_eq!(
        variables_of(&found),
        [
            "STATE_DIR",
            "FEED_ALLOWED_BROKERS",
            "FEED_ALLOWED_BROKERS",
            "FEED_DISABLE_AFTER_SECS"
        ],
        "{found:#?}"
    );
    let config = Config::from_env(
        with(&[
            ("STATE_DIR", "/state"),
            ("FEED_ALLOWED_BROKERS", "Broker2:1883, mqtts://broker3"),
        ]),
        false,
    )
    .unwrap();
    assert_eq!(
        config.feed.allowed_brokers,
        [("broker2".to_owned(), 1883), ("broker3".to_owned(), 8883)]
    );
}

#[test]
fn the_spool_needs_state_dir_and_a_sensible_bound() {
    let found = problems(with(&[("SPOOL", "true")]));
    assert_eq!(variables_of(&found), ["SPOOL"]);
    assert!(found[0].message.contains("STATE_DIR"), "{found:?}");
    let found = problems(with(&[
        ("STATE_DIR", "/state"),
        ("SPOOL", "yes"),
        ("SPOOL_MAX_BYTES", "1000"),
    ]));
    assert_eq!(
        variables_of(&found),
        ["SPOOL", "SPOOL_MAX_BYTES"],
        "{found:#?}"
    );
    assert!(found[1].message.contains("65536"), "{found:?}");

    let off = Config::from_env(with(&[("STATE_DIR", "/state")]), false).unwrap();
    assert!(off.spool.is_none());
    let on = Config::from_env(with(&[("STATE_DIR", "/state"), ("SPOOL", "true")]), false).unwrap();
    assert_eq!(on.spool.map(|s| s.max_bytes), Some(1 << 30));
}

/// A file in `dir` holding `text`, and its path.
fn file_in(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn secret_fire_params_join_fire_params_and_only_their_keys_are_shown() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(
        &dir,
        "params.json",
        r#"{"influx_token": "S3CRET-t0k3n", "influx_org": "S3CRET-org"}"#,
    );
    let config = Config::from_env(
        with(&[
            ("FIRE_PARAMS", r#"{"datacenter_id": "dc1"}"#),
            ("FIRE_SECRET_PARAMS_FILE", &path),
        ]),
        false,
    )
    .unwrap();
    let params = config.fire.message_params();
    assert_eq!(params["datacenter_id"], "dc1");
    assert_eq!(params["influx_token"], "S3CRET-t0k3n");
    assert_eq!(params["influx_org"], "S3CRET-org");
    let check = render_check(&config);
    assert!(!check.contains("S3CRET"), "{check}");
    assert!(
        check.contains("FIRE_SECRET_PARAMS_FILE  = ******** (keys: influx_org, influx_token)"),
        "{check}"
    );
    let debug = format!("{config:?}");
    assert!(!debug.contains("S3CRET"), "{debug}");
}

#[test]
fn a_bad_secret_params_file_is_named_with_what_is_wrong_never_its_values() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("missing", None, "cannot read "),
        (
            "not-json",
            Some(r#"{"token": S3CRET}"#),
            "is not JSON: error at line 1",
        ),
        (
            "array",
            Some(r#"["S3CRET"]"#),
            "holds an array, expected a JSON object",
        ),
        (
            "string",
            Some(r#""S3CRET""#),
            "holds a string, expected a JSON object",
        ),
        (
            "message-key",
            Some(r#"{"topic": "S3CRET"}"#),
            r#"key "topic" collides with a key every message fire sets"#,
        ),
        (
            "fire-params-key",
            Some(r#"{"datacenter_id": "S3CRET"}"#),
            r#"key "datacenter_id" collides with a key of FIRE_PARAMS"#,
        ),
    ];
    for (name, text, expected) in cases {
        let path = match text {
            Some(text) => file_in(&dir, name, text),
            None => dir.path().join(name).to_str().unwrap().to_owned(),
        };
        let error = Config::from_env(
            with(&[
                ("FIRE_PARAMS", r#"{"datacenter_id": "dc1"}"#),
                ("FIRE_SECRET_PARAMS_FILE", &path),
            ]),
            false,
        )
        .unwrap_err();
        assert_eq!(
            variables_of(&error.0),
            ["FIRE_SECRET_PARAMS_FILE"],
            "{name}"
        );
        let message = &error.0[0].message;
        assert!(message.contains(expected), "{name}: {message}");
        assert!(!error.to_string().contains("S3CRET"), "{name}: {error}");
    }
}

#[test]
fn secret_fire_params_count_against_the_room_for_a_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_in(
        &dir,
        "params.json",
        &format!(r#"{{"t": "{}"}}"#, "x".repeat(900)),
    );
    let found = problems(with(&[
        ("FIRE_SECRET_PARAMS_FILE", &path),
        ("FIRE_MAX_PAYLOAD_BYTES", "1024"),
    ]));
    assert_eq!(variables_of(&found), ["FIRE_MAX_PAYLOAD_BYTES"]);
    assert!(!found[0].message.contains("xxx"), "{found:?}");
}

#[test]
fn alarm_catchup_is_off_by_default_and_needs_state_dir() {
    let config = Config::from_env(env(MINIMAL), false).unwrap();
    assert_eq!(config.alarm_catchup, None);
    let found = problems(with(&[("ALARM_CATCHUP_SECS", "600")]));
    assert_eq!(variables_of(&found), ["ALARM_CATCHUP_SECS"]);
    assert!(found[0].message.contains("STATE_DIR"), "{found:?}");
    let found = problems(with(&[
        ("ALARM_CATCHUP_SECS", "604801"),
        ("STATE_DIR", "/var/lib/p"),
    ]));
    assert_eq!(variables_of(&found), ["ALARM_CATCHUP_SECS"]);
    let config = Config::from_env(
        with(&[("ALARM_CATCHUP_SECS", "600"), ("STATE_DIR", "/var/lib/p")]),
        false,
    )
    .unwrap();
    assert_eq!(config.alarm_catchup, Some(Duration::from_secs(600)));
    assert!(render_check(&config).contains("ALARM_CATCHUP_SECS       = 600"));
}
