//! `FIRE_SECRET_PARAMS_FILE` (SPEC section 10), end to end: the values reach OpenWhisk in
//! every message fire and nowhere else, not in any log line (at debug level, live or
//! dry run) and not in `--check`.

use std::time::Duration;

use crate::harness::{Daemon, run_to_exit, unique_id, wait_until};
use crate::scenario::{Scenario, publish_readings};

const DEADLINE: Duration = Duration::from_secs(60);
const AGGREGATES: &str = "aggregatesTrigger";
/// The secret values; neither key looks like a credential, so only the provider's own
/// knowledge of the file can mask them.
const TOKEN: &str = "S3CRET-influx-dc1-0f9a7c";
const ORG: &str = "S3CRET-org-dc1-77e1";

/// Writes the secret parameters to a file in `dir`, as a mounted Secret would hold them.
fn secret_file(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("fire-secret-params.json");
    let json = format!(r#"{{"influx_credential_ref": "{TOKEN}", "org_id": "{ORG}"}}"#);
    std::fs::write(&path, json + "\n").unwrap();
    path.to_str().unwrap().to_owned()
}

/// The lines of `text` that hold a secret value.
fn leaks(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|line| line.contains(TOKEN) || line.contains(ORG))
        .collect()
}

#[tokio::test]
async fn secret_params_reach_every_message_fire_and_no_log_line_or_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut scenario = Scenario::start().await;
    scenario.ow.create_trigger(AGGREGATES, true);
    scenario.extra_env.extend([
        ("FIRE_SECRET_PARAMS_FILE", secret_file(&dir)),
        ("ALARM_CRON", "* * * * * *".to_owned()),
        ("ALARM_TRIGGER", AGGREGATES.to_owned()),
    ]);

    let check = run_to_exit(&["--check"], &scenario.env()).await;
    assert!(check.status.success(), "{check:?}");
    let printed = format!("{}{}", check.stdout, check.stderr);
    assert!(leaks(&printed).is_empty(), "--check: {:?}", leaks(&printed));
    assert!(
        printed.contains("******** (keys: influx_credential_ref, org_id)"),
        "{printed}"
    );

    let mut provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..20).await;
    scenario.wait_delivered(20, DEADLINE).await;
    wait_until("an alarm fire", DEADLINE, || {
        scenario
            .ow
            .fires()
            .iter()
            .any(|f| f.body["type"] == "alarm")
    })
    .await;

    for fire in scenario.ow.fires() {
        match fire.body["type"].as_str() {
            Some("message") => {
                assert_eq!(fire.body["influx_credential_ref"], TOKEN, "{:?}", fire.body);
                assert_eq!(fire.body["org_id"], ORG);
                assert_eq!(fire.body["datacenter_id"], "dc1", "FIRE_PARAMS too");
            }
            // An alarm fire carries its own payload only (SPEC section 3).
            Some("alarm") => assert!(fire.body.get("org_id").is_none(), "{:?}", fire.body),
            other => panic!("unexpected fire {other:?}"),
        }
    }
    provider.sigterm();
    assert!(provider.wait_exit(DEADLINE).await.success());
    let logs = provider.log_text();
    assert!(logs.contains("\"stopped\""), "the whole run is in the log");
    assert!(leaks(&logs).is_empty(), "logged: {:?}", leaks(&logs));
}

#[tokio::test]
async fn a_dry_run_logs_message_fires_with_the_secret_params_masked() {
    let dir = tempfile::tempdir().unwrap();
    let mut scenario = Scenario::start().await;
    // A client id of its own: a dry run acknowledges what it reads.
    scenario.client_id = unique_id("dry-run");
    scenario
        .extra_env
        .push(("FIRE_SECRET_PARAMS_FILE", secret_file(&dir)));
    let provider = Daemon::spawn_with_args(&["--dry-run"], &scenario.env()).await;
    provider
        .wait_for_log("\"subscribed\"", Duration::from_secs(30))
        .await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..3).await;
    wait_until("three fires logged", DEADLINE, || {
        provider
            .logs()
            .iter()
            .filter(|l| l.contains("would fire"))
            .count()
            >= 3
    })
    .await;
    let logs = provider.log_text();
    assert!(leaks(&logs).is_empty(), "logged: {:?}", leaks(&logs));
    let fire = logs.lines().find(|l| l.contains("would fire")).unwrap();
    assert!(
        fire.contains(r#"\"org_id\":\"********\""#),
        "the key is shown, its value masked: {fire}"
    );
}

#[tokio::test]
async fn a_bad_secret_params_file_exits_2_naming_the_variable_never_the_values() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("not-json", format!("{{\"influx_token\": {TOKEN}}}")),
        ("not-an-object", format!("[\"{TOKEN}\"]")),
        ("collides", format!("{{\"datacenter_id\": \"{TOKEN}\"}}")),
    ];
    for (name, text) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let env = [
            ("MQTT_URL", "mqtt://mosquitto".to_owned()),
            ("MQTT_TOPICS", "dc1/#".to_owned()),
            ("OW_TRIGGER", "t".to_owned()),
            ("FIRE_PARAMS", r#"{"datacenter_id": "dc1"}"#.to_owned()),
            ("FIRE_SECRET_PARAMS_FILE", path.display().to_string()),
        ];
        let out = run_to_exit(&["--check", "--dry-run"], &env).await;
        assert_eq!(out.status.code(), Some(2), "{name}: {out:?}");
        assert!(
            out.stderr.contains("  FIRE_SECRET_PARAMS_FILE: "),
            "{name}: {}",
            out.stderr
        );
        let printed = format!("{}{}", out.stdout, out.stderr);
        assert!(leaks(&printed).is_empty(), "{name}: {printed}");
    }
}
