//! A backlog under OpenWhisk's fires-per-minute limit drains at the limit (issue 8, case
//! 1): the pipeline holds more than a minute's allowance, the 429 pause outlasts the
//! keep-alive many times over, and still every minute brings the limit's worth of new
//! readings, with next to no duplicates.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

use crate::harness::{BrokerOptions, poll_until};
use crate::scenario::{Scenario, publish_readings};

/// Fires per wall-clock minute the fake allows.
const LIMIT: u32 = 20;
/// Three minutes' allowance.
const READINGS: u64 = 3 * LIMIT as u64;
/// More than the limit: up to 2 x 16 + 1 messages in the pipeline.
const CONCURRENCY: &str = "16";

#[tokio::test]
async fn a_backlog_drains_at_the_fires_per_minute_limit() {
    let mut scenario = Scenario::with_broker(BrokerOptions {
        max_queued_messages: Some(0),
        max_inflight_messages: Some(1000),
        ..BrokerOptions::default()
    })
    .await;
    scenario.extra_env.extend([
        ("FIRE_CONCURRENCY", CONCURRENCY.to_owned()),
        ("MQTT_KEEP_ALIVE_SECS", "5".to_owned()),
    ]);
    scenario.ow.set_fires_per_minute(Some(LIMIT));
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..READINGS).await;

    // Three minutes' allowance: at most a partial minute, two full ones and one to spare.
    let deadline = Duration::from_secs(5 * 60);
    let all_in = poll_until(deadline, || {
        scenario.ow.delivered().0.len() as u64 >= READINGS
    })
    .await;

    // New readings and copies accepted in each wall-clock minute.
    let mut seen = BTreeSet::new();
    let mut per_minute = BTreeMap::<u64, (u32, u32)>::new();
    for fire in scenario.ow.accepted() {
        let minute = fire.at.duration_since(UNIX_EPOCH).unwrap().as_secs() / 60;
        let seq = serde_json::from_str::<serde_json::Value>(fire.body["body"].as_str().unwrap())
            .unwrap()["seq"]
            .as_u64()
            .unwrap();
        let counts = per_minute.entry(minute).or_default();
        if seen.insert(seq) {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }
    let table: Vec<(u32, u32)> = per_minute.values().copied().collect();
    eprintln!("429 backlog: (new, copies) accepted per minute {table:?}");
    let (delivered, duplicates) = scenario.ow.delivered();
    assert!(
        all_in,
        "{} of {READINGS} readings in after {deadline:?}: {table:?}",
        delivered.len()
    );
    // Every minute but the last uses the whole allowance (one fire may straddle a minute
    // boundary between the fake's clock and its record).
    for (new, copies) in &table[..table.len() - 1] {
        assert!(
            new + copies >= LIMIT - 1,
            "a minute's allowance went unused: {table:?}"
        );
    }
    assert!(
        duplicates * 20 < READINGS as usize,
        "{duplicates} duplicates of {READINGS}: {table:?}"
    );
    assert_eq!(
        provider.metric("mqtt_whisk_mqtt_reconnects_total").await,
        Some(0.0)
    );
}
