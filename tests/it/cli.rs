//! The command line: `--help`, configuration errors (exit 2), `--check`.

use crate::harness::run_to_exit;

#[tokio::test]
async fn help_lists_every_variable_with_its_default() {
    let out = run_to_exit(&["--help"], &[]).await;
    assert!(out.status.success());
    for expected in [
        "MQTT_URL",
        "MQTT_TOPICS",
        "MQTT_QOS",
        "[default: 1]",
        "MQTT_CLIENT_ID",
        "[default: mqtt-whisk-provider-<hostname>]",
        "MQTT_CLEAN_SESSION",
        "MQTT_CA_FILE",
        "MQTT_KEEP_ALIVE_SECS",
        "OW_API_HOST",
        "OW_AUTH",
        "OW_NAMESPACE",
        "[default: _]",
        "OW_INSECURE",
        "OW_TRIGGER",
        "FIRE_PARAMS",
        "FIRE_CONCURRENCY",
        "[default: 64]",
        "FIRE_TIMEOUT_SECS",
        "HTTP_PORT",
        "[default: 3000]",
        "LOG_FORMAT",
        "--check",
        "--dry-run",
    ] {
        assert!(
            out.stdout.contains(expected),
            "--help lacks {expected}:\n{}",
            out.stdout
        );
    }
}

#[tokio::test]
async fn every_configuration_problem_is_reported_at_once_with_exit_2() {
    let out = run_to_exit(
        &[],
        &[
            ("MQTT_URL", "http://broker".into()),
            ("MQTT_QOS", "7".into()),
            ("FIRE_PARAMS", "{not json".into()),
            ("OW_AUTH", "missing-colon-but-secret".into()),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    for expected in [
        "MQTT_URL: scheme must be mqtt:// or mqtts://",
        "MQTT_TOPICS: required (with OW_TRIGGER) unless ROUTES or STATE_DIR",
        "MQTT_QOS: expected QoS from 0 to 2, got 7",
        "OW_API_HOST: required",
        "OW_AUTH: expected the API key as uuid:key",
        "FIRE_PARAMS: expected a JSON object",
    ] {
        assert!(
            out.stderr.contains(expected),
            "stderr lacks {expected:?}:\n{}",
            out.stderr
        );
    }
    assert!(!out.stderr.contains("missing-colon-but-secret"));
}

#[tokio::test]
async fn check_prints_the_configuration_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("ow-auth");
    std::fs::write(
        &auth_file,
        "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:TOPSECRETKEY\n",
    )
    .unwrap();
    let out = run_to_exit(
        &["--check"],
        &[
            (
                "MQTT_URL",
                "mqtt://dc1:BROKERPASSWORD@mosquitto:1883".into(),
            ),
            ("MQTT_TOPICS", "dc1/sensors/#".into()),
            ("OW_API_HOST", "openwhisk.openwhisk.svc".into()),
            ("OW_AUTH_FILE", auth_file.display().to_string()),
            ("OW_TRIGGER", "addReadingToDbTrigger".into()),
            ("MQTT_TOPIC", "typo".into()),
            ("STATE_DIR", dir.path().display().to_string()),
            // 32 bytes as base64: "STATEKEYSTATEKEYSTATEKEYSTATEKEY".
            (
                "STATE_KEY",
                "U1RBVEVLRVlTVEFURUtFWVNUQVRFS0VZU1RBVEVLRVk=".into(),
            ),
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.contains("STATE_KEY") && out.stdout.contains("******** (set)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("https://openwhisk.openwhisk.svc"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("MQTT_USERNAME") && out.stdout.contains("dc1"));
    assert!(
        out.stdout.contains("warning: MQTT_TOPIC is not a variable"),
        "{}",
        out.stdout
    );
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        !all.contains("TOPSECRETKEY")
            && !all.contains("BROKERPASSWORD")
            && !all.contains("U1RBVEVLRVlTVEFURUtFWVNUQVRFS0VZU1RBVEVLRVk="),
        "{all}"
    );
}

/// The variables of a configuration that passes `--check`.
pub(crate) fn valid_env() -> Vec<(&'static str, String)> {
    vec![
        ("MQTT_URL", "mqtt://mosquitto:1883".into()),
        ("MQTT_TOPICS", "dc1/sensors/#".into()),
        ("OW_API_HOST", "openwhisk.openwhisk.svc".into()),
        (
            "OW_AUTH",
            "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:TOPSECRETKEY".into(),
        ),
        ("OW_TRIGGER", "addReadingToDbTrigger".into()),
    ]
}

#[tokio::test]
async fn a_lower_case_spelling_of_a_variable_is_a_typo_warning_not_a_panic() {
    let mut env = valid_env();
    env.push(("mqtt_url", "mqtt://elsewhere:1883".into()));
    let out = run_to_exit(&["--check"], &env).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let warning = "warning: mqtt_url is not a variable this provider reads; did you mean MQTT_URL?";
    assert!(out.stdout.contains(warning), "{}", out.stdout);
    assert!(
        out.stdout.contains("= mqtt://mosquitto:1883"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn an_unrelated_variable_that_is_not_utf8_does_not_stop_the_provider() {
    use std::os::unix::ffi::OsStringExt;
    // run_to_exit takes text; this one value must not be.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mqtt-whisk-provider"))
        .arg("--check")
        .env_clear()
        .envs(valid_env())
        .env("LESSOPEN", std::ffi::OsString::from_vec(vec![b'|', 0xff]))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[tokio::test]
async fn names_openwhisk_would_refuse_are_refused_at_start() {
    let mut env = valid_env();
    env.extend([
        ("OW_TRIGGER", "addReadingToDbTriggerЖ".into()),
        ("OW_NAMESPACE", "guest²".into()),
    ]);
    let out = run_to_exit(&["--check"], &env).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    for expected in [
        "OW_TRIGGER: \"addReadingToDbTriggerЖ\" is not a valid OpenWhisk trigger name: ASCII",
        "OW_NAMESPACE: \"guest²\" is not a valid OpenWhisk namespace name: ASCII",
    ] {
        assert!(
            out.stderr.contains(expected),
            "stderr lacks {expected:?}:\n{}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn values_out_of_range_are_named_with_the_range_and_exit_2() {
    let mut env = valid_env();
    env.extend([
        ("FIRE_MAX_PAYLOAD_BYTES", "0".into()),
        ("MQTT_MAX_PACKET_BYTES", "0".into()),
        ("FIRE_BATCH_WAIT_MS", u64::MAX.to_string()),
        ("MQTT_CLIENT_ID", "c".repeat(65_536)),
    ]);
    let out = run_to_exit(&["--check"], &env).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    for expected in [
        "FIRE_MAX_PAYLOAD_BYTES: expected bytes from 1024 to 52428800, got 0",
        "MQTT_MAX_PACKET_BYTES: expected bytes from 1024 to 268435455, got 0",
        "FIRE_BATCH_WAIT_MS: expected milliseconds from 0 to 60000, got 18446744073709551615",
        "MQTT_CLIENT_ID: at most 65535 bytes (MQTT writes a string's length in 2 bytes), got 65536",
    ] {
        assert!(
            out.stderr.contains(expected),
            "stderr lacks {expected:?}:\n{}",
            out.stderr
        );
    }
    let help = run_to_exit(&["--help"], &[]).await;
    for range in [
        "1024-52428800 bytes",
        "1024-268435455 bytes",
        "0-60000 ms",
        "at most 65535 bytes",
    ] {
        assert!(help.stdout.contains(range), "--help lacks {range}");
    }
}

#[tokio::test]
async fn check_never_prints_credential_like_parameters() {
    let mut env = valid_env();
    env.extend([
        (
            "FIRE_PARAMS",
            r#"{"datacenter_id": "dc1", "influx_token": "INFLUXSECRET", "db": {"password": "DBSECRET"}}"#.into(),
        ),
        ("ALARM_CRON", "0 3 * * *".into()),
        ("ALARM_TRIGGER", "aggregatesTrigger".into()),
        (
            "ALARM_PAYLOAD",
            r#"{"central_influx_token": "CENTRALSECRET"}"#.into(),
        ),
        (
            "ALARMS",
            r#"[{"name": "hourly", "cron": "0 * * * *", "trigger": "t", "payload": {"Auth": "HOURLYSECRET"}}]"#.into(),
        ),
    ]);
    let out = run_to_exit(&["--check"], &env).await;
    assert!(out.status.success(), "{out:?}");
    let all = format!("{}{}", out.stdout, out.stderr);
    for secret in [
        "INFLUXSECRET",
        "DBSECRET",
        "CENTRALSECRET",
        "HOURLYSECRET",
        "TOPSECRETKEY",
    ] {
        assert!(!all.contains(secret), "--check printed {secret}:\n{all}");
    }
    assert!(all.contains(r#""datacenter_id":"dc1""#), "{all}");
}
