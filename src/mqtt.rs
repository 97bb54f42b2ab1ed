//! The MQTT source: owns rumqttc's event loop, hands each publish to the forwarder, and
//! acknowledges it only when told to (manual acks, SPEC section 4).
//!
//! Acks are guarded by a connection *epoch*: after a reconnect that did not resume the
//! session, an old packet id names a different message, so acking it would delete a
//! message never forwarded (`reference/mqtt.md`, trap E3). Acks from an earlier epoch
//! are therefore dropped; the broker redelivers those messages instead.
//!
//! Acks do not go through rumqttc's request channel: `poll()` reads up to ten publishes
//! per turn but writes one request, so under a flood the acks fell behind without bound
//! (and Mosquitto 2.0.11's window bug makes floods happen). The source writes every
//! queued ack straight to the connection instead, with one flush for all of them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, PubAck, Publish,
    QoS, SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};
use secrecy::ExposeSecret;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::{MqttConfig, MqttTls};
use crate::health::{BrokerState, Health};
use crate::metrics::Metrics;

/// Acks waiting to be written, shared by the fire tasks and the source.
#[derive(Default)]
struct AckQueue {
    state: Mutex<AckState>,
    /// Wakes the source when an ack is queued.
    ready: Notify,
}

/// The connection epoch and the packet ids to ack on it.
#[derive(Default)]
struct AckState {
    epoch: u64,
    pkids: Vec<u16>,
}

impl AckQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, AckState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A message received from the broker, not yet acknowledged.
pub struct Message {
    pub publish: Publish,
    pub received_at: DateTime<Utc>,
    epoch: u64,
}

/// Acknowledges messages to the broker; cheap to clone.
#[derive(Clone)]
pub struct Acker(Arc<AckQueue>);

impl Acker {
    /// Acks `message` if its connection epoch is still current; otherwise the broker
    /// redelivers it (a duplicate, never a loss).
    pub fn ack(&self, message: &Message) {
        if message.publish.qos == QoS::AtMostOnce {
            return;
        }
        let mut state = self.0.lock();
        if state.epoch != message.epoch {
            tracing::debug!(
                topic = message.publish.topic,
                "ack skipped: connection changed since receipt"
            );
            return;
        }
        state.pkids.push(message.publish.pkid);
        drop(state);
        self.0.ready.notify_one();
    }
}

/// What `MqttConfig::qos` means on the wire. QoS 2 is subscribed as QoS 1: rumqttc
/// loses its QoS 2 state on reconnect and then loops on the broker's PUBREL
/// (rumqtt#664), and QoS 1 already gives the at-least-once delivery promised for both.
pub fn subscription_qos(configured: u8) -> QoS {
    match configured {
        0 => QoS::AtMostOnce,
        _ => QoS::AtLeastOnce,
    }
}

/// Owns the event loop. Run it with [`MqttSource::run`].
pub struct MqttSource {
    client: AsyncClient,
    eventloop: EventLoop,
    acks: Arc<AckQueue>,
    /// Reused buffer for the packet ids being written.
    writing: Vec<u16>,
    filters: Vec<String>,
    /// `messages_received_total` of each filter, in the order of `filters`.
    received: Vec<(String, Counter)>,
    qos: QoS,
    health: Health,
    metrics: Metrics,
    connected: bool,
    subscribed_once: bool,
    keep_alive: Duration,
    /// Set when the provider itself closed the connection to collect deferred messages.
    reconnecting: bool,
}

impl MqttSource {
    pub fn new(
        config: &MqttConfig,
        health: Health,
        metrics: Metrics,
    ) -> anyhow::Result<(MqttSource, Acker)> {
        let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
        options
            .set_keep_alive(config.keep_alive)
            .set_clean_session(config.clean_session)
            .set_manual_acks(true)
            .set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes);
        if let Some(credentials) = &config.credentials {
            let password = credentials
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned());
            options.set_credentials(credentials.username.clone(), password.unwrap_or_default());
        }
        if let Some(tls) = &config.tls {
            options.set_transport(Transport::tls_with_config(tls_configuration(tls)?));
        }
        if config.qos == 2 {
            tracing::warn!(
                "MQTT_QOS=2 is subscribed as QoS 1 (rumqttc cannot resume QoS 2 sessions); delivery stays at least once"
            );
        }
        // Only subscriptions and the final disconnect use rumqttc's request channel.
        let (client, eventloop) = AsyncClient::new(options, 16);
        let acks = Arc::new(AckQueue::default());
        let acker = Acker(acks.clone());
        let source = MqttSource {
            client,
            eventloop,
            acks,
            writing: Vec::new(),
            filters: config.topics.clone(),
            received: metrics.received_counters(&config.topics),
            qos: subscription_qos(config.qos),
            health,
            metrics,
            connected: false,
            subscribed_once: false,
            keep_alive: config.keep_alive,
            reconnecting: false,
        };
        Ok((source, acker))
    }

    /// Polls the broker until shut down. Publishes go to `messages_tx`; waiting for room
    /// there is the back-pressure that bounds memory. Once `stop_intake` is cancelled new
    /// publishes are left unacknowledged (the broker keeps them), and once `fires_done`
    /// is cancelled the pending acks are flushed and the connection closed cleanly.
    ///
    /// A wait for room longer than half the keep-alive would starve the connection (only
    /// `poll()` sends pings), so the source then *defers*: it keeps polling but leaves new
    /// publishes unacknowledged with the broker, and once the forwarder has room again it
    /// reconnects, which makes the broker resend them (`reference/mqtt.md`, recipe 5).
    pub async fn run(
        mut self,
        messages_tx: mpsc::Sender<Message>,
        stop_intake: CancellationToken,
        fires_done: CancellationToken,
    ) {
        let mut messages_tx = Some(messages_tx);
        let mut backoff = reconnect_backoff();
        let mut disconnecting = false;
        let mut deferring = false;
        let acks = self.acks.clone();
        loop {
            self.write_acks().await;
            let event = tokio::select! {
                _ = fires_done.cancelled(), if !disconnecting => {
                    disconnecting = true;
                    self.write_acks().await;
                    if !self.connected || self.client.try_disconnect().is_err() {
                        return;
                    }
                    continue;
                }
                _ = stop_intake.cancelled(), if messages_tx.is_some() => {
                    // Dropping the sender lets the forwarder see the end of the stream.
                    messages_tx = None;
                    deferring = false;
                    continue;
                }
                _ = room(messages_tx.as_ref()), if deferring => {
                    deferring = false;
                    self.reconnecting = true;
                    tracing::info!("fires are finishing again; reconnecting to collect the deferred messages");
                    self.write_acks().await;
                    let _ = self.client.try_disconnect();
                    continue;
                }
                _ = acks.ready.notified() => continue,
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = reconnect_backoff();
                    self.on_connected(ack.session_present);
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => self.on_suback(&ack.return_codes),
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let Some(tx) = &messages_tx else {
                        continue; // shutting down: left with the broker, redelivered later
                    };
                    for (filter, counter) in &self.received {
                        if rumqttc::matches(&publish.topic, filter) {
                            counter.inc();
                        }
                    }
                    if deferring {
                        self.metrics.message_deferred();
                        continue;
                    }
                    let message = Message {
                        publish,
                        received_at: Utc::now(),
                        epoch: self.acks.lock().epoch,
                    };
                    let stalled = tokio::time::sleep(self.keep_alive / 2);
                    tokio::pin!(stalled);
                    // Wait for room, writing acks meanwhile: they are what frees it.
                    loop {
                        tokio::select! {
                            permit = tx.reserve() => {
                                match permit {
                                    Ok(permit) => permit.send(message),
                                    Err(_) => return,
                                }
                                break;
                            }
                            _ = acks.ready.notified() => self.write_acks().await,
                            _ = &mut stalled => {
                                deferring = true;
                                self.metrics.message_deferred();
                                tracing::warn!(
                                    "fires are not finishing: new messages stay with the broker until they do"
                                );
                                break;
                            }
                            _ = stop_intake.cancelled() => break,
                        }
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) if disconnecting => {
                    tracing::info!("disconnected from the MQTT broker");
                    return;
                }
                Ok(_) => {}
                Err(error) => {
                    if disconnecting {
                        return;
                    }
                    self.on_connection_error(&error);
                    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = fires_done.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Writes every queued ack to the connection, with one flush. Without a connection
    /// they are dropped: the epoch moved on, and the broker redelivers those messages.
    async fn write_acks(&mut self) {
        std::mem::swap(&mut self.acks.lock().pkids, &mut self.writing);
        if self.writing.is_empty() {
            return;
        }
        if let Some(network) = self.eventloop.network.as_mut() {
            for &pkid in &self.writing {
                if network
                    .write(Packet::PubAck(PubAck::new(pkid)))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            // A failed write or flush shows up as an error of the next `poll()`.
            let _ = network.flush().await;
        }
        self.writing.clear();
    }

    fn on_connected(&mut self, session_present: bool) {
        self.connected = true;
        self.metrics.mqtt_connected(true);
        tracing::info!(session_present, "connected to the MQTT broker");
        // A resumed session keeps its subscriptions, and subscribing again would make the
        // broker resend every retained message. Subscribe on a new session, and once per
        // process start so that a changed MQTT_TOPICS takes effect.
        if session_present && self.subscribed_once {
            self.health.set_broker(BrokerState::Subscribed);
            return;
        }
        let filters = self
            .filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), self.qos));
        match self.client.try_subscribe_many(filters) {
            Ok(()) => self.health.set_broker(BrokerState::Connected),
            Err(error) => tracing::error!(%error, "could not queue the subscription"),
        }
    }

    fn on_suback(&mut self, codes: &[SubscribeReasonCode]) {
        let refused: Vec<String> = self
            .filters
            .iter()
            .zip(codes)
            .filter(|(_, code)| matches!(code, SubscribeReasonCode::Failure))
            .map(|(filter, _)| filter.clone())
            .collect();
        self.subscribed_once = true;
        if refused.is_empty() {
            tracing::info!(filters = ?self.filters, qos = ?self.qos, "subscribed");
            self.health.set_broker(BrokerState::Subscribed);
        } else {
            tracing::error!(
                ?refused,
                "the broker refused to subscribe these filters (check its ACL)"
            );
            self.health.set_broker(BrokerState::Refused(refused));
        }
    }

    fn on_connection_error(&mut self, error: &ConnectionError) {
        {
            // Bump the epoch and drop the acks queued for the old connection, under one
            // lock, so that none of them can reach the new one.
            let mut acks = self.acks.lock();
            acks.epoch += 1;
            acks.pkids.clear();
        }
        self.health.set_broker(BrokerState::Disconnected);
        self.metrics.mqtt_connected(false);
        let hint = connection_hint(error);
        if std::mem::take(&mut self.reconnecting) {
            tracing::info!("reconnecting to the MQTT broker");
            self.connected = false;
        } else if std::mem::take(&mut self.connected) {
            self.metrics.mqtt_reconnect();
            tracing::warn!(%error, hint, "lost the MQTT broker; reconnecting");
        } else {
            tracing::debug!(%error, hint, "MQTT broker still unreachable; retrying");
        }
    }
}

/// Completes when the forwarder can take a message (never once the stream is closed).
async fn room(messages_tx: Option<&mpsc::Sender<Message>>) {
    match messages_tx {
        Some(tx) => drop(tx.reserve().await),
        None => std::future::pending().await,
    }
}

/// Says what to do about errors that will not go away by themselves.
fn connection_hint(error: &ConnectionError) -> &'static str {
    use rumqttc::ConnectReturnCode as Code;
    match error {
        ConnectionError::ConnectionRefused(Code::BadUserNamePassword | Code::NotAuthorized) => {
            "the broker refused the credentials: check MQTT_USERNAME and MQTT_PASSWORD"
        }
        ConnectionError::ConnectionRefused(Code::BadClientId) => {
            "the broker refused MQTT_CLIENT_ID"
        }
        ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(_),
        )) => {
            "a message is larger than MQTT_MAX_PACKET_BYTES: raise it, or cap the broker's max_packet_size below it"
        }
        ConnectionError::Tls(_) => "TLS failed: check MQTT_CA_FILE and the broker's certificate",
        _ => "",
    }
}

fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

fn tls_configuration(tls: &MqttTls) -> anyhow::Result<TlsConfiguration> {
    // As in `OpenWhiskClient::new`: ring is the provider, installed by the first caller.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca {
        Some(certs) => {
            roots.add_parsable_certificates(certs.iter().cloned());
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match &tls.client_auth {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                anyhow::anyhow!("MQTT_CLIENT_CERT_FILE/MQTT_CLIENT_KEY_FILE unusable: {e}")
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}
