//! The MQTT connections, one per broker, credentials and namespace, each with its own
//! source, forwarder and routes.
//!
//! Why per namespace: a broker's in-flight window (`max_inflight_messages`) belongs to a
//! connection. If one connection carried two namespaces, the unacknowledged messages of a
//! throttled or failing one would fill the window and stop the other's too, whatever the
//! provider did inside. With a connection each, a namespace can only hold up itself.
//!
//! Connections are opened when a route first needs one and closed when their last route
//! goes; the client id is derived from `MQTT_CLIENT_ID`, so it is the same after a
//! restart and the broker's persistent session (and what it kept) is found again.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use secrecy::ExposeSecret;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Credentials, MqttConfig};
use crate::delivery::Deliverer;
use crate::fire_body::MessageBodies;
use crate::forward::{Forwarder, Intake};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::mqtt::{Acker, MqttSource};
use crate::routes::{Destination, Routes};
use crate::spool::{Budget, Reader, Spool};
use crate::spooler::{self, Spooler};

/// How many messages the source may hand the spooler before it waits: a group commit
/// takes all of them, so the broker's whole window can go into one fsync.
const SPOOL_INTAKE: usize = 1024;

/// Which connection a route travels on.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConnectionKey {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub username: Option<String>,
    /// Kept to tell connections apart, never shown (see the `Debug` below).
    pub password: Option<String>,
    pub namespace: String,
}

impl fmt::Debug for ConnectionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self
            .username
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        write!(
            f,
            "{user}{}:{} for {}",
            self.host, self.port, self.namespace
        )
    }
}

impl ConnectionKey {
    /// The key of `broker` (its host, port, TLS and credentials) for `namespace`.
    pub fn new(broker: &MqttConfig, namespace: &str) -> ConnectionKey {
        let credentials = broker.credentials.as_ref();
        ConnectionKey {
            host: broker.host.to_ascii_lowercase(),
            port: broker.port,
            tls: broker.tls.is_some(),
            username: credentials.map(|c| c.username.clone()),
            password: credentials
                .and_then(|c| c.password.as_ref())
                .map(|p| p.expose_secret().to_owned()),
            namespace: namespace.to_owned(),
        }
    }
}

/// What every connection's forwarder shares.
pub struct Pipeline {
    pub deliverer: Arc<Deliverer>,
    pub bodies: Arc<MessageBodies>,
    pub concurrency: usize,
    pub batch_max: usize,
    pub batch_wait: Duration,
    /// With `SPOOL=true`: where each connection's spool goes, and their shared budget.
    pub spool: Option<SpoolPlace>,
}

/// `STATE_DIR/spool`, in which each connection has a directory named after its client id.
pub struct SpoolPlace {
    pub dir: PathBuf,
    pub budget: Arc<Budget>,
}

/// The tokens and trackers of a running provider, which every connection joins, so that
/// shutdown stops them all in one order (see `App::run_until_stopped`).
#[derive(Clone)]
pub struct Running {
    pub stop_intake: CancellationToken,
    pub fires_done: CancellationToken,
    pub abandon: CancellationToken,
    pub fires: TaskTracker,
    pub forwarders: TaskTracker,
    pub sources: TaskTracker,
}

impl Running {
    pub fn new() -> Running {
        Running {
            stop_intake: CancellationToken::new(),
            fires_done: CancellationToken::new(),
            abandon: CancellationToken::new(),
            fires: TaskTracker::new(),
            forwarders: TaskTracker::new(),
            sources: TaskTracker::new(),
        }
    }
}

/// Every connection, by key.
pub struct Connections {
    /// `MQTT_URL`'s broker as configured, and the namespace whose connection keeps
    /// `MQTT_CLIENT_ID` itself (`OW_NAMESPACE`), so that upgrading keeps the session.
    base: MqttConfig,
    base_namespace: String,
    pipeline: Pipeline,
    health: Health,
    metrics: Metrics,
    running: Running,
    open: Mutex<Open>,
}

/// The connections, and whether they run yet (see [`Tasks::Waiting`]).
#[derive(Default)]
struct Open {
    connections: HashMap<ConnectionKey, Connection>,
    started: bool,
}

struct Connection {
    routes: Arc<Routes>,
    client_id: Arc<str>,
    /// Stop this connection alone (children of the provider's tokens).
    stop_intake: CancellationToken,
    fires_done: CancellationToken,
    /// Its tasks until they run. They are not started before every route known at start
    /// is in place: a persistent session (or the spool) hands over what it kept at once,
    /// and a message that found no route yet would be let go unfired.
    waiting: Option<Box<Parts>>,
    /// The source's task, and the forwarder's (with the spool's) once running.
    running: Option<(JoinHandle<()>, Vec<JoinHandle<()>>)>,
    /// Whether only feed routes use it, so its state does not decide readiness.
    feed_only: bool,
}

/// What a connection runs.
struct Parts {
    source: MqttSource,
    forwarder: Forwarder,
    wiring: Wiring,
}

/// How messages go from the source to the forwarder.
enum Wiring {
    /// Straight, acknowledged when their fires are final.
    Direct(Acker),
    /// Through the spool: acknowledged once durable, fired from there.
    Spooled(Box<SpoolParts>),
}

struct SpoolParts {
    spooler: Spooler,
    reader: Reader,
    spool: Spool,
}

impl Connections {
    pub fn new(
        base: MqttConfig,
        base_namespace: &str,
        pipeline: Pipeline,
        health: Health,
        metrics: Metrics,
        running: Running,
    ) -> Connections {
        Connections {
            base,
            base_namespace: base_namespace.to_owned(),
            pipeline,
            health,
            metrics,
            running,
            open: Mutex::new(Open::default()),
        }
    }

    /// Starts every connection built so far; those added later start at once. Call it
    /// once every route known at start (static and stored) is in place.
    pub fn start(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.started = true;
        for connection in open.connections.values_mut() {
            self.run(connection);
        }
    }

    /// Spawns the source and forwarder of `connection`, if not yet running.
    fn run(&self, connection: &mut Connection) {
        let Some(built) = connection.waiting.take() else {
            return;
        };
        let Parts {
            source,
            forwarder,
            wiring,
        } = *built;
        let running = &self.running;
        let concurrency = self.pipeline.concurrency;
        let intake = match wiring {
            Wiring::Direct(_) => concurrency,
            Wiring::Spooled(_) => SPOOL_INTAKE,
        };
        let (messages_tx, messages_rx) = mpsc::channel(intake);
        let source = running.sources.spawn(source.run(
            messages_tx,
            connection.stop_intake.clone(),
            connection.fires_done.clone(),
        ));
        let forward = |intake| {
            running.forwarders.spawn(forwarder.run(
                intake,
                running.abandon.clone(),
                running.fires.clone(),
            ))
        };
        let pipeline = match wiring {
            Wiring::Direct(acker) => vec![forward(Intake::Broker(messages_rx, acker))],
            Wiring::Spooled(parts) => {
                let SpoolParts {
                    spooler,
                    reader,
                    spool,
                } = *parts;
                let (records_tx, records_rx) = mpsc::channel(concurrency);
                let stop = connection.stop_intake.clone();
                vec![
                    running.forwarders.spawn(spooler.run(messages_rx)),
                    running
                        .forwarders
                        .spawn(spooler::feed(reader, records_tx, stop)),
                    forward(Intake::Spool(records_rx, spool)),
                ]
            }
        };
        connection.running = Some((source, pipeline));
    }

    /// `MQTT_URL`'s broker, with its credentials and TLS settings.
    pub fn base(&self) -> &MqttConfig {
        &self.base
    }

    /// Routes `filter` to `destination` on the connection to `broker` for
    /// `destination`'s namespace, opening the connection if there is none; returns that
    /// connection's routes (to wait for the SUBACK).
    pub fn add_route(
        &self,
        broker: &MqttConfig,
        filter: &str,
        destination: &Arc<Destination>,
    ) -> anyhow::Result<Arc<Routes>> {
        let key = ConnectionKey::new(broker, &destination.target.namespace);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let started = open.started;
        let connection = match open.connections.entry(key) {
            Entry::Occupied(connection) => connection.into_mut(),
            Entry::Vacant(vacant) => {
                let key = vacant.key().clone();
                let connection = self.open_connection(broker, &key)?;
                self.health
                    .feed_only_broker(&connection.client_id, connection.feed_only);
                vacant.insert(connection)
            }
        };
        connection.routes.add(filter, destination);
        if !destination.is_feed() && connection.feed_only {
            connection.feed_only = false;
            self.health.feed_only_broker(&connection.client_id, false);
        }
        let routes = connection.routes.clone();
        if started {
            self.run(connection);
        }
        Ok(routes)
    }

    /// Stops routing `filter` to `destination`; a connection left without routes is
    /// closed. Without a `successor` it waits until none of its fires is in flight (a
    /// DELETE); with one, its fires in flight go on there (a replacement).
    pub async fn remove_route(
        &self,
        broker: &MqttConfig,
        filter: &str,
        destination: &Arc<Destination>,
        successor: Option<&Arc<Destination>>,
    ) {
        let key = ConnectionKey::new(broker, &destination.target.namespace);
        let closing = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let Some(connection) = open.connections.get(&key) else {
                return;
            };
            connection.routes.remove(filter, destination);
            let unused = connection.routes.read().is_empty();
            unused.then(|| open.connections.remove(&key)).flatten()
        };
        match successor {
            Some(successor) => destination.hand_over(successor),
            None => destination.retire().await,
        }
        if let Some(connection) = closing {
            self.close(connection).await;
        }
    }

    fn open_connection(
        &self,
        broker: &MqttConfig,
        key: &ConnectionKey,
    ) -> anyhow::Result<Connection> {
        let mut config = broker.clone();
        config.client_id = self.client_id(key);
        let routes = Arc::new(Routes::new(self.metrics.clone()));
        let (source, acker) = MqttSource::new(
            &config,
            routes.clone(),
            self.health.clone(),
            self.metrics.clone(),
        )?;
        let pipeline = &self.pipeline;
        let client_id: Arc<str> = config.client_id.as_str().into();
        let wiring = match &pipeline.spool {
            None => Wiring::Direct(acker),
            Some(place) => self.open_spool(place, &client_id, acker)?,
        };
        let forwarder = Forwarder {
            deliverer: pipeline.deliverer.clone(),
            bodies: pipeline.bodies.clone(),
            routes: routes.clone(),
            concurrency: pipeline.concurrency,
            batch_max: pipeline.batch_max,
            batch_wait: pipeline.batch_wait,
        };
        tracing::info!(connection = %config.client_id, broker = ?key, "opening an MQTT connection");
        Ok(Connection {
            routes,
            client_id,
            stop_intake: self.running.stop_intake.child_token(),
            fires_done: self.running.fires_done.child_token(),
            waiting: Some(Box::new(Parts {
                source,
                forwarder,
                wiring,
            })),
            running: None,
            feed_only: true,
        })
    }

    /// Closes a connection whose last route went: its forwarder ends, then the source
    /// disconnects cleanly. Its filters were unsubscribed, so the broker keeps nothing
    /// more for it.
    async fn close(&self, connection: Connection) {
        connection.stop_intake.cancel();
        if let Some((source, pipeline)) = connection.running {
            for task in pipeline {
                let _ = task.await;
            }
            connection.fires_done.cancel();
            // Forgotten once the source is gone, so it cannot report itself again.
            let _ = source.await;
        }
        self.health.forget_broker(&connection.client_id);
        self.metrics.mqtt_connection_closed(&connection.client_id);
        tracing::info!(connection = %connection.client_id, "MQTT connection closed: no route uses it any more");
    }

    /// Opens the spool of the connection `client_id`, in a directory named after it, and
    /// the spooler that acknowledges with `acker`.
    fn open_spool(
        &self,
        place: &SpoolPlace,
        client_id: &Arc<str>,
        acker: Acker,
    ) -> anyhow::Result<Wiring> {
        let dir = place.dir.join(spool_dir_name(client_id));
        let (writer, reader, replay) = Spool::open(&dir, place.budget.clone())
            .with_context(|| format!("cannot open the spool in {}", dir.display()))?;
        self.metrics
            .spool_opened(replay.messages, replay.skipped_bytes);
        if replay.messages > 0 {
            tracing::info!(connection = %client_id, messages = replay.messages, "spool holds messages not finished before the restart: firing them first");
        }
        let spool = writer.spool().clone();
        let spooler = Spooler {
            writer: Arc::new(Mutex::new(writer)),
            spool: spool.clone(),
            acker,
            budget: place.budget.clone(),
            name: client_id.clone(),
            boot: self.pipeline.bodies.boot(),
            health: self.health.clone(),
            metrics: self.metrics.clone(),
        };
        Ok(Wiring::Spooled(Box::new(SpoolParts {
            spooler,
            reader,
            spool,
        })))
    }

    /// `MQTT_CLIENT_ID` for `MQTT_URL`'s broker and `OW_NAMESPACE`; otherwise derived
    /// from it, the namespace and (for another broker or user) `user@host:port` and a
    /// hash of the password, so that it is stable across restarts and distinct per
    /// connection.
    fn client_id(&self, key: &ConnectionKey) -> String {
        let base = &self.base.client_id;
        let base_key = ConnectionKey::new(&self.base, &key.namespace);
        let same_broker = base_key == *key;
        match (same_broker, key.namespace == self.base_namespace) {
            (true, true) => base.clone(),
            (true, false) => format!("{base}-{}", key.namespace),
            (false, _) => {
                let user = key
                    .username
                    .as_deref()
                    .map(|u| format!("{u}@"))
                    .unwrap_or_default();
                // Two passwords of one user (a rotation) are two connections: they must
                // not share a session, whose packet ids would ack each other's messages.
                let password = key
                    .password
                    .as_deref()
                    .map(|p| format!("-{:08x}", fnv1a(p) as u32))
                    .unwrap_or_default();
                format!(
                    "{base}-{}-{user}{}:{}{password}",
                    key.namespace, key.host, key.port
                )
            }
        }
    }
}

/// A client id as a directory name: itself when it is made of letters, digits, `.`, `_`
/// and `-`; otherwise with the rest replaced and its hash added, so two ids never share
/// a spool.
fn spool_dir_name(client_id: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let name: String = client_id
        .chars()
        .map(|c| if plain(c) { c } else { '_' })
        .collect();
    match client_id.chars().all(plain) && !client_id.starts_with('.') {
        true => name,
        false => format!("{name}-{:016x}", fnv1a(client_id)),
    }
}

/// FNV-1a, 64 bits: a hash that is the same in every build and release (unlike std's),
/// as a client id derived from it must be.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The broker a feed registration names: `MQTT_URL`'s settings (TLS trust, session,
/// limits) with its own host, port, TLS and credentials.
pub fn broker_at(
    base: &MqttConfig,
    host: &str,
    port: u16,
    tls: bool,
    credentials: Option<Credentials>,
) -> MqttConfig {
    let mut broker = base.clone();
    broker.host = host.to_owned();
    broker.port = port;
    broker.tls = match (tls, &base.tls) {
        (false, _) => None,
        (true, Some(same)) => Some(same.clone()),
        (true, None) => Some(Arc::default()),
    };
    broker.credentials = credentials;
    broker
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_hash_is_fnv1a_as_published() {
        // The FNV-1a 64 test vectors: a client id must not change across releases.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }
}
