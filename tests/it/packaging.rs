//! The Kubernetes packaging: `configmap.yml` is a complete, valid configuration for data
//! center dc1, and `deployment.yaml` agrees with it.
//!
//! configmap.yml is read without a YAML library: its `data` must stay one
//! `KEY: 'value'` per line (single quotes, `''` for a quote inside), which this parser
//! checks. `.ci/packaging.sh` parses the same file with a real YAML parser and validates
//! both manifests against the Kubernetes schemas.

use std::collections::BTreeMap;
use std::path::Path;

use crate::harness::run_to_exit;

/// The variables that come from the Secret, never from the ConfigMap.
const SECRETS: &[&str] = &["OW_AUTH", "MQTT_PASSWORD", "STATE_KEY"];

fn read_manifest(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The `data` of configmap.yml, in the file's restricted format.
fn configmap_data() -> BTreeMap<String, String> {
    parse_data(&read_manifest("configmap.yml"))
}

/// The entries of the top-level `data:` mapping: `  KEY: 'value'` lines, comments and
/// blank lines skipped, until the next top-level key. Panics on anything else.
fn parse_data(text: &str) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    let mut in_data = false;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !line.starts_with(' ') {
            in_data = line.trim_end() == "data:";
            continue;
        }
        if !in_data {
            continue;
        }
        let (key, value) = trimmed.split_once(": ").unwrap_or_else(|| {
            panic!("configmap.yml:{number}: expected KEY: 'value' in data, got {line:?}")
        });
        let value = single_quoted(value.trim_end()).unwrap_or_else(|| {
            panic!(
                "configmap.yml:{number}: keep data values on one line in single quotes \
                 ('' for a quote inside), got {value:?}"
            )
        });
        assert!(
            data.insert(key.to_owned(), value).is_none(),
            "configmap.yml:{number}: {key} twice"
        );
    }
    assert!(!data.is_empty(), "configmap.yml has no data entries");
    data
}

/// The text of a YAML single-quoted scalar that spans the whole of `quoted`.
fn single_quoted(quoted: &str) -> Option<String> {
    let inner = quoted.strip_prefix('\'')?.strip_suffix('\'')?;
    // Inside, a quote appears only doubled.
    if inner.replace("''", "").contains('\'') {
        return None;
    }
    Some(inner.replace("''", "'"))
}

/// The ConfigMap's data plus dummy secrets, as the Deployment gives them.
fn deployment_env(data: &BTreeMap<String, String>) -> Vec<(&str, String)> {
    let mut env: Vec<(&str, String)> = data
        .iter()
        .map(|(key, value)| (key.as_str(), value.clone()))
        .collect();
    env.push((
        "OW_AUTH",
        "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:PACKAGINGDUMMYKEY".to_owned(),
    ));
    env.push(("MQTT_PASSWORD", "PACKAGINGDUMMYPASSWORD".to_owned()));
    env
}

#[test]
fn the_configmap_parser_reads_quotes_and_stops_at_the_next_top_level_key() {
    let data = parse_data(
        "kind: ConfigMap\ndata:\n  # comment\n  A: 'x: y'\n\n  B: '{\"k\": \"it''s\"}'\n  C: ''\nother:\n  D: 'no'\n",
    );
    let expected: BTreeMap<String, String> = [("A", "x: y"), ("B", "{\"k\": \"it's\"}"), ("C", "")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(data, expected);
    assert_eq!(single_quoted("'a'b'"), None);
    assert_eq!(single_quoted("\"a\""), None);
}

#[tokio::test]
async fn the_dc1_configmap_passes_check_without_warnings() {
    let data = configmap_data();
    let out = run_to_exit(&["--check"], &deployment_env(&data)).await;
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(out.status.success(), "--check failed:\n{all}");
    let warnings: Vec<&str> = all.lines().filter(|l| l.contains("warning:")).collect();
    assert!(warnings.is_empty(), "--check warned: {warnings:?}\n{all}");
    assert!(
        !all.contains("PACKAGINGDUMMYKEY") && !all.contains("PACKAGINGDUMMYPASSWORD"),
        "--check printed a secret:\n{all}"
    );

    let line = |name: &str| {
        out.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("--check prints no {name} line:\n{}", out.stdout))
            .to_owned()
    };
    assert!(
        line("OW_TRIGGER").ends_with("= addReadingToDbTrigger"),
        "{}",
        out.stdout
    );
    assert!(line("MQTT_CLIENT_ID").ends_with("= mqtt-whisk-provider-dc1"));
    assert!(line("FIRE_PARAMS").contains(r#""datacenter_id":"dc1""#));
    // One alarm, 03:00 in dc1's zone (+01:00 or +02:00 in Europe/Rome), firing the
    // aggregates trigger with both InfluxDB locations.
    let alarm = line("ALARM");
    assert!(
        alarm.contains("\"0 3 * * *\" in Europe/Rome fires aggregatesTrigger"),
        "{alarm}"
    );
    for key in ["local_influx_url", "central_influx_url", "datacenter_id"] {
        assert!(
            alarm.contains(key),
            "the alarm payload lacks {key}: {alarm}"
        );
    }
    let next = alarm
        .split_once("next fire ")
        .unwrap_or_else(|| panic!("no next fire in {alarm}"))
        .1;
    let next = chrono::DateTime::parse_from_rfc3339(next)
        .unwrap_or_else(|e| panic!("next fire {next:?} is not RFC 3339: {e}"));
    assert_eq!(next.format("%H:%M:%S").to_string(), "03:00:00", "{alarm}");
    assert!(next > chrono::Utc::now(), "next fire {next} is in the past");
}

#[tokio::test]
async fn the_configmap_sets_every_variable_of_help_except_the_secrets() {
    let help = run_to_exit(&["--help"], &[]).await;
    assert!(help.status.success(), "{help:?}");
    let variables: Vec<&str> = help
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Environment variables"))
        .skip(1)
        .filter_map(|l| l.strip_prefix("  ")?.split_whitespace().next())
        .collect();
    assert!(
        variables.contains(&"MQTT_URL") && variables.contains(&"OW_AUTH"),
        "cannot read the variables from --help:\n{}",
        help.stdout
    );
    let data = configmap_data();
    let missing: Vec<&&str> = variables
        .iter()
        .filter(|v| !SECRETS.contains(v) && !data.contains_key(**v))
        .collect();
    assert!(
        missing.is_empty(),
        "configmap.yml lacks {missing:?}: add each with a dc1 value (or '' for the default) and a comment"
    );
    for secret in SECRETS {
        assert!(
            !data.contains_key(*secret) && !data.contains_key(&format!("{secret}_FILE")),
            "{secret} is a secret: it belongs in the Secret, not in configmap.yml"
        );
    }
}

#[test]
fn the_deployment_uses_the_configmap_the_secret_and_the_port() {
    let deployment = read_manifest("deployment.yaml");
    let configmap = read_manifest("configmap.yml");
    let data = configmap_data();
    let contains = |needle: &str| {
        assert!(
            deployment.contains(needle),
            "deployment.yaml lacks {needle:?}"
        );
    };
    assert!(configmap.contains("\n  name: mqtt-whisk-provider-dc1\n"));
    contains("configMapRef:\n                name: mqtt-whisk-provider-dc1\n");
    for secret in SECRETS {
        contains(&format!(
            "- name: {secret}\n              valueFrom:\n                secretKeyRef:\n                  name: mqtt-whisk-provider-dc1\n                  key: {secret}\n"
        ));
    }
    contains(&format!("containerPort: {}", data["HTTP_PORT"]));
    contains("type: Recreate");
    contains("replicas: 1\n");
    // SIGKILL must not cut the drain short: the grace period covers SHUTDOWN_GRACE_SECS
    // plus the disconnect.
    let grace: u64 = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
        .expect("deployment.yaml sets terminationGracePeriodSeconds")
        .parse()
        .unwrap();
    let drain: u64 = data["SHUTDOWN_GRACE_SECS"].parse().unwrap();
    assert!(
        grace >= drain + 10,
        "terminationGracePeriodSeconds {grace} leaves too little beyond SHUTDOWN_GRACE_SECS {drain}"
    );
}
