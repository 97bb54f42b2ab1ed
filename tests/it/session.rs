//! Acks and broker sessions (SPEC section 4), against a scripted broker that produces on
//! demand what a real one does only by chance: publishes and a closed connection in one
//! segment, then a session that is either resumed or lost.

use std::time::Duration;

use rumqttc::Packet;

use crate::harness::{
    Daemon, FakeOpenWhisk, Fault, ScriptedBroker, publish, unique_id, wait_until,
};
use crate::scenario::{FILTER, TRIGGER, reading};

const DEADLINE: Duration = Duration::from_secs(60);

async fn start(broker: &ScriptedBroker, extra: &[(&'static str, &str)]) -> (FakeOpenWhisk, Daemon) {
    let ow = FakeOpenWhisk::start().await;
    ow.create_trigger(TRIGGER, true);
    let mut env = vec![
        ("MQTT_URL", broker.url()),
        ("MQTT_TOPICS", FILTER.to_owned()),
        ("MQTT_CLIENT_ID", unique_id("provider")),
        ("OW_API_HOST", ow.api_host()),
        ("OW_AUTH", ow.auth()),
        ("OW_TRIGGER", TRIGGER.to_owned()),
    ];
    env.extend(extra.iter().map(|(name, value)| (*name, value.to_string())));
    let provider = Daemon::spawn(&env).await;
    (ow, provider)
}

/// Readings `seqs`, each published with its sequence number as packet id.
fn publishes(seqs: std::ops::RangeInclusive<u64>, dup: bool) -> Vec<Packet> {
    seqs.map(|seq| {
        let (topic, payload) = reading(seq);
        publish(&topic, payload, seq as u16, dup)
    })
    .collect()
}

#[tokio::test]
async fn publishes_read_as_the_connection_failed_are_fired_but_never_acked_on_a_new_session() {
    let broker = ScriptedBroker::bind().await;
    let (ow, _provider) = start(&broker, &[("FIRE_CONCURRENCY", "1")]).await;
    ow.set_fault(Fault::Slow(Duration::from_secs(2)));
    let mut first = broker.accept(false).await;
    first.grant_subscription().await;
    // One reading being fired, one waiting for the forwarder, one the source holds: it
    // reads nothing more until OpenWhisk answers (back-pressure).
    first.send(&publishes(1..=3, false)).await;
    wait_until("a fire in flight", DEADLINE, || ow.in_flight() >= 1).await;
    // So these and the end of the connection are read together, in one read.
    first.send_and_close(&publishes(4..=8, false)).await;
    ow.set_fault(Fault::None);

    // The broker lost the session: packet ids 1 to 8 will name other messages now.
    let mut second = broker.accept(false).await;
    second.grant_subscription().await;
    wait_until("every reading received is fired", DEADLINE, || {
        ow.delivered().0.len() >= 8
    })
    .await;
    second.send(&publishes(100..=100, false)).await;
    let acked = second.pubacks_until(&[100]).await;
    assert_eq!(
        acked,
        [100],
        "acks of the lost session's messages reached the new one, deleting messages never fired"
    );
}

#[tokio::test]
async fn a_resumed_session_keeps_earlier_acks_and_does_not_refire_resent_copies() {
    let broker = ScriptedBroker::bind().await;
    let (ow, _provider) = start(&broker, &[]).await;
    // Slow enough that the copies arrive while the first ones are still being fired.
    ow.set_fault(Fault::Slow(Duration::from_secs(2)));
    let mut first = broker.accept(false).await;
    first.grant_subscription().await;
    first.send_and_close(&publishes(1..=5, false)).await;

    // As Mosquitto does on a resumed session: the unacknowledged messages again, DUP set.
    let mut second = broker.accept(true).await;
    second.send(&publishes(1..=5, true)).await;
    let mut acked = second.pubacks_until(&[1, 2, 3, 4, 5]).await;
    acked.sort_unstable();
    assert_eq!(acked, [1, 2, 3, 4, 5], "each message acked once");

    // A marker after the copies: once it is fired, so would any copy have been.
    ow.set_fault(Fault::None);
    second.send(&publishes(6..=6, false)).await;
    second.pubacks_until(&[6]).await;
    let (delivered, duplicates) = ow.delivered();
    assert_eq!(delivered.len(), 6);
    assert_eq!(
        duplicates, 0,
        "a resent copy of a message being fired was fired again"
    );
}
