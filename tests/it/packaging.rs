//! The Kubernetes packaging: `configmap.yml` is a complete, valid configuration for data
//! center dc1, `deployment.yaml` agrees with it, and each data center's kustomize overlay
//! (`deploy/overlays/<dc>`) changes only that data center's own keys.
//!
//! configmap.yml is read without a YAML library: its `data` must stay one
//! `KEY: 'value'` per line (single quotes, `''` for a quote inside), which this parser
//! checks. `.ci/packaging.sh` parses the same file with a real YAML parser and validates
//! the manifests and every rendered overlay against the Kubernetes schemas. What
//! `kubectl kustomize` renders is parsed with serde_yaml_ng: it folds long values over
//! several lines, so a line-based comparison would not see which key changed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

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

/// The ConfigMap keys that are a data center's own (configmap.yml's "PER DC"): the only
/// data an overlay changes.
const DC_KEYS: &[&str] = &[
    "MQTT_TOPICS",
    "MQTT_CLIENT_ID",
    "FIRE_PARAMS",
    "ALARM_TIMEZONE",
    "ALARM_PAYLOAD",
];

/// The kubectl to render with: $KUBECTL (what `.ci/kubectl.sh` prints) or `kubectl`.
fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned())
}

/// `kubectl kustomize <args>` run in the repository, as parsed documents.
fn kustomize(args: &[&str]) -> Vec<Value> {
    let kubectl = kubectl();
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| {
            panic!("run {kubectl} (needs kubectl 1.27 or later: `KUBECTL=$(bash .ci/kubectl.sh) cargo test` installs one): {e}")
        });
    assert!(
        out.status.success(),
        "{kubectl} kustomize {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_documents(&String::from_utf8(out.stdout).expect("kustomize prints UTF-8"))
}

/// An overlay rendered as `kubectl apply -k` renders it.
fn render_overlay(dir: &str) -> Vec<Value> {
    kustomize(&[dir])
}

fn parse_documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("kustomize renders valid YAML"))
        .filter(|document| !document.is_null())
        .collect()
}

/// How an overlay for data center `id` differs from dc1's overlay.
#[derive(Debug, Default)]
struct Differences {
    /// The ConfigMap keys whose values differ.
    keys: BTreeSet<String>,
    /// Every other difference that is not dc1's names, namespace and instance label with
    /// `id` for dc1, nor the image's tag: none is allowed.
    unexpected: Vec<String>,
}

fn differences(dc1: &[Value], other: &[Value], id: &str) -> Differences {
    let mut found = Differences::default();
    if dc1.len() != other.len() {
        found
            .unexpected
            .push(format!("{} documents, dc1 has {}", other.len(), dc1.len()));
    }
    for (a, b) in dc1.iter().zip(other) {
        let kind = a["kind"].as_str().unwrap_or("?");
        compare(kind, a, b, id, &mut found);
    }
    let text = serde_json::to_string(other).unwrap();
    if id != "dc1" && text.contains("dc1") {
        found
            .unexpected
            .push(format!("dc1 is still named: {}", mentions(&text, "dc1")));
    }
    found
}

/// The JSON leaves of `a` (dc1's) and `b` compared, by path: `Deployment spec.replicas`.
fn compare(path: &str, a: &Value, b: &Value, id: &str, found: &mut Differences) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
                // `Deployment spec`, then `Deployment spec.replicas`.
                let here = if path.contains(' ') {
                    format!("{path}.{key}")
                } else {
                    format!("{path} {key}")
                };
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => compare(&here, x, y, id, found),
                    (Some(_), None) => found.unexpected.push(format!("{here}: removed")),
                    _ => found.unexpected.push(format!("{here}: added")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                compare(&format!("{path}[{index}]"), x, y, id, found);
            }
        }
        _ if a == b => {}
        _ => {
            if let Some(key) = path.strip_prefix("ConfigMap data.") {
                found.keys.insert(key.to_owned());
                return;
            }
            let (Some(x), Some(y)) = (a.as_str(), b.as_str()) else {
                found.unexpected.push(format!("{path}: {a} -> {b}"));
                return;
            };
            let renamed = x.replace("dc1", id) == y;
            let retagged = path.ends_with(".image")
                && x.rsplit_once(':').map(|p| p.0) == y.rsplit_once(':').map(|p| p.0);
            if !renamed && !retagged {
                found.unexpected.push(format!("{path}: {x:?} -> {y:?}"));
            }
        }
    }
}

/// A few characters around the first `needle` in `text`.
fn mentions(text: &str, needle: &str) -> String {
    let at = text.find(needle).unwrap_or(0);
    let before = text[..at].chars().count();
    text.chars()
        .skip(before.saturating_sub(40))
        .take(80 + needle.len())
        .collect()
}

fn dc_keys() -> BTreeSet<String> {
    DC_KEYS.iter().map(|k| (*k).to_owned()).collect()
}

#[test]
fn the_dc1_overlay_renders_the_base_unchanged() {
    assert!(
        kustomize(&["."]) == render_overlay("deploy/overlays/dc1"),
        "deploy/overlays/dc1 does not render as the base (configmap.yml, deployment.yaml): \
         do /kustomization.yaml and deploy/components/datacenter list the same resources, \
         and do dc1's values in deploy/overlays/dc1/configmap.yaml match configmap.yml's?"
    );
}

#[test]
fn the_dc1_and_dc2_overlays_differ_in_exactly_the_data_center_keys() {
    let dc1 = render_overlay("deploy/overlays/dc1");
    let dc2 = render_overlay("deploy/overlays/dc2");
    let found = differences(&dc1, &dc2, "dc2");
    assert!(
        found.unexpected.is_empty(),
        "dc2 differs from dc1 beyond its own keys: {:#?}",
        found.unexpected
    );
    assert_eq!(
        found.keys,
        dc_keys(),
        "the ConfigMap keys in which dc2 differs"
    );
    // The renaming reached what the pod depends on.
    let deployment = dc2.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["envFrom"][0]["configMapRef"]["name"],
        "mqtt-whisk-provider-dc2"
    );
    assert_eq!(deployment["metadata"]["namespace"], "fog-dc2");
}

#[test]
fn the_comparison_catches_an_overlay_that_changes_a_fleet_key() {
    let dc1 = render_overlay("deploy/overlays/dc1");
    let mut dc2 = render_overlay("deploy/overlays/dc2");
    for document in &mut dc2 {
        match document["kind"].as_str() {
            Some("ConfigMap") => {
                document["data"]["OW_TRIGGER"] = "myTrigger".into();
                document["data"]["ALARM_TIMEZONE"] = "Europe/Rome".into();
            }
            Some("Deployment") => document["spec"]["replicas"] = 2.into(),
            Some("Service") => {
                document["metadata"]["labels"]["app.kubernetes.io/instance"] = "dc1".into()
            }
            _ => {}
        }
    }
    let found = differences(&dc1, &dc2, "dc2");
    let expected: BTreeSet<String> = dc_keys()
        .into_iter()
        .filter(|k| k != "ALARM_TIMEZONE")
        .chain(["OW_TRIGGER".to_owned()])
        .collect();
    assert_eq!(found.keys, expected);
    let unexpected = found.unexpected.join("\n");
    assert!(
        unexpected.contains("Deployment spec.replicas: 1 -> 2"),
        "{unexpected}"
    );
    assert!(unexpected.contains("dc1 is still named"), "{unexpected}");
}

#[tokio::test]
async fn a_generated_data_center_passes_check_and_differs_only_in_its_own_keys() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = tempfile::tempdir().unwrap();
    // The overlay finds the shared component at ../../components, as in deploy/.
    std::os::unix::fs::symlink(
        root.join("deploy/components"),
        scratch.path().join("components"),
    )
    .unwrap();
    let overlays = scratch.path().join("overlays");
    let made = Command::new("bash")
        .args([
            "deploy/new-datacenter.sh",
            "dc-milano-2",
            "--timezone",
            "America/New_York",
            "--tag",
            "0.2.0",
        ])
        .env("OVERLAYS", &overlays)
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let rendered = render_overlay(overlays.join("dc-milano-2").to_str().unwrap());
    let found = differences(
        &render_overlay("deploy/overlays/dc1"),
        &rendered,
        "dc-milano-2",
    );
    assert!(found.unexpected.is_empty(), "{:#?}", found.unexpected);
    assert_eq!(found.keys, dc_keys());
    let deployment = rendered.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert!(image.ends_with(":0.2.0"), "{image}");

    let configmap = rendered.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    let data: BTreeMap<String, String> = serde_json::from_value(configmap["data"].clone()).unwrap();
    let out = run_to_exit(&["--check"], &deployment_env(&data)).await;
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        out.status.success() && !all.contains("warning:"),
        "--check:\n{all}"
    );
    assert!(
        all.contains("in America/New_York fires aggregatesTrigger"),
        "{all}"
    );
}
