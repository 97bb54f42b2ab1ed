//! A subscriber that does nothing but take readings (QoS 1, rumqttc acknowledging each
//! at once): with it in the provider's place, a step measures what the publisher and
//! Mosquitto alone sustain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use test_support::poll_until;
use tokio::task::JoinHandle;

use super::readings::{self, Delivery, Reading, Received, Sink};

/// Deadline for the CONNACK and the SUBACK.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A subscriber to `bench/#`, disconnected on drop.
pub struct Subscriber {
    received: Arc<Mutex<Received>>,
    event_loop: JoinHandle<()>,
}

impl Subscriber {
    /// Connects to the broker on `port` and waits until the subscription holds.
    pub async fn subscribe(port: u16, client_id: &str) -> anyhow::Result<Subscriber> {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options
            .set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30));
        let (client, mut event_loop) = AsyncClient::new(options, 10);
        client.subscribe("bench/#", QoS::AtLeastOnce).await?;
        let received = Arc::new(Mutex::new(Received::default()));
        let subscribed = Arc::new(AtomicBool::new(false));
        let event_loop = tokio::spawn({
            let (received, subscribed) = (Arc::clone(&received), Arc::clone(&subscribed));
            async move {
                // The client must live as long as the loop, or the loop stops.
                let _client = client;
                loop {
                    match event_loop.poll().await {
                        Ok(Event::Incoming(Packet::Publish(publish))) => {
                            let arrived_us = readings::unix_micros();
                            let mut received = received.lock().unwrap();
                            received.carriers += 1;
                            if let Some(reading) = Reading::parse(&publish.payload) {
                                received.deliveries.push(Delivery {
                                    seq: reading.seq,
                                    sent_us: reading.sent_us,
                                    arrived_us,
                                });
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            subscribed.store(true, Ordering::SeqCst);
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        });
        let subscriber = Subscriber {
            received,
            event_loop,
        };
        if !poll_until(SUBSCRIBE_TIMEOUT, || subscribed.load(Ordering::SeqCst)).await {
            bail!("the do-nothing subscriber got no SUBACK within {SUBSCRIBE_TIMEOUT:?}");
        }
        Ok(subscriber)
    }
}

impl Sink for Subscriber {
    async fn take(&self) -> anyhow::Result<Received> {
        Ok(std::mem::take(&mut *self.received.lock().unwrap()))
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.event_loop.abort();
    }
}
