//! Batching (SPEC section 3): a batch is cut when full, when its wait is over, or before
//! its JSON would pass the payload limit; its messages are acked only after its fire.

use std::time::Duration;

use rumqttc::QoS;
use serde_json::{Value, json};

use crate::harness::{Fault, RecordedFire, wait_until, wait_until_async};
use crate::scenario::{Scenario, publish_readings};

const DEADLINE: Duration = Duration::from_secs(60);

fn batches(scenario: &Scenario) -> Vec<RecordedFire> {
    scenario
        .ow
        .accepted()
        .into_iter()
        .filter(|f| f.body["type"] == "batch")
        .collect()
}

fn sizes(batches: &[RecordedFire]) -> Vec<usize> {
    batches
        .iter()
        .map(|b| b.body["messages"].as_array().unwrap().len())
        .collect()
}

fn batching(scenario: &mut Scenario, max: usize, wait_ms: u64) {
    scenario.extra_env.extend([
        ("FIRE_BATCH_MAX", max.to_string()),
        ("FIRE_BATCH_WAIT_MS", wait_ms.to_string()),
    ]);
}

#[tokio::test]
async fn a_full_batch_is_sent_at_once_and_carries_the_spec_json() {
    let mut scenario = Scenario::start().await;
    batching(&mut scenario, 10, 60_000);
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..20).await;
    // The wait is a minute: only fullness can have cut these two.
    scenario.wait_delivered(20, DEADLINE).await;
    let batches = batches(&scenario);
    assert_eq!(sizes(&batches), [10, 10]);

    let first = &batches[0].body;
    assert_eq!(first["datacenter_id"], "dc1");
    assert_eq!(
        first.as_object().unwrap().len(),
        4,
        "type, messages and FIRE_PARAMS"
    );
    let message = &first["messages"][0];
    let keys: Vec<&str> = message
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "body",
            "message_id",
            "qos",
            "received_at",
            "retain",
            "topic"
        ]
    );
    assert_eq!(message["qos"], json!(1));
    let counted = r#"mqtt_whisk_fires_total{kind="batch",outcome="accepted",status="202"}"#;
    assert_eq!(provider.metric(counted).await, Some(2.0));
}

#[tokio::test]
async fn a_partial_batch_is_sent_when_its_wait_is_over() {
    let mut scenario = Scenario::start().await;
    batching(&mut scenario, 1_000, 300);
    let _provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..3).await;
    scenario.wait_delivered(3, DEADLINE).await;
    let total: usize = sizes(&batches(&scenario)).iter().sum();
    assert_eq!(total, 3, "far from full, yet sent");
}

#[tokio::test]
async fn batches_stay_under_the_payload_limit_and_an_oversized_message_is_rejected_alone() {
    let mut scenario = Scenario::start().await;
    batching(&mut scenario, 100, 500);
    scenario
        .extra_env
        .push(("FIRE_MAX_PAYLOAD_BYTES", "5000".into()));
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    let padding = "x".repeat(900);
    for seq in 0..20u64 {
        let payload = format!(r#"{{"seq":{seq},"padding":"{padding}"}}"#);
        publisher
            .publish(
                &format!("dc1/sensors/t{}", seq % 10),
                payload,
                QoS::AtLeastOnce,
                false,
            )
            .await;
    }
    publisher
        .publish(
            "dc1/sensors/huge",
            "y".repeat(6000),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    publisher.wait_all_acked(DEADLINE).await;
    scenario.wait_delivered(20, DEADLINE).await;

    let batches = batches(&scenario);
    assert!(
        batches.len() >= 4,
        "20 readings of ~1 kB cannot fit in fewer than 4 fires of 5 kB"
    );
    for batch in &batches {
        assert!(
            batch.raw_body.len() <= 5000,
            "batch of {} bytes",
            batch.raw_body.len()
        );
    }
    let rejected = r#"mqtt_whisk_fires_total{kind="batch",outcome="rejected",status="local"}"#;
    wait_until("the oversized message rejected", DEADLINE, || {
        provider.log_text().contains("dc1/sensors/huge")
    })
    .await;
    assert_eq!(provider.metric(rejected).await, Some(1.0));
}

#[tokio::test]
async fn nothing_is_lost_when_batch_fires_fail() {
    let mut scenario = Scenario::start().await;
    batching(&mut scenario, 50, 100);
    scenario.ow.set_fault(Fault::Status(503));
    let _provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..500).await;
    wait_until("batch fires failing", DEADLINE, || {
        scenario.ow.count_status(503) >= 5
    })
    .await;
    scenario.ow.set_fault(Fault::None);
    let duplicates = scenario.wait_delivered(500, DEADLINE).await;
    eprintln!("failed batch fires: 500 readings delivered, {duplicates} duplicates");
}

#[tokio::test]
async fn a_batch_over_openwhisks_limit_is_split_and_only_a_reading_too_large_alone_is_rejected() {
    let mut scenario = Scenario::start().await;
    batching(&mut scenario, 50, 200);
    // The namespace's limit is far below FIRE_MAX_PAYLOAD_BYTES (1 MiB): a full batch of
    // readings (~10 kB) gets 413, a single one (~200 bytes) fits.
    scenario.ow.set_max_payload_bytes(4_000);
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..200).await;
    let too_large = format!(r#"{{"seq":200,"padding":"{}"}}"#, "x".repeat(5_000));
    publisher
        .publish("dc1/sensors/huge", too_large, QoS::AtLeastOnce, false)
        .await;
    publish_readings(&publisher, 201..300).await;

    let expected: std::collections::BTreeSet<u64> = (0..300).filter(|&seq| seq != 200).collect();
    wait_until("every reading but the huge one accepted", DEADLINE, || {
        scenario.ow.delivered().0 == expected
    })
    .await;
    let rejected_messages = "mqtt_whisk_messages_rejected_total";
    wait_until_async("the huge reading rejected", DEADLINE, || async {
        provider.metric(rejected_messages).await == Some(1.0)
    })
    .await;
    let rejected = r#"mqtt_whisk_fires_total{kind="batch",outcome="rejected",status="413"}"#;
    assert_eq!(provider.metric(rejected).await, Some(1.0));
    assert!(provider.log_text().contains("dc1/sensors/huge"));
    let accepted = scenario.ow.accepted();
    assert!(accepted.iter().all(|fire| fire.body["type"] == "batch"));
    assert!(accepted.iter().all(|fire| fire.raw_body.len() <= 4_000));
    assert_eq!(scenario.ow.delivered().1, 0, "no part was sent twice");

    // Every part was acknowledged: a restart with the same session brings nothing back.
    let (_again, after) = scenario.fires_after_a_restart(provider, &publisher).await;
    let topics: Vec<&Value> = after
        .iter()
        .flat_map(|fire| fire.body["messages"].as_array().unwrap())
        .map(|message| &message["topic"])
        .collect();
    assert_eq!(topics, ["dc1/sensors/after"]);
}
