//! Sensors: one or more MQTT connections publishing readings at QoS 1 on ten topics
//! (`bench/sensors/t0` .. `t9`), at a fixed rate or as fast as they can.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use test_support::poll_until;
use tokio::task::{JoinHandle, JoinSet};

use super::readings;

/// Publishes the event loop may have queued: small, so a reading's send time is taken
/// close to when it goes out, even when flooding.
const REQUEST_CHANNEL_CAPACITY: usize = 1_000;
/// QoS 1 publishes in flight (not yet acknowledged by the broker) per connection.
const OUTGOING_IN_FLIGHT: u16 = 1_000;
/// Granularity of fixed-rate pacing: every tick publishes whatever is due by then.
const PACING_TICK: Duration = Duration::from_millis(1);
/// Deadline for the CONNACK, and for the broker to acknowledge the last publishes.
const BROKER_TIMEOUT: Duration = Duration::from_secs(30);

/// How fast to publish.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Messages per second, in total over all connections.
    Rate(u32),
    /// As fast as the connections take them.
    Flood,
}

impl fmt::Display for Pace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pace::Rate(rate) => write!(f, "{}/s", super::report::thousands(u64::from(*rate))),
            Pace::Flood => f.write_str("max"),
        }
    }
}

/// What one [`Publishers::run`] published.
pub struct Published {
    /// Readings published; their sequence numbers are consecutive, starting at what
    /// [`Publishers::next_seq`] said before the run.
    pub count: u64,
    /// When the first reading was sent ([`readings::unix_micros`]).
    pub started_us: u64,
    /// From the first publish until the last was handed to its connection.
    pub publishing: Duration,
}

/// Publisher connections (clean sessions), disconnected on drop.
pub struct Publishers {
    connections: Vec<Connection>,
    /// The sequence number of the next reading, over all connections.
    next_seq: Arc<AtomicU64>,
}

struct Connection {
    client: AsyncClient,
    /// Publishes handed to the client, and those the broker acknowledged.
    sent: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
    last_error: Arc<Mutex<Option<String>>>,
    event_loop: JoinHandle<()>,
}

impl Publishers {
    /// Opens `count` connections to the broker on `port`, named `<id>-<n>`.
    pub async fn connect(port: u16, count: usize, id: &str) -> anyhow::Result<Publishers> {
        let mut connections = Vec::with_capacity(count);
        for n in 0..count {
            connections.push(Connection::open(port, &format!("{id}-{n}")).await?);
        }
        Ok(Publishers {
            connections,
            next_seq: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The sequence number the next reading will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::SeqCst)
    }

    /// Publishes for `duration` at `pace`, then waits until the broker has acknowledged
    /// every publish.
    pub async fn run(&self, pace: Pace, duration: Duration) -> anyhow::Result<Published> {
        let first_seq = self.next_seq();
        let started = Instant::now();
        let started_us = readings::unix_micros();
        let mut publishing = JoinSet::<anyhow::Result<()>>::new();
        for connection in &self.connections {
            let share = match pace {
                Pace::Rate(rate) => Some(f64::from(rate) / self.connections.len() as f64),
                Pace::Flood => None,
            };
            let (client, sent) = (connection.client.clone(), Arc::clone(&connection.sent));
            let next_seq = Arc::clone(&self.next_seq);
            publishing.spawn(async move {
                let publish_one = async || {
                    let seq = next_seq.fetch_add(1, Ordering::SeqCst);
                    let topic = format!("bench/sensors/t{}", seq % 10);
                    let payload = readings::payload(seq, readings::unix_micros());
                    client
                        .publish(topic, QoS::AtLeastOnce, false, payload)
                        .await?;
                    sent.fetch_add(1, Ordering::SeqCst);
                    anyhow::Ok(())
                };
                let Some(rate) = share else {
                    while started.elapsed() < duration {
                        publish_one().await?;
                    }
                    return Ok(());
                };
                let mut ticks = tokio::time::interval(PACING_TICK);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut published = 0_u64;
                loop {
                    ticks.tick().await;
                    let elapsed = started.elapsed().min(duration);
                    let due = (rate * elapsed.as_secs_f64()) as u64;
                    while published < due {
                        publish_one().await?;
                        published += 1;
                    }
                    if elapsed >= duration {
                        return Ok(());
                    }
                }
            });
        }
        while let Some(connection) = publishing.join_next().await {
            connection?.context("publish")?;
        }
        let publishing = started.elapsed();
        let all_acked = poll_until(BROKER_TIMEOUT, || {
            self.connections
                .iter()
                .all(|c| c.acked.load(Ordering::SeqCst) >= c.sent.load(Ordering::SeqCst))
        })
        .await;
        if !all_acked {
            bail!(
                "the broker did not acknowledge every publish within {BROKER_TIMEOUT:?} (last error: {:?})",
                self.last_error()
            );
        }
        Ok(Published {
            count: self.next_seq() - first_seq,
            started_us,
            publishing,
        })
    }

    fn last_error(&self) -> Option<String> {
        self.connections
            .iter()
            .find_map(|c| c.last_error.lock().unwrap().clone())
    }
}

impl Connection {
    async fn open(port: u16, client_id: &str) -> anyhow::Result<Connection> {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options
            .set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(OUTGOING_IN_FLIGHT);
        let (client, mut event_loop) = AsyncClient::new(options, REQUEST_CHANNEL_CAPACITY);
        let connected = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let last_error = Arc::new(Mutex::new(None));
        let event_loop = tokio::spawn({
            let (connected, acked) = (Arc::clone(&connected), Arc::clone(&acked));
            let last_error = Arc::clone(&last_error);
            async move {
                loop {
                    match event_loop.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            connected.store(true, Ordering::SeqCst);
                        }
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(_) => {}
                        Err(error) => {
                            *last_error.lock().unwrap() = Some(error.to_string());
                            // rumqttc reconnects on the next poll, at once: back off a little.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        });
        let connection = Connection {
            client,
            sent: Arc::new(AtomicU64::new(0)),
            acked,
            last_error,
            event_loop,
        };
        if !poll_until(BROKER_TIMEOUT, || connected.load(Ordering::SeqCst)).await {
            bail!(
                "publisher {client_id} got no CONNACK (last error: {:?})",
                connection.last_error.lock().unwrap()
            );
        }
        Ok(connection)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.event_loop.abort();
    }
}
