//! What nats-server 2.9 does differently from Mosquitto 2.0, for the provider: the
//! differences README's "Brokers tested" lists, each shown by the broker itself.

use std::collections::BTreeSet;
use std::time::Duration;

use rumqttc::{AsyncClient, MqttOptions, QoS, SubscribeReasonCode};

use crate::harness::{
    Down, NatsOptions, NatsServer, Publisher, connect_persistent, next_publish,
    queue_across_a_restart, subscribe, unique_id,
};

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn nats_server_keeps_sessions_and_queued_messages_across_a_sigkill() {
    // Mosquitto loses everything since its last autosave here; JetStream wrote it all.
    // A short ack_wait: a message delivered to the subscriber just before it went away
    // comes back within a second instead of thirty (and then out of order).
    let mut nats = NatsServer::start(NatsOptions {
        ack_wait: Some(Duration::from_secs(1)),
        ..NatsOptions::default()
    })
    .await;
    let queue = queue_across_a_restart(&mut nats, Down::Sigkill).await;
    assert!(
        queue.session_present,
        "the session did not survive a SIGKILL"
    );
    let sorted = |mut payloads: Vec<String>| {
        payloads.sort();
        payloads
    };
    assert_eq!(
        sorted(queue.received),
        sorted(queue.published),
        "log:\n{}",
        nats.log()
    );
}

#[tokio::test]
async fn nats_server_holds_max_ack_pending_and_resends_after_ack_wait_on_the_same_connection() {
    let nats = NatsServer::start(NatsOptions {
        ack_wait: Some(Duration::from_secs(1)),
        max_ack_pending: Some(5),
    })
    .await;
    let topic = format!("differences/{}", unique_id("window"));
    let (client, mut event_loop, _) =
        connect_persistent(&nats, &unique_id("differences-sub"), |options| {
            options.set_manual_acks(true);
        })
        .await;
    subscribe(&client, &mut event_loop, &topic, QoS::AtLeastOnce).await;
    let publisher = Publisher::connect(&nats.url(), &unique_id("differences-pub")).await;
    for seq in 0..10 {
        let payload = seq.to_string();
        publisher
            .publish(&topic, payload, QoS::AtLeastOnce, false)
            .await;
    }
    publisher.wait_all_acked(TIMEOUT).await;

    // Five in flight, none acknowledged: the sixth to arrive is not message 5 but message
    // 0 again, once ack_wait has passed, on this very connection (Mosquitto would resend
    // it only after a reconnect), with the same packet id and DUP set.
    let mut window = Vec::new();
    for _ in 0..5 {
        window.push(next_publish(&mut event_loop, "a message in the window").await);
    }
    let payloads: Vec<&[u8]> = window.iter().map(|p| p.payload.as_ref()).collect();
    assert_eq!(payloads, [b"0", b"1", b"2", b"3", b"4"]);
    assert!(window.iter().all(|publish| !publish.dup));
    let resent = next_publish(&mut event_loop, "message 0 again").await;
    assert_eq!(resent.payload.as_ref(), b"0");
    assert!(resent.dup, "the copy is marked DUP");
    assert_eq!(resent.pkid, window[0].pkid, "the copy keeps its packet id");

    // Acknowledged, the window moves on to the other five.
    for publish in &window {
        client.ack(publish).await.unwrap();
    }
    let mut rest = BTreeSet::new();
    while rest.len() < 5 {
        let publish = next_publish(&mut event_loop, "messages 5 to 9").await;
        if !publish.dup {
            rest.insert(String::from_utf8(publish.payload.to_vec()).unwrap());
            client.ack(&publish).await.unwrap();
        }
    }
    assert_eq!(rest, (5..10).map(|seq| seq.to_string()).collect());
}

#[tokio::test]
async fn nats_server_grants_qos_2_as_qos_1_and_drops_a_qos_2_publisher() {
    let nats = NatsServer::start(NatsOptions::default()).await;
    let topic = format!("differences/{}", unique_id("qos2"));
    let (client, mut event_loop, _) =
        connect_persistent(&nats, &unique_id("differences-sub"), |_| {}).await;
    let granted = subscribe(&client, &mut event_loop, &topic, QoS::ExactlyOnce).await;
    assert_eq!(granted, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);

    let mut options = MqttOptions::new(unique_id("differences-pub"), "127.0.0.1", nats.port());
    options.set_clean_session(true);
    let (publisher, mut publisher_loop) = AsyncClient::new(options, 10);
    publisher
        .publish(&topic, QoS::ExactlyOnce, false, "exactly once")
        .await
        .unwrap();
    let dropped = async { while publisher_loop.poll().await.is_ok() {} };
    tokio::time::timeout(TIMEOUT, dropped)
        .await
        .expect("nats-server closes the connection of a QoS 2 publisher");
    let log = nats.log();
    assert!(log.contains("publish QoS=2 not supported"), "log:\n{log}");
}
