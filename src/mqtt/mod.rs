//! The MQTT source: owns rumqttc's event loop, hands each publish to the forwarder, and
//! acknowledges it only when told to (manual acks, SPEC section 4).
//!
//! - Acks are checked against the broker session ([`session`]): they stay valid across a
//!   reconnect that resumed it, a resent copy of a message still being fired is not
//!   forwarded twice, and a new session voids every earlier packet id.
//! - While the forwarder is full the source stops *reading* (the broker keeps the rest:
//!   back-pressure) but goes on writing acks and pings, so the broker never drops it for
//!   silence and no reconnect is ever needed to get messages back.
//! - Nothing goes through rumqttc's request channel. `poll()` reads up to ten publishes
//!   per turn but writes one request, so under a flood the acks fell behind without bound
//!   (and Mosquitto 2.0.11's window bug makes floods happen); and a request taken from the
//!   channel is lost if `poll()` is cancelled before writing it. The source writes acks
//!   (all queued ones with one flush), SUBSCRIBE and DISCONNECT straight to the
//!   connection instead.

mod reconnect;
mod session;
mod tls;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    Event, EventLoop, MqttOptions, Packet, PubAck, Publish, QoS, Subscribe, SubscribeFilter,
    SubscribeReasonCode, Transport, Unsubscribe,
};
use secrecy::ExposeSecret;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::MqttConfig;
use crate::health::{BrokerState, Health, REMINDER_INTERVAL};
use crate::metrics::Metrics;
use crate::routes::{Routes, Subscription};
use reconnect::Reconnects;
pub use session::Message;
use session::{Ack, Receipt, Session};

/// Acknowledges messages to the broker; cheap to clone.
#[derive(Clone)]
pub struct Acker(Arc<Session>);

impl Acker {
    /// Acks `message` if its broker session is still the current one; otherwise its
    /// packet id names another message now (a duplicate at worst, never a loss).
    pub fn ack(&self, message: &Message) {
        if self.0.ack(message) {
            self.0.ready.notify_one();
        } else if message.publish.qos != QoS::AtMostOnce {
            tracing::debug!(
                topic = message.publish.topic,
                "ack skipped: the broker started a new session since receipt"
            );
        }
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
    eventloop: EventLoop,
    session: Arc<Session>,
    /// Reused buffer for the acks being written.
    writing: Vec<Ack>,
    /// What this connection subscribes: every filter its routes use.
    routes: Arc<Routes>,
    /// The filters the broker's session holds, as far as SUBSCRIBE and UNSUBSCRIBE were
    /// written; cleared by a new session.
    subscribed: BTreeSet<String>,
    /// The filters of each SUBSCRIBE not answered yet, by packet id.
    awaiting_suback: HashMap<u16, Vec<String>>,
    /// The filters of each UNSUBSCRIBE not answered yet, by packet id: a connection
    /// lost before the UNSUBACK may have lost the UNSUBSCRIBE, so they are sent again.
    awaiting_unsuback: HashMap<u16, Vec<String>>,
    /// Filters the broker refused, until it takes them.
    refused: BTreeSet<String>,
    /// The packet id of the next SUBSCRIBE or UNSUBSCRIBE. Ids of packets the provider
    /// sends are its own: they never collide with the broker's ids for publishes.
    next_pkid: u16,
    /// Names the connection in `/readyz` and the logs: its client id.
    name: Arc<str>,
    qos: QoS,
    health: Health,
    metrics: Metrics,
    reconnects: Reconnects,
    /// Receipts numbered so far.
    seq: u64,
    subscribed_once: bool,
    keep_alive: Duration,
    /// When back-pressure was last logged.
    stall_logged: Option<Instant>,
}

impl MqttSource {
    pub fn new(
        config: &MqttConfig,
        routes: Arc<Routes>,
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
            options.set_transport(Transport::tls_with_config(tls::tls_configuration(tls)?));
        }
        if config.qos == 2 {
            tracing::warn!(
                "MQTT_QOS=2 is subscribed as QoS 1 (rumqttc cannot resume QoS 2 sessions); delivery stays at least once"
            );
        }
        // No client: nothing is sent through rumqttc's request channel (see the module).
        let eventloop = EventLoop::new(options, 1);
        let session = Arc::new(Session::default());
        let acker = Acker(session.clone());
        let name: Arc<str> = config.client_id.as_str().into();
        health.set_broker(&name, BrokerState::Disconnected);
        let source = MqttSource {
            eventloop,
            session,
            writing: Vec::new(),
            routes,
            subscribed: BTreeSet::new(),
            awaiting_suback: HashMap::new(),
            awaiting_unsuback: HashMap::new(),
            refused: BTreeSet::new(),
            next_pkid: 0,
            name,
            qos: subscription_qos(config.qos),
            health,
            metrics,
            reconnects: Reconnects::new(&config.client_id),
            seq: 0,
            subscribed_once: false,
            keep_alive: config.keep_alive,
            stall_logged: None,
        };
        Ok((source, acker))
    }

    /// Polls the broker until shut down. Publishes go to `messages_tx`; waiting for room
    /// there is the back-pressure that bounds memory. Once `stop_intake` is cancelled new
    /// publishes are left unacknowledged (the broker keeps them), and once `fires_done`
    /// is cancelled the pending acks are flushed and the connection closed cleanly.
    pub async fn run(
        mut self,
        messages_tx: mpsc::Sender<Message>,
        stop_intake: CancellationToken,
        fires_done: CancellationToken,
    ) {
        let mut intake = Some(messages_tx);
        let mut retry_at: Option<Instant> = None;
        let session = self.session.clone();
        let routes = self.routes.clone();
        loop {
            self.write_acks().await;
            // Cancelling `poll()` here (rumqttc 0.25.1, pinned) loses nothing: a cancelled
            // connect leaves no connection; a read keeps partial frames in the codec and
            // the events of a finished read in `state.events`; with manual acks and no
            // requests, its only write is the keep-alive PINGREQ, and a PINGREQ cut off
            // before it reached the codec makes rumqttc reconnect at the next keep-alive,
            // which the session makes harmless.
            let event = tokio::select! {
                _ = fires_done.cancelled() => {
                    self.write_acks().await;
                    // A connection closed for its last route unsubscribes what it still
                    // holds first, so the broker keeps nothing for it (at shutdown the
                    // routes are unchanged: nothing to write).
                    self.sync_subscriptions().await;
                    if self.write_packet(Packet::Disconnect).await {
                        tracing::info!("disconnected from the MQTT broker");
                    }
                    return;
                }
                _ = stop_intake.cancelled(), if intake.is_some() => {
                    // Dropping the sender lets the forwarder see the end of the stream.
                    intake = None;
                    continue;
                }
                _ = session.ready.notified() => continue,
                // Only while connected: cancelling a `poll()` that is connecting would drop
                // the half-open connection, and the next CONNACK subscribes what changed.
                _ = routes.changed.notified(), if self.eventloop.network.is_some() => {
                    self.sync_subscriptions().await;
                    continue;
                }
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    retry_at = None;
                    continue;
                }
                event = self.eventloop.poll(), if retry_at.is_none() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    self.on_connected(ack.session_present).await;
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    self.on_suback(ack.pkid, &ack.return_codes);
                }
                Ok(Event::Incoming(Packet::UnsubAck(ack))) => {
                    self.awaiting_unsuback.remove(&ack.pkid);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if let Some(tx) = &intake
                        && !self.hand_over(publish, tx, &stop_intake).await
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    // Publishes read just before the connection failed are still buffered
                    // in rumqttc. They belong to the session as it was: forward them now,
                    // before the next CONNACK says whether that session still exists.
                    let read_before: Vec<Publish> = self
                        .eventloop
                        .state
                        .events
                        .drain(..)
                        .filter_map(|event| match event {
                            Event::Incoming(Packet::Publish(publish)) => Some(publish),
                            _ => None,
                        })
                        .collect();
                    for publish in read_before {
                        if let Some(tx) = &intake
                            && !self.hand_over(publish, tx, &stop_intake).await
                        {
                            return;
                        }
                    }
                    // A SUBSCRIBE or UNSUBSCRIBE not answered may not have reached the
                    // broker: sent again once connected.
                    for (_, filters) in self.awaiting_suback.drain() {
                        filters.iter().for_each(|f| {
                            self.subscribed.remove(f);
                        });
                    }
                    for (_, filters) in self.awaiting_unsuback.drain() {
                        self.subscribed.extend(filters);
                    }
                    self.health
                        .set_broker(&self.name, BrokerState::Disconnected);
                    self.metrics.mqtt_connected(&self.name, false);
                    let failure = self.reconnects.failed(&error);
                    if failure.was_connected {
                        self.metrics.mqtt_reconnect();
                    }
                    retry_at = Some(Instant::now() + failure.retry_in);
                }
            }
        }
    }

    /// Hands a publish to the forwarder, waiting for room while writing acks and pings.
    /// Returns false once the forwarder is gone.
    async fn hand_over(
        &mut self,
        publish: Publish,
        tx: &mpsc::Sender<Message>,
        stop_intake: &CancellationToken,
    ) -> bool {
        let message = match self.session.receive(publish, &mut self.seq) {
            Receipt::New(message) => message,
            Receipt::InPipeline | Receipt::AlreadyAccepted => {
                self.metrics.message_redelivered();
                return true;
            }
        };
        let permit = match tx.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Closed(())) => return false,
            Err(mpsc::error::TrySendError::Full(())) => {
                match self.wait_for_room(tx, stop_intake).await {
                    Some(Ok(permit)) => permit,
                    Some(Err(_)) => return false,
                    // Shutting down: left with the broker, redelivered later.
                    None => return true,
                }
            }
        };
        permit.send(message);
        true
    }

    /// Waits until the forwarder can take a message. Meanwhile nothing is read, but acks
    /// (which are what frees room) and pings are written, so the broker keeps the
    /// connection however long OpenWhisk takes. `None` when intake stopped first.
    async fn wait_for_room<'a>(
        &mut self,
        tx: &'a mpsc::Sender<Message>,
        stop_intake: &CancellationToken,
    ) -> Option<Result<mpsc::Permit<'a, Message>, mpsc::error::SendError<()>>> {
        let session = self.session.clone();
        let period = self.keep_alive / 2;
        let mut pings = tokio::time::interval_at(Instant::now() + period, period);
        let mut pinged = false;
        let room = loop {
            tokio::select! {
                permit = tx.reserve() => break Some(permit),
                _ = session.ready.notified() => self.write_acks().await,
                _ = pings.tick() => {
                    pinged |= self.write_packet(Packet::PingReq).await;
                    self.log_stall();
                }
                _ = stop_intake.cancelled() => break None,
            }
        };
        if pinged {
            // The PINGRESPs wait unread behind the publishes not read yet, so rumqttc's own
            // check that its last ping was answered would misfire: hand it a clean slate.
            self.eventloop.state.await_pingresp = false;
        }
        room
    }

    /// Writes `packet` straight to the connection; false without one or if it failed
    /// (which the next `poll()` reports as a connection error).
    async fn write_packet(&mut self, packet: Packet) -> bool {
        let Some(network) = self.eventloop.network.as_mut() else {
            return false;
        };
        network.write(packet).await.is_ok() && network.flush().await.is_ok()
    }

    fn log_stall(&mut self) {
        if self
            .stall_logged
            .is_none_or(|at| at.elapsed() >= REMINDER_INTERVAL)
        {
            self.stall_logged = Some(Instant::now());
            tracing::info!(
                "messages are not being taken (fires not finishing, or the spool full): reading from the broker paused, which keeps the rest of the messages; the connection is kept alive"
            );
        }
    }

    /// Writes every queued ack to the connection, with one flush. Without a connection
    /// they wait for the next one: only its CONNACK says whether they are still valid.
    async fn write_acks(&mut self) {
        let Some(network) = self.eventloop.network.as_mut() else {
            return;
        };
        self.session.take_queued(&mut self.writing);
        if self.writing.is_empty() {
            return;
        }
        for ack in &self.writing {
            if network
                .write(Packet::PubAck(PubAck::new(ack.pkid)))
                .await
                .is_err()
            {
                break;
            }
        }
        // A failed write or flush shows up as an error of the next `poll()`; the broker
        // then resends those messages, and the session recognises them.
        let _ = network.flush().await;
        self.session.remember_written(&self.writing);
        self.writing.clear();
    }

    async fn on_connected(&mut self, session_present: bool) {
        let failed_attempts = self.reconnects.connected();
        self.metrics.mqtt_connected(&self.name, true);
        tracing::info!(
            connection = %self.name,
            session_present,
            failed_attempts,
            "connected to the MQTT broker"
        );
        if !session_present {
            if self.subscribed_once {
                tracing::warn!(
                    "the broker started a new session: what it held for the provider is gone (restarted without persistence, or the session expired)"
                );
            }
            self.session.start_new();
        }
        // A resumed session keeps its subscriptions, and subscribing again would make the
        // broker resend every retained message. Subscribe everything on a new session,
        // and once per process start so that a changed configuration takes effect; on a
        // resumed one only what changed while disconnected.
        if !session_present || !self.subscribed_once {
            self.subscribed.clear();
        }
        self.subscribed_once = true;
        self.sync_subscriptions().await;
    }

    /// Subscribes the filters the routes gained and unsubscribes those they lost, as far
    /// as there is a connection; the next CONNACK brings the rest.
    async fn sync_subscriptions(&mut self) {
        if self.eventloop.network.is_none() {
            return;
        }
        let wanted: BTreeSet<String> = self.routes.read().filters().into_iter().collect();
        let gained: Vec<String> = wanted.difference(&self.subscribed).cloned().collect();
        let lost: Vec<String> = self.subscribed.difference(&wanted).cloned().collect();
        if !gained.is_empty() {
            let filters = gained
                .iter()
                .map(|f| SubscribeFilter::new(f.clone(), self.qos));
            let mut subscribe = Subscribe::new_many(filters);
            subscribe.pkid = self.next_pkid();
            let pkid = subscribe.pkid;
            if !self.write_packet(Packet::Subscribe(subscribe)).await {
                return;
            }
            self.awaiting_suback.insert(pkid, gained.clone());
            self.subscribed.extend(gained);
        }
        if !lost.is_empty() {
            let pkid = self.next_pkid();
            let unsubscribe = Unsubscribe {
                pkid,
                topics: lost.clone(),
            };
            if !self.write_packet(Packet::Unsubscribe(unsubscribe)).await {
                return;
            }
            self.awaiting_unsuback.insert(pkid, lost.clone());
            tracing::info!(connection = %self.name, filters = ?lost, "unsubscribed: no route uses them any more");
            for filter in &lost {
                self.subscribed.remove(filter);
                self.refused.remove(filter);
            }
        }
        self.report_subscriptions();
    }

    /// 1..=65535, wrapping: 0 is not a valid packet id.
    fn next_pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid % u16::MAX + 1;
        self.next_pkid
    }

    fn report_subscriptions(&self) {
        let state = if !self.refused.is_empty() {
            BrokerState::Refused(self.refused.iter().cloned().collect())
        } else if self.awaiting_suback.is_empty() {
            BrokerState::Subscribed
        } else {
            BrokerState::Connected
        };
        self.health.set_broker(&self.name, state);
    }

    fn on_suback(&mut self, pkid: u16, codes: &[SubscribeReasonCode]) {
        let Some(filters) = self.awaiting_suback.remove(&pkid) else {
            return;
        };
        let mut refused = Vec::new();
        for (filter, code) in filters.iter().zip(codes) {
            if matches!(code, SubscribeReasonCode::Failure) {
                refused.push(filter.clone());
                self.refused.insert(filter.clone());
                self.routes.answered(filter, Subscription::Refused);
            } else {
                self.refused.remove(filter);
                self.routes.answered(filter, Subscription::Subscribed);
            }
        }
        if refused.is_empty() {
            tracing::info!(connection = %self.name, ?filters, qos = ?self.qos, "subscribed");
        } else {
            tracing::error!(
                connection = %self.name,
                ?refused,
                "the broker refused to subscribe these filters (check its ACL)"
            );
        }
        self.report_subscriptions();
    }
}
