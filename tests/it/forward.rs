//! What a message fire looks like, and the answers OpenWhisk gives that end a delivery.

use std::time::Duration;

use base64::Engine;
use rumqttc::QoS;
use serde_json::json;

use crate::harness::{Fault, wait_until, wait_until_async};
use crate::scenario::{FILTER, Scenario, TRIGGER};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn every_message_on_every_filter_fires_the_exact_spec_json() {
    let mut scenario = Scenario::start().await;
    scenario
        .extra_env
        .push(("MQTT_TOPICS", format!("{FILTER}, dc1/+/status")));
    let publisher = scenario.publisher().await;
    // Retained before the provider subscribes, so it arrives flagged as retained.
    publisher
        .publish("dc1/gw7/status", "online", QoS::AtLeastOnce, true)
        .await;
    publisher.wait_all_acked(DEADLINE).await;
    let provider = scenario.spawn_provider().await;

    publisher
        .publish(
            "dc1/sensors/t1",
            r#"{"temperature":21.5}"#,
            QoS::AtLeastOnce,
            false,
        )
        .await;
    publisher
        .publish(
            "dc1/sensors/raw/t2",
            vec![0xff, 0x00, 0x41],
            QoS::AtLeastOnce,
            false,
        )
        .await;
    publisher
        .publish("dc2/sensors/t1", "not subscribed", QoS::AtLeastOnce, false)
        .await;
    publisher.wait_all_acked(DEADLINE).await;
    wait_until("three fires accepted", DEADLINE, || {
        scenario.ow.accepted().len() >= 3
    })
    .await;

    let fires = scenario.ow.accepted();
    let by_topic = |topic: &str| {
        fires
            .iter()
            .find(|f| f.body["topic"] == topic)
            .unwrap()
            .clone()
    };
    let reading = by_topic("dc1/sensors/t1");
    let received_at = reading.body["received_at"].as_str().unwrap().to_owned();
    let message_id = reading.body["message_id"].as_str().unwrap().to_owned();
    assert_eq!(
        reading.body,
        json!({
            "type": "message", "topic": "dc1/sensors/t1", "body": r#"{"temperature":21.5}"#,
            "qos": 1, "retain": false, "received_at": received_at, "message_id": message_id,
            "datacenter_id": "dc1", "influx_url": "http://influxdb-dc1:8086"
        })
    );
    // The process's boot id (16 hex digits) and the receipt number: one per message.
    let (boot, seq) = message_id.split_once('-').unwrap();
    assert!(boot.len() == 16 && boot.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(seq.parse::<u64>().is_ok());
    let ids: std::collections::BTreeSet<&str> = fires
        .iter()
        .map(|f| f.body["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), fires.len(), "every message has its own id");
    assert!(
        chrono::DateTime::parse_from_rfc3339(&received_at).is_ok() && received_at.ends_with('Z')
    );
    assert_eq!(reading.trigger, TRIGGER);
    assert_eq!(reading.namespace, "_");
    let auth = reading
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(scenario.ow.auth());
    assert_eq!(auth.1, format!("Basic {encoded}"));
    assert!(
        reading
            .headers
            .contains(&("content-type".into(), "application/json".into()))
    );

    let status = by_topic("dc1/gw7/status");
    assert_eq!(status.body["body"], "online");
    assert_eq!(status.body["retain"], true);

    let binary = by_topic("dc1/sensors/raw/t2");
    assert_eq!(binary.body["body"], "/wBB");
    assert_eq!(binary.body["encoding"], "base64");

    assert!(fires.iter().all(|f| f.body["topic"] != "dc2/sensors/t1"));
    assert_eq!(
        provider
            .metric(r#"mqtt_whisk_messages_received_total{filter="dc1/+/status"}"#)
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn trigger_and_namespace_names_are_percent_encoded() {
    let mut scenario = Scenario::start().await;
    let trigger = "readings dc1@fog.eu&x-1";
    scenario.ow.create_trigger(trigger, true);
    scenario.extra_env.push(("OW_TRIGGER", trigger.to_owned()));
    scenario
        .extra_env
        .push(("OW_NAMESPACE", scenario.ow.namespace().to_owned()));
    let _provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publisher
        .publish("dc1/sensors/t1", "1", QoS::AtLeastOnce, false)
        .await;
    wait_until("the fire accepted", DEADLINE, || {
        !scenario.ow.accepted().is_empty()
    })
    .await;
    let fire = &scenario.ow.accepted()[0];
    assert_eq!(fire.trigger, trigger);
    assert_eq!(fire.namespace, scenario.ow.namespace());
}

#[tokio::test]
async fn no_active_rule_is_accepted_acknowledged_and_warned_once() {
    let scenario = Scenario::start().await;
    scenario.ow.create_trigger(TRIGGER, false);
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    crate::scenario::publish_readings(&publisher, 0..20).await;
    let duplicates = scenario.wait_delivered(20, DEADLINE).await;
    assert_eq!(duplicates, 0);
    assert_eq!(scenario.ow.count_status(204), 20);
    let warnings = provider
        .logs()
        .iter()
        .filter(|l| l.contains("no active rule"))
        .count();
    assert_eq!(warnings, 1, "one warning per interval, not one per message");
    let counted = r#"mqtt_whisk_fires_total{kind="message",outcome="no_active_rule",status="204"}"#;
    assert_eq!(provider.metric(counted).await, Some(20.0));
}

#[tokio::test]
async fn messages_that_can_never_be_accepted_are_logged_counted_acked_and_the_stream_goes_on() {
    let mut scenario = Scenario::start().await;
    // Above OpenWhisk's real limit, so the fake controller's 413 is exercised.
    scenario
        .extra_env
        .push(("FIRE_MAX_PAYLOAD_BYTES", "2000000".into()));
    scenario
        .ow
        .set_fault(Fault::RejectBodiesContaining("poison".into(), 400));
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;

    crate::scenario::publish_readings(&publisher, 0..5).await;
    publisher
        .publish(
            "dc1/sensors/big",
            vec![b'x'; 1_200_000],
            QoS::AtLeastOnce,
            false,
        )
        .await;
    publisher
        .publish(
            "dc1/sensors/huge",
            vec![b'y'; 2_500_000],
            QoS::AtLeastOnce,
            false,
        )
        .await;
    publisher
        .publish("dc1/sensors/bad", "poison", QoS::AtLeastOnce, false)
        .await;
    crate::scenario::publish_readings(&publisher, 5..10).await;

    scenario.wait_delivered(10, DEADLINE).await;
    let rejected = |status: &str| {
        format!(r#"mqtt_whisk_fires_total{{kind="message",outcome="rejected",status="{status}"}}"#)
    };
    wait_until_async("three rejections counted", DEADLINE, || async {
        let (a, b, c) = (
            provider.metric(&rejected("413")).await,
            provider.metric(&rejected("local")).await,
            provider.metric(&rejected("400")).await,
        );
        (a, b, c) == (Some(1.0), Some(1.0), Some(1.0))
    })
    .await;
    assert_eq!(
        scenario.ow.count_status(413),
        1,
        "the too-large message is sent once, not retried"
    );
    assert_eq!(scenario.ow.count_status(400), 1);
    let logs = provider.log_text();
    for topic in ["dc1/sensors/big", "dc1/sensors/huge", "dc1/sensors/bad"] {
        assert!(logs.contains(topic), "no log names {topic}");
    }
    assert!(logs.contains("\"size\":2500"), "the log gives the size");
    assert!(
        logs.contains("\"payload_bytes\":2500000"),
        "and the reading's own size next to it"
    );

    // Acknowledged: a restart with the same session brings none of them back.
    let (_again, after) = scenario.fires_after_a_restart(provider, &publisher).await;
    assert!(
        after.iter().all(|f| f.body["topic"] == "dc1/sensors/after"),
        "{after:?}"
    );
}

#[tokio::test]
async fn readiness_names_what_is_wrong() {
    let scenario = Scenario::start().await;
    scenario.ow.delete_trigger(TRIGGER);
    let provider = scenario.spawn_provider().await;
    wait_until_async("readyz names the missing trigger", DEADLINE, || async {
        let (status, body) = provider.get("/readyz").await;
        status == 503 && body.contains("does not exist")
    })
    .await;
    assert_eq!(provider.get("/healthz").await.0, 200);
    assert_eq!(
        provider.metric("mqtt_whisk_ready").await,
        Some(0.0),
        "as /readyz says"
    );

    scenario.ow.create_trigger(TRIGGER, true);
    let publisher = scenario.publisher().await;
    crate::scenario::publish_readings(&publisher, 0..1).await;
    provider.wait_ready(DEADLINE).await;
    assert_eq!(
        provider.metric("mqtt_whisk_ready").await,
        Some(1.0),
        "as /readyz says"
    );
}

#[tokio::test]
async fn readiness_reports_a_missing_broker() {
    let mut scenario = Scenario::start().await;
    let provider = scenario.spawn_provider().await;
    provider.wait_ready(DEADLINE).await;
    scenario.broker.stop().await;
    wait_until_async("readyz reports the broker", DEADLINE, || async {
        let (status, body) = provider.get("/readyz").await;
        status == 503 && body.contains("not connected to the MQTT broker")
    })
    .await;
    scenario.broker.restart().await;
    provider.wait_ready(DEADLINE).await;
    let lost = provider
        .logs()
        .iter()
        .filter(|l| l.contains("lost the MQTT broker"))
        .count();
    assert_eq!(lost, 1, "one log line per state change");
}

/// `rumqttc::matches`, which counted messages per filter, sliced the topic's first byte
/// and panicked on a topic starting with a non-ASCII character, taking the MQTT task
/// down; routing walks whole levels instead.
#[tokio::test]
async fn a_topic_starting_with_a_non_ascii_character_is_fired_like_any_other() {
    let mut scenario = Scenario::start().await;
    scenario.extra_env.push(("MQTT_TOPICS", "#".to_owned()));
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    for topic in ["é/sensors/t1", "dc1/sensors/t1"] {
        publisher
            .publish(topic, r#"{"temperature":21.5}"#, QoS::AtLeastOnce, false)
            .await;
    }
    publisher.wait_all_acked(DEADLINE).await;
    wait_until("both fires accepted", DEADLINE, || {
        scenario.ow.accepted().len() >= 2
    })
    .await;
    // Fired concurrently: in either order.
    let topics: std::collections::BTreeSet<String> = scenario
        .ow
        .accepted()
        .iter()
        .map(|f| f.body["topic"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        topics,
        ["dc1/sensors/t1", "é/sensors/t1"].map(String::from).into()
    );
    let (status, _) = provider.get("/healthz").await;
    assert_eq!(status, 200);
}
