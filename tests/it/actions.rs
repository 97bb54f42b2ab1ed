//! The OpenWhisk actions' own tests (`actions/test/*.test.js`, Node's test runner), run
//! from here so that `cargo test` stays the one command that runs every test (README);
//! and addReadingToDb fed with fires the real provider sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chrono::DateTime;
use rumqttc::QoS;
use serde_json::{Value, json};
use test_support::{find_binary, guarded_command};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::harness::{RecordedFire, wait_until};
use crate::scenario::Scenario;

/// Far above what the tests take (about a second); then node and its children are killed.
const DEADLINE: Duration = Duration::from_secs(120);

/// `node`, or a clear failure saying how to get it.
fn node() -> PathBuf {
    let node = find_binary("node");
    assert!(
        node.is_file(),
        "`node` is not on PATH: install Node 20 (or Debian's nodejs package, which .ci/run \
         installs) to run the actions' tests in actions/test/"
    );
    node
}

#[tokio::test]
async fn the_actions_node_tests_pass() {
    let node = node();
    let files = node_test_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("actions/test"));

    let mut child = guarded_command(&node)
        .arg("--test")
        .arg("--test-reporter=spec")
        .args(&files)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills the per-file children too.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", node.display()));
    let pid = child.id().expect("node's pid") as libc::pid_t;
    let stdout = tokio::spawn(read_to_string(child.stdout.take().expect("piped stdout")));
    let stderr = tokio::spawn(read_to_string(child.stderr.take().expect("piped stderr")));
    let status = tokio::time::timeout(DEADLINE, child.wait()).await;
    if status.is_err() {
        // SAFETY: kill(2) on the process group we created; no memory is involved.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let output = format!(
        "node --test {files:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        stdout.await.expect("stdout reader"),
        stderr.await.expect("stderr reader"),
    );

    let Ok(status) = status else {
        panic!("the actions' Node tests did not finish within {DEADLINE:?}, killed:\n{output}");
    };
    let status = status.expect("wait for node");
    assert!(
        status.success(),
        "the actions' Node tests failed ({status}):\n{output}"
    );
}

/// Every `*.test.js` in `dir`, sorted. Named one by one because, given a directory, Node 20
/// also runs every other `.js` there (the helpers) as a test file, and Node 22 takes
/// globs instead.
fn node_test_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(".test.js"))
        })
        .collect();
    files.sort();
    // Without files, `node --test` would search the current directory for tests.
    assert!(!files.is_empty(), "no *.test.js in {}", dir.display());
    files
}

async fn read_to_string(mut stream: impl AsyncRead + Unpin) -> String {
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes).await;
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A reading as a sensor publishes it, and the points addReadingToDb must make of it.
struct Published {
    topic: &'static str,
    payload: &'static [u8],
    /// `datacenter_id` and `device_fingerprint` tags (`topic` is added).
    tags: &'static [(&'static str, &'static str)],
    /// measurement -> the point's `value`.
    values: &'static [(&'static str, f64)],
    /// The reading's own time in ns; `None`: the message's `received_at`.
    own_time: Option<i64>,
}

const SINGLE: &[Published] = &[Published {
    topic: "dc1/sensors/t1",
    payload: br#"{"datacenter_id":"dc1","device_fingerprint":"a1b2","temperature":21.5,"humidity":40,"gas_perc":3}"#,
    tags: &[("datacenter_id", "dc1"), ("device_fingerprint", "a1b2")],
    values: &[("temperature", 21.5), ("humidity", 40.0), ("gas_perc", 3.0)],
    own_time: None,
}];

/// Five readings, one batch: escaping, the fire's datacenter_id, an own timestamp past
/// 2^53, a payload that is not UTF-8 (sent base64) and a null value, both skipped.
const BATCH: &[Published] = &[
    Published {
        topic: "dc1/sensors/rack 3",
        payload:
            br#"{"device_fingerprint":"rack 3, slot=2 \"b\"","temperature":19.25,"humidity":51}"#,
        tags: &[
            ("datacenter_id", "dc1"),
            ("device_fingerprint", r#"rack 3, slot=2 "b""#),
        ],
        values: &[("temperature", 19.25), ("humidity", 51.0)],
        own_time: None,
    },
    Published {
        topic: "dc1/sensors/t2",
        payload:
            r#"{"datacenter_id":"dc1-été","device_fingerprint":"capteur ☃ 温度","gas_perc":0.5}"#
                .as_bytes(),
        tags: &[
            ("datacenter_id", "dc1-été"),
            ("device_fingerprint", "capteur ☃ 温度"),
        ],
        values: &[("gas_perc", 0.5)],
        own_time: None,
    },
    Published {
        topic: "dc1/sensors/t3",
        payload: br#"{"device_fingerprint":"c3","temperature":-4,"ts":1732417200123456789}"#,
        tags: &[("datacenter_id", "dc1"), ("device_fingerprint", "c3")],
        values: &[("temperature", -4.0)],
        own_time: Some(1_732_417_200_123_456_789),
    },
    Published {
        topic: "dc1/sensors/t4",
        payload: b"\xff\xfe{\"temperature\":1}",
        tags: &[],
        values: &[],
        own_time: None,
    },
    Published {
        topic: "dc1/sensors/t5",
        payload: br#"{"device_fingerprint":"d4","humidity":null,"temperature":22}"#,
        tags: &[("datacenter_id", "dc1"), ("device_fingerprint", "d4")],
        values: &[("temperature", 22.0)],
        own_time: None,
    },
];

/// The issue's end-to-end check: a message fire (no batching) and a batch fire
/// (FIRE_BATCH_MAX=5), as the real provider POSTed them to the fake OpenWhisk, fed to
/// addReadingToDb against the fake InfluxDB; every reading is its points, with its tags,
/// fields and time, in one write per fire.
#[tokio::test]
async fn fires_from_the_real_provider_are_written_by_add_reading_to_db() {
    let node = node();
    let batching = [
        ("FIRE_BATCH_MAX", "5".to_owned()),
        // Only fullness cuts the batch: all five in one fire.
        ("FIRE_BATCH_WAIT_MS", "60000".to_owned()),
    ];
    let (single, batch) = tokio::join!(fire_of(SINGLE, &[]), fire_of(BATCH, &batching));
    assert_eq!(single.body["type"], "message");
    assert_eq!(batch.body["type"], "batch");
    assert_eq!(
        batch.body["messages"][3]["encoding"], "base64",
        "the provider sends a payload that is not UTF-8 base64-encoded"
    );

    let single_out = write_fire(&node, &single.raw_body).await;
    assert_eq!(
        single_out["result"],
        json!({"written": 3, "skipped": 0, "reasons": []})
    );
    assert_points(&single_out, SINGLE, &single.body);

    let batch_out = write_fire(&node, &batch.raw_body).await;
    let result = &batch_out["result"];
    assert_eq!(result["written"], 5, "{result}");
    assert_eq!(result["skipped"], 2, "{result}");
    let reasons = result["reasons"].to_string();
    assert!(
        reasons.contains("messages[3] on dc1/sensors/t4") && reasons.contains("not UTF-8"),
        "{reasons}"
    );
    assert!(
        reasons.contains(r#"messages[4] on dc1/sensors/t5"#)
            && reasons.contains(r#"\"humidity\" is null"#),
        "{reasons}"
    );
    assert_points(&batch_out, BATCH, &batch.body);
}

/// Publishes `readings` to a provider of its own (with `env` added) and returns the one
/// fire they make.
async fn fire_of(readings: &[Published], env: &[(&'static str, String)]) -> RecordedFire {
    let mut scenario = Scenario::start().await;
    scenario.extra_env.extend(env.iter().cloned());
    let _provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    for reading in readings {
        publisher
            .publish(reading.topic, reading.payload, QoS::AtLeastOnce, false)
            .await;
    }
    publisher.wait_all_acked(DEADLINE).await;
    wait_until("the provider's fire", DEADLINE, || {
        !scenario.ow.accepted().is_empty()
    })
    .await;
    let mut fires = scenario.ow.accepted();
    assert_eq!(fires.len(), 1, "one fire for {} readings", readings.len());
    fires.remove(0)
}

/// Runs actions/test/write_fire.js on `raw_body`: `{result, writes, points}`.
async fn write_fire(node: &Path, raw_body: &[u8]) -> Value {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("fire.json");
    std::fs::write(&file, raw_body).expect("write the fire");
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("actions/test/write_fire.js");
    let output = guarded_command(node).arg(&driver).arg(&file).output();
    let output = tokio::time::timeout(DEADLINE, output)
        .await
        .expect("write_fire.js finished in time")
        .expect("node runs write_fire.js");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "addReadingToDb failed on {}: {}\n{stdout}\n{}",
        String::from_utf8_lossy(raw_body),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("write_fire.js printed {stdout:?}: {e}"));
    assert_eq!(out["writes"], 1, "one InfluxDB write per fire: {out}");
    out
}

/// Every value of `readings` is exactly one stored point with its tags, `value` field and
/// time (its own, else its message's `received_at` from `fire`), and there is no other.
fn assert_points(out: &Value, readings: &[Published], fire: &Value) {
    let messages = match fire["messages"].as_array() {
        Some(messages) => messages.clone(),
        None => vec![fire.clone()],
    };
    let points = out["points"].as_array().expect("points");
    let mut expected_count = 0;
    for reading in readings {
        let message = messages
            .iter()
            .find(|m| m["topic"] == reading.topic)
            .unwrap_or_else(|| panic!("no message on {} in {fire}", reading.topic));
        let received_at = message["received_at"].as_str().expect("received_at");
        let time = reading.own_time.unwrap_or_else(|| {
            DateTime::parse_from_rfc3339(received_at)
                .expect("received_at is RFC 3339")
                .timestamp_nanos_opt()
                .expect("received_at in range")
        });
        let mut tags: BTreeMap<&str, &str> = reading.tags.iter().copied().collect();
        tags.insert("topic", reading.topic);
        for (measurement, value) in reading.values {
            expected_count += 1;
            let matching: Vec<&Value> = points
                .iter()
                .filter(|p| p["measurement"] == *measurement && p["tags"]["topic"] == reading.topic)
                .collect();
            assert_eq!(
                matching.len(),
                1,
                "one {measurement} point from {}: {out}",
                reading.topic
            );
            let point = matching[0];
            assert_eq!(point["tags"], json!(tags), "{point}");
            let fields = point["fields"].as_object().expect("fields");
            assert_eq!(fields.len(), 1, "the one field value: {point}");
            assert_eq!(fields["value"].as_f64(), Some(*value), "{point}");
            assert_eq!(point["time"], time.to_string(), "{point}");
        }
    }
    assert_eq!(points.len(), expected_count, "no other points: {out}");
}
