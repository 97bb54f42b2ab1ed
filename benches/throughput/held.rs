//! How many messages Mosquitto still holds for subscribers (queued, or sent and not yet
//! acknowledged), read from its `$SYS` topics: the store's message count minus the
//! retained messages (`$SYS` values are retained too). Once every reading has reached
//! OpenWhisk, whatever the broker still holds is an acknowledgement the provider never
//! sent, and the broker would deliver that message again after a reconnect.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use test_support::poll_until;
use tokio::task::JoinHandle;

use super::broker::SYS_INTERVAL;

const STORED_TOPIC: &str = "$SYS/broker/store/messages/count";
const RETAINED_TOPIC: &str = "$SYS/broker/retained messages/count";
/// How long the first values may take.
const FIRST_VALUES_TIMEOUT: Duration = Duration::from_secs(10);

/// The latest `$SYS` counts; `None` until the broker has published one.
#[derive(Default)]
struct Counts {
    stored: Option<u64>,
    retained: Option<u64>,
}

/// A watcher of the broker's counts, disconnected on drop.
pub struct HeldMessages {
    counts: Arc<Mutex<Counts>>,
    event_loop: JoinHandle<()>,
}

impl HeldMessages {
    /// Subscribes to the counts of the broker on `port` and waits for their first values.
    pub async fn watch(port: u16, client_id: &str) -> anyhow::Result<HeldMessages> {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_clean_session(true);
        let (client, mut event_loop) = AsyncClient::new(options, 10);
        client.subscribe(STORED_TOPIC, QoS::AtMostOnce).await?;
        client.subscribe(RETAINED_TOPIC, QoS::AtMostOnce).await?;
        let counts = Arc::new(Mutex::new(Counts::default()));
        let event_loop = tokio::spawn({
            let counts = Arc::clone(&counts);
            async move {
                // The client must live as long as the loop, or the loop stops.
                let _client = client;
                loop {
                    match event_loop.poll().await {
                        Ok(Event::Incoming(Packet::Publish(publish))) => {
                            let value = std::str::from_utf8(&publish.payload)
                                .ok()
                                .and_then(|text| text.trim().parse().ok());
                            let mut counts = counts.lock().unwrap();
                            match publish.topic.as_str() {
                                STORED_TOPIC => counts.stored = value,
                                RETAINED_TOPIC => counts.retained = value,
                                _ => {}
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        });
        let held = HeldMessages { counts, event_loop };
        if !poll_until(FIRST_VALUES_TIMEOUT, || held.now().is_some()).await {
            bail!("Mosquitto published no {STORED_TOPIC} within {FIRST_VALUES_TIMEOUT:?}");
        }
        Ok(held)
    }

    /// Messages the broker holds for subscribers, as of its latest `$SYS` values.
    fn now(&self) -> Option<u64> {
        let counts = self.counts.lock().unwrap();
        Some(counts.stored?.saturating_sub(counts.retained?))
    }

    /// What the broker holds once it has published its counts after this call (it
    /// publishes them every [`SYS_INTERVAL`], and only when they change), waiting up to
    /// `timeout` more for it to hold nothing.
    pub async fn settle(&self, timeout: Duration) -> u64 {
        tokio::time::sleep(SYS_INTERVAL + Duration::from_millis(200)).await;
        poll_until(timeout, || self.now() == Some(0)).await;
        self.now().unwrap_or_default()
    }
}

impl Drop for HeldMessages {
    fn drop(&mut self) {
        self.event_loop.abort();
    }
}
