//! An MQTT 3.1.1 publisher (rumqttc, clean session) that can tell when the broker has
//! acknowledged everything it published.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::runtime::Runtime;

use test_support::poll_until;

/// Requests that may wait for the event loop: enough for a burst of 100,000 publishes.
const REQUEST_CHANNEL_CAPACITY: usize = 200_000;
/// Large enough for payloads over OpenWhisk's 1 MiB limit.
const MAX_PACKET_SIZE: usize = 16 * 1024 * 1024;
/// Deadline for the broker's CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the background event-loop task reports.
#[derive(Default)]
struct Progress {
    connected: AtomicBool,
    /// QoS 1 PUBACKs plus QoS 2 PUBCOMPs received.
    acked: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A connected publisher; stops its event loop on drop.
pub struct Publisher {
    client: AsyncClient,
    /// QoS >= 1 publishes handed to the client so far.
    sent: AtomicU64,
    progress: Arc<Progress>,
    /// Runs the event loop on its own thread, so that a test busy publishing or polling
    /// cannot stall it; `None` only while dropping.
    runtime: Option<Runtime>,
}

impl Publisher {
    /// Connects with a clean session as `client_id` and waits for the CONNACK.
    pub async fn connect(broker_url: &str, client_id: &str) -> Publisher {
        let (host, port) = host_and_port(broker_url);
        let mut options = MqttOptions::new(client_id, host, port);
        options
            .set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE);
        let (client, mut event_loop) = AsyncClient::new(options, REQUEST_CHANNEL_CAPACITY);
        let progress = Arc::new(Progress::default());

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("publisher")
            .enable_all()
            .build()
            .expect("start the publisher's runtime");
        let reporter = Arc::clone(&progress);
        runtime.spawn(async move {
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        reporter.connected.store(true, Ordering::SeqCst);
                    }
                    Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => {
                        reporter.acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        reporter.connected.store(false, Ordering::SeqCst);
                        *reporter.last_error.lock().unwrap() = Some(e.to_string());
                        // rumqttc reconnects on the next poll, at once: back off a little.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });

        let publisher = Publisher {
            client,
            sent: AtomicU64::new(0),
            progress,
            runtime: Some(runtime),
        };
        let connected = poll_until(CONNECT_TIMEOUT, || {
            publisher.progress.connected.load(Ordering::SeqCst)
        })
        .await;
        assert!(
            connected,
            "publisher {client_id} got no CONNACK from {broker_url} within {CONNECT_TIMEOUT:?} (last error: {:?})",
            publisher.last_error()
        );
        publisher
    }

    /// Queues one publish (it is sent by the background event loop).
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, qos: QoS, retain: bool) {
        self.client
            .publish(topic, qos, retain, payload)
            .await
            .expect("queue an MQTT publish");
        if qos != QoS::AtMostOnce {
            self.sent.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Waits until every QoS >= 1 publish so far was acknowledged, i.e. the broker has it.
    pub async fn wait_all_acked(&self, timeout: Duration) {
        let sent = self.sent.load(Ordering::SeqCst);
        let all_acked = poll_until(timeout, || {
            self.progress.acked.load(Ordering::SeqCst) >= sent
        })
        .await;
        assert!(
            all_acked,
            "timed out after {timeout:?} waiting for the broker to acknowledge {sent} publishes \
             (acknowledged: {}, last error: {:?})",
            self.progress.acked.load(Ordering::SeqCst),
            self.last_error()
        );
    }

    fn last_error(&self) -> Option<String> {
        self.progress.last_error.lock().unwrap().clone()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `mqtt://host:port` (port defaults to 1883) as rumqttc wants it.
fn host_and_port(broker_url: &str) -> (String, u16) {
    let authority = broker_url
        .strip_prefix("mqtt://")
        .unwrap_or_else(|| panic!("not an mqtt:// URL: {broker_url}"))
        .trim_end_matches('/');
    match authority.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().expect("a numeric MQTT port")),
        None => (authority.to_string(), 1883),
    }
}
