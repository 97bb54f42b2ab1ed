//! A bare rumqttc client, for tests that watch the broker's packets themselves.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet};

use super::MqttBroker;

/// How long [`next_event`] waits.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects as `client_id` with a persistent session, after `configure` had its say on
/// the options: the client, its event loop and the CONNACK's `session_present`.
pub async fn connect_persistent(
    broker: &impl MqttBroker,
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
