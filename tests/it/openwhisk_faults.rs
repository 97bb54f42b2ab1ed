//! Answers that are not OpenWhisk accepting a fire, though they may look like one (issue
//! 8): a redirect, a proxy's 400, `Retry-After: 0`, a throttle that comes back every
//! minute. Nothing is lost, `/readyz` names what is wrong, the log stays short.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{BrokerOptions, Fault, wait_until, wait_until_async};
use crate::scenario::{Scenario, TRIGGER, publish_readings};

const DEADLINE: Duration = Duration::from_secs(60);

/// The readings fired at least once, whatever the answer.
fn readings_tried(scenario: &Scenario) -> BTreeSet<u64> {
    let seq = |fire: &crate::harness::RecordedFire| {
        let payload: Value = serde_json::from_str(fire.body["body"].as_str()?).ok()?;
        payload["seq"].as_u64()
    };
    scenario.ow.fires().iter().filter_map(seq).collect()
}

/// Publishes readings `0..count`, waits until OpenWhisk saw every one of them answered
/// with the fault in force, and checks that none was accepted.
async fn publish_into_the_fault(scenario: &Scenario, count: u64) {
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..count).await;
    wait_until("every reading fired into the fault", DEADLINE, || {
        readings_tried(scenario).len() as u64 == count
    })
    .await;
    assert_eq!(scenario.accepted_count(), 0);
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_readings_wait_until_it_is_gone() {
    let scenario = Scenario::start().await;
    scenario.ow.set_fault(Fault::Redirect(301));
    let provider = scenario.spawn_provider().await;
    publish_into_the_fault(&scenario, 10).await;
    let location = format!(
        "{}/api/v1/namespaces/_/triggers/{TRIGGER}",
        scenario.ow.api_host()
    );
    wait_until_async("readyz names the Location", DEADLINE, || async {
        let (status, body) = provider.get("/readyz").await;
        status == 503 && body.contains(&location)
    })
    .await;

    scenario.ow.set_fault(Fault::None);
    scenario.wait_delivered(10, DEADLINE).await;
    provider.wait_ready(DEADLINE).await;
}

#[tokio::test]
async fn a_400_that_is_not_openwhisks_own_is_retried_and_reported_not_ready() {
    let scenario = Scenario::start().await;
    // What nginx answers when plain http is sent to its https port.
    scenario.ow.set_fault(Fault::NginxHtml(400));
    let provider = scenario.spawn_provider().await;
    publish_into_the_fault(&scenario, 10).await;
    wait_until_async("readyz names the 400 and its body", DEADLINE, || async {
        let (status, body) = provider.get("/readyz").await;
        status == 503 && body.contains("400") && body.contains("nginx")
    })
    .await;
    let rejected = r#"mqtt_whisk_fires_total{kind="message",outcome="rejected",status="400"}"#;
    assert_eq!(provider.metric(rejected).await, None, "nothing was dropped");

    scenario.ow.set_fault(Fault::None);
    scenario.wait_delivered(10, DEADLINE).await;
    provider.wait_ready(DEADLINE).await;
}

/// Most requests while 45 readings wait through 10 s of 429s with `Retry-After: 0`: one
/// per reading per second. With the 1 s floor of the namespace's pause and each fire's
/// own backoff on top it makes about 140; without them it made 40,000.
const RETRY_AFTER_0_REQUESTS_BOUND: usize = 45 * 10;

#[tokio::test]
async fn retry_after_0_does_not_turn_45_waiting_readings_into_a_request_storm() {
    // A broker window wide enough for all 45 to wait in the provider, not at the broker.
    let scenario = Scenario::with_broker(BrokerOptions {
        max_queued_messages: Some(0),
        max_inflight_messages: Some(100),
        ..BrokerOptions::default()
    })
    .await;
    scenario.ow.set_fault(Fault::TooManyRequests {
        retry_after_secs: Some(0),
    });
    let _provider = scenario.spawn_provider().await;
    publish_into_the_fault(&scenario, 45).await;
    let before = scenario.ow.fires().len();
    // The 10 s of throttling are the scenario, not a synchronisation.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let requests = scenario.ow.fires().len() - before;

    scenario.ow.set_fault(Fault::None);
    scenario.wait_delivered(45, DEADLINE).await;
    eprintln!("Retry-After: 0 for 10 s with 45 readings waiting: {requests} requests");
    assert!(
        requests <= RETRY_AFTER_0_REQUESTS_BOUND,
        "{requests} requests in 10 s for 45 readings"
    );
}

#[tokio::test]
async fn a_throttle_every_minute_is_warned_about_rarely_and_never_recovered_from() {
    let scenario = Scenario::start().await;
    // 25 readings, 10 fires a minute: 429s in two consecutive minutes at least.
    scenario.ow.set_fires_per_minute(Some(10));
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    // Early in a wall-clock minute, so that the first ten fires and the first 429 fall in
    // one window: a burst that straddled a minute's end could use two windows before its
    // first 429, and then see 429s in one minute only.
    let second_of_minute = || {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.unwrap().as_secs() % 60
    };
    wait_until(
        "the first half of a minute",
        Duration::from_secs(61),
        || second_of_minute() < 30,
    )
    .await;
    publish_readings(&publisher, 0..25).await;
    scenario.wait_delivered(25, Duration::from_secs(200)).await;

    let minutes: BTreeSet<u64> = scenario
        .ow
        .fires()
        .iter()
        .filter(|fire| fire.status == 429)
        .map(|fire| {
            let since_epoch = fire.at.duration_since(std::time::UNIX_EPOCH).unwrap();
            since_epoch.as_secs() / 60
        })
        .collect();
    assert!(
        minutes.iter().any(|m| minutes.contains(&(m + 1))),
        "429s in two consecutive minutes: {minutes:?}"
    );
    let logs = provider.logs();
    let lines = |needle: &str| logs.iter().filter(|line| line.contains(needle)).count();
    let throttle_lines = lines("Too many requests");
    assert!(
        throttle_lines <= 2,
        "{throttle_lines} log lines about the throttle:\n{}",
        provider.log_text()
    );
    assert_eq!(lines("accepting fires again"), 0, "a throttle is no outage");
    assert_eq!(lines("\"ERROR\""), 0, "a throttle is no error");
}
