//! What operators see: exact metrics for a known workload, JSON logs that parse line by
//! line, and secrets that never show up in either.

use std::time::Duration;

use rumqttc::QoS;
use serde_json::Value;

use crate::harness::{BrokerOptions, Daemon, Fault, wait_until, wait_until_async};
use crate::scenario::{Scenario, TRIGGER, password_file_config, publish_readings};

const DEADLINE: Duration = Duration::from_secs(60);

fn fires_total(outcome: &str, status: &str) -> String {
    format!(r#"mqtt_whisk_fires_total{{kind="message",outcome="{outcome}",status="{status}"}}"#)
}

#[tokio::test]
async fn metrics_count_a_known_workload_exactly() {
    let scenario = Scenario::start().await;
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;

    // 1: accepted after some 503s.
    scenario.ow.set_fault(Fault::Status(503));
    publish_readings(&publisher, 0..1).await;
    wait_until("three 503s", DEADLINE, || {
        scenario.ow.count_status(503) >= 3
    })
    .await;
    scenario.ow.set_fault(Fault::None);
    scenario.wait_delivered(1, DEADLINE).await;
    // 2 to 5: accepted at once.
    publish_readings(&publisher, 1..5).await;
    scenario.wait_delivered(5, DEADLINE).await;
    // 2 more: no active rule.
    scenario.ow.create_trigger(TRIGGER, false);
    publish_readings(&publisher, 5..7).await;
    wait_until("two 204s", DEADLINE, || scenario.ow.count_status(204) == 2).await;
    // 1 more: rejected with 400.
    scenario
        .ow
        .set_fault(Fault::RejectBodiesContaining("poison".into(), 400));
    publisher
        .publish("dc1/sensors/t1", "poison", QoS::AtLeastOnce, false)
        .await;

    let retried_503 = scenario.ow.count_status(503) as f64;
    let expected = [
        (fires_total("accepted", "202"), 5.0),
        (fires_total("retried", "503"), retried_503),
        (fires_total("no_active_rule", "204"), 2.0),
        (fires_total("rejected", "400"), 1.0),
        (
            r#"mqtt_whisk_messages_received_total{filter="dc1/sensors/#"}"#.to_owned(),
            8.0,
        ),
        (
            r#"mqtt_whisk_fire_duration_seconds_count{kind="message"}"#.to_owned(),
            8.0,
        ),
        ("mqtt_whisk_fires_in_flight".to_owned(), 0.0),
        (
            format!(
                r#"mqtt_whisk_mqtt_connected{{connection="{}"}}"#,
                scenario.client_id
            ),
            1.0,
        ),
        ("mqtt_whisk_mqtt_reconnects_total".to_owned(), 0.0),
        ("mqtt_whisk_namespace_pauses_total".to_owned(), 0.0),
    ];
    wait_until_async("the rejection counted", DEADLINE, || async {
        provider.metric(&fires_total("rejected", "400")).await == Some(1.0)
    })
    .await;
    for (series, value) in expected {
        assert_eq!(provider.metric(&series).await, Some(value), "{series}");
    }
    let (status, text) = provider.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE mqtt_whisk_fire_duration_seconds histogram"));
}

#[tokio::test]
async fn every_log_line_is_a_json_object_and_no_secret_is_ever_written() {
    let dir = tempfile::tempdir().unwrap();
    // Anonymous publishers stay allowed; a client that names a user must match the file.
    let mut scenario = Scenario::with_broker(BrokerOptions {
        max_queued_messages: Some(0),
        extra_config: password_file_config(dir.path(), "dc1", "BROKER-PASSWORD-42"),
        ..BrokerOptions::default()
    })
    .await;
    let password_file = dir.path().join("mqtt-password");
    std::fs::write(&password_file, "BROKER-PASSWORD-42\n").unwrap();
    scenario.extra_env.extend([
        ("MQTT_USERNAME", "dc1".to_owned()),
        ("MQTT_PASSWORD_FILE", password_file.display().to_string()),
    ]);
    let key = scenario.ow.auth().split_once(':').unwrap().1.to_owned();

    scenario.ow.set_fault(Fault::Status(503));
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..20).await;
    wait_until("failing fires", DEADLINE, || {
        scenario.ow.count_status(503) >= 5
    })
    .await;
    scenario.ow.set_fault(Fault::None);
    scenario.wait_delivered(20, DEADLINE).await;

    // A second provider with a wrong password: refused, and told why.
    let mut wrong = scenario.env();
    wrong.retain(|(k, _)| *k != "MQTT_PASSWORD_FILE" && *k != "MQTT_CLIENT_ID");
    wrong.push(("MQTT_PASSWORD", "WRONG-PASSWORD-7".to_owned()));
    wrong.push(("MQTT_CLIENT_ID", crate::harness::unique_id("wrong")));
    let refused = Daemon::spawn(&wrong).await;
    refused
        .wait_for_log("refused the credentials", DEADLINE)
        .await;

    for daemon in [&provider, &refused] {
        for line in daemon.logs() {
            let parsed: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
            for field in ["timestamp", "level", "target"] {
                assert!(parsed[field].is_string(), "no {field}: {line}");
            }
            assert!(
                parsed["fields"]["message"].is_string(),
                "no message: {line}"
            );
            for secret in [key.as_str(), "BROKER-PASSWORD-42", "WRONG-PASSWORD-7"] {
                assert!(!line.contains(secret), "a secret in the log: {line}");
            }
        }
    }
}
