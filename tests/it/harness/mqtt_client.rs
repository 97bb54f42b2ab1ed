//! A bare rumqttc client, for tests that watch the broker's packets themselves.

use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeReasonCode,
};

use super::{BrokerProgram, MqttBroker, Publisher, unique_id};

/// How long [`next_event`] waits.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects as `client_id` with a persistent session, after `configure` had its say on
/// the options: the client, its event loop and the CONNACK's `session_present`.
pub async fn connect_persistent(
    broker: &MqttBroker<impl BrokerProgram>,
    client_id: &str,
    configure: impl FnOnce(&mut MqttOptions),
) -> (AsyncClient, EventLoop, bool) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", broker.port());
    options.set_clean_session(false);
    configure(&mut options);
    let (client, mut event_loop) = AsyncClient::new(options, 100);
    let session_present = next_event(&mut event_loop, "CONNACK", |event| match event {
        Event::Incoming(Packet::ConnAck(ack)) => Some(ack.session_present),
        _ => None,
    })
    .await;
    (client, event_loop, session_present)
}

/// Polls the event loop until `pick` accepts an event; panics on an MQTT error or after
/// 10 s.
pub async fn next_event<T>(
    event_loop: &mut EventLoop,
    what: &str,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> T {
    let found = async {
        loop {
            let event = event_loop
                .poll()
                .await
                .unwrap_or_else(|e| panic!("MQTT error while waiting for {what}: {e}"));
            if let Some(found) = pick(event) {
                return found;
            }
        }
    };
    tokio::time::timeout(EVENT_TIMEOUT, found)
        .await
        .unwrap_or_else(|_| panic!("timed out after {EVENT_TIMEOUT:?} waiting for {what}"))
}

/// How a broker goes down in [`queue_across_a_restart`].
#[derive(Clone, Copy, Debug)]
pub enum Down {
    Sigterm,
    Sigkill,
}

/// What a persistent session found after [`queue_across_a_restart`].
pub struct QueueAfterRestart {
    /// CONNACK's `session_present` when the subscriber came back.
    pub session_present: bool,
    /// The messages published while it was away, in the order published.
    pub published: Vec<String>,
    /// The first copy of each message it got back, in the order they came.
    pub received: Vec<String>,
}

/// A persistent session subscribes to a topic of its own and leaves; five messages are
/// published at QoS 1; the broker goes `down` and is started again; the session comes
/// back and takes messages until it has five different ones (panicking after 10 s each).
pub async fn queue_across_a_restart<P: BrokerProgram>(
    broker: &mut MqttBroker<P>,
    down: Down,
) -> QueueAfterRestart {
    let subscriber_id = unique_id("queue-sub");
    let topic = format!("selftest/{}", unique_id("queue"));
    let (client, mut event_loop, _) = connect_persistent(broker, &subscriber_id, |_| {}).await;
    subscribe(&client, &mut event_loop, &topic, QoS::AtLeastOnce).await;
    client.disconnect().await.unwrap();
    next_event(&mut event_loop, "our DISCONNECT", |event| {
        matches!(event, Event::Outgoing(Outgoing::Disconnect)).then_some(())
    })
    .await;
    drop(event_loop);

    let publisher = Publisher::connect(&broker.url(), &unique_id("queue-pub")).await;
    let published: Vec<String> = (0..5).map(|seq| format!(r#"{{"seq":{seq}}}"#)).collect();
    for payload in &published {
        publisher
            .publish(&topic, payload.as_str(), QoS::AtLeastOnce, false)
            .await;
    }
    publisher.wait_all_acked(EVENT_TIMEOUT).await;
    drop(publisher);

    match down {
        Down::Sigterm => broker.stop().await,
        Down::Sigkill => broker.kill().await,
    }
    broker.restart().await;

    let (_client, mut event_loop, session_present) =
        connect_persistent(broker, &subscriber_id, |_| {}).await;
    let mut received = Vec::new();
    while session_present && received.len() < published.len() {
        let publish = next_publish(&mut event_loop, "a queued message").await;
        let payload = String::from_utf8(publish.payload.to_vec()).unwrap();
        if !received.contains(&payload) {
            received.push(payload);
        }
    }
    QueueAfterRestart {
        session_present,
        published,
        received,
    }
}

/// Subscribes to `filter` at `qos`; the SUBACK's return codes.
pub async fn subscribe(
    client: &AsyncClient,
    event_loop: &mut EventLoop,
    filter: &str,
    qos: QoS,
) -> Vec<SubscribeReasonCode> {
    client.subscribe(filter, qos).await.unwrap();
    next_event(event_loop, "SUBACK", |event| match event {
        Event::Incoming(Packet::SubAck(ack)) => Some(ack.return_codes),
        _ => None,
    })
    .await
}

/// The next publish the broker sends.
pub async fn next_publish(event_loop: &mut EventLoop, what: &str) -> Publish {
    next_event(event_loop, what, |event| match event {
        Event::Incoming(Packet::Publish(publish)) => Some(publish),
        _ => None,
    })
    .await
}
