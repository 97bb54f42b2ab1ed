//! Prometheus metrics. Fires and alarm ticks are counted through
//! [`crate::delivery::events`], which logs each event in the same call, so `/metrics` and
//! the logs tell the same story.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::health::TriggerState;

/// What a fire was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FireKind {
    Message,
    /// Several messages in one fire (`FIRE_BATCH_MAX` > 1).
    Batch,
    Alarm,
}

impl FireKind {
    fn label(self) -> &'static str {
        match self {
            FireKind::Message => "message",
            FireKind::Batch => "batch",
            FireKind::Alarm => "alarm",
        }
    }
}

/// How one fire attempt ended, as counted in `fires_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireOutcome {
    Accepted,
    NoActiveRule,
    Rejected,
    /// Too large for OpenWhisk: its messages go again in two smaller fires.
    Split,
    /// Not accepted yet (a failure, a 429, not ready): tried again.
    Retried,
}

impl FireOutcome {
    fn label(self) -> &'static str {
        match self {
            FireOutcome::Accepted => "accepted",
            FireOutcome::NoActiveRule => "no_active_rule",
            FireOutcome::Rejected => "rejected",
            FireOutcome::Split => "split",
            FireOutcome::Retried => "retried",
        }
    }
}

/// How an alarm tick ended, as counted in `alarm_fires_total`. Its attempts are counted
/// in `fires_total{kind="alarm"}`, retries included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickOutcome {
    Accepted,
    NoActiveRule,
    Rejected,
    /// Not delivered before the alarm's next tick, which takes over.
    GaveUp,
}

impl TickOutcome {
    fn label(self) -> &'static str {
        match self {
            TickOutcome::Accepted => "accepted",
            TickOutcome::NoActiveRule => "no_active_rule",
            TickOutcome::Rejected => "rejected",
            TickOutcome::GaveUp => "gave_up",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FilterLabels {
    filter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    /// The connection's MQTT client id.
    connection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerStateLabels {
    namespace: String,
    trigger: String,
    state: &'static str,
    /// The HTTP status (or kind of connection error) while failing, else empty.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FireLabels {
    kind: &'static str,
    outcome: &'static str,
    /// HTTP status, `none` when no answer came, `local` when refused before sending.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlarmLabels {
    alarm: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlarmNameLabels {
    alarm: String,
}

/// The provider's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    messages_received: Family<FilterLabels, Counter>,
    fires: Family<FireLabels, Counter>,
    fires_in_flight: Gauge,
    fire_duration: Family<KindLabels, Histogram, fn() -> Histogram>,
    alarm_fires: Family<AlarmLabels, Counter>,
    mqtt_connected: Family<ConnectionLabels, Gauge>,
    mqtt_reconnects: Counter,
    messages_redelivered: Counter,
    namespace_pauses: Counter,
    messages_rejected: Counter,
    feed_registrations: Gauge,
    feed_triggers_disabled: Counter,
    /// One series per feed trigger: its current state is 1.
    feed_trigger_state: Family<TriggerStateLabels, Gauge>,
    ready: Gauge,
    spool_bytes: Gauge,
    spool_messages: Gauge,
    spool_oldest_age: Gauge<f64, AtomicU64>,
    spool_fsync: Histogram,
    spool_full: Gauge,
    spool_replayed: Counter,
    spool_skipped_bytes: Counter,
    /// Each feed trigger's current series, to remove when its state changes.
    feed_trigger_labels: Mutex<HashMap<(String, String), TriggerStateLabels>>,
    // Alarm catch-up.
    alarm_ticks_missed: Family<AlarmNameLabels, Counter>,
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~33 s: a local controller answers in ms, a struggling one in seconds.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mqtt_whisk");
        let inner = Inner {
            messages_received: Family::default(),
            fires: Family::default(),
            fires_in_flight: Gauge::default(),
            fire_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            alarm_fires: Family::default(),
            mqtt_connected: Family::default(),
            mqtt_reconnects: Counter::default(),
            messages_redelivered: Counter::default(),
            namespace_pauses: Counter::default(),
            messages_rejected: Counter::default(),
            feed_registrations: Gauge::default(),
            feed_triggers_disabled: Counter::default(),
            feed_trigger_state: Family::default(),
            feed_trigger_labels: Mutex::default(),
            ready: Gauge::default(),
            spool_bytes: Gauge::default(),
            spool_messages: Gauge::default(),
            spool_oldest_age: Gauge::default(),
            // 0.1 ms to ~3 s: a local SSD syncs in a fraction of a millisecond.
            spool_fsync: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            spool_full: Gauge::default(),
            spool_replayed: Counter::default(),
            spool_skipped_bytes: Counter::default(),
            registry: Registry::default(),
            // Alarm catch-up.
            alarm_ticks_missed: Family::default(),
        };
        registry.register(
            "alarm_ticks_missed",
            "Alarm ticks that fell while the provider was down and were too old to catch up (ALARM_CATCHUP_SECS), so never fired",
            inner.alarm_ticks_missed.clone(),
        );
        registry.register(
            "messages_received",
            "MQTT messages received, by the subscribed filter they matched",
            inner.messages_received.clone(),
        );
        registry.register(
            "fires",
            "Trigger fire attempts, by kind, outcome and HTTP status",
            inner.fires.clone(),
        );
        registry.register(
            "fires_in_flight",
            "Fires being sent or retried now",
            inner.fires_in_flight.clone(),
        );
        registry.register(
            "fire_duration_seconds",
            "Time from first attempt to final answer of a fire, retries included",
            inner.fire_duration.clone(),
        );
        registry.register(
            "alarm_fires",
            "Alarm ticks, by alarm and final outcome (gave_up: not delivered before the next tick)",
            inner.alarm_fires.clone(),
        );
        registry.register(
            "mqtt_connected",
            "1 while the connection (by MQTT client id) is up, else 0",
            inner.mqtt_connected.clone(),
        );
        registry.register(
            "mqtt_reconnects",
            "Broker connections lost",
            inner.mqtt_reconnects.clone(),
        );
        registry.register(
            "messages_redelivered",
            "Copies the broker resent of messages already being fired or accepted; not fired again",
            inner.messages_redelivered.clone(),
        );
        registry.register(
            "namespace_pauses",
            "Times a 429 paused every fire until the next minute",
            inner.namespace_pauses.clone(),
        );
        registry.register(
            "messages_rejected",
            "Messages acknowledged unfired because OpenWhisk can never accept them (refused, or too large on their own)",
            inner.messages_rejected.clone(),
        );
        registry.register(
            "feed_registrations",
            "Triggers registered through the feed API, active or not",
            inner.feed_registrations.clone(),
        );
        registry.register(
            "feed_triggers_disabled",
            "Feed registrations disabled because OpenWhisk answered 401/403/404 for FEED_DISABLE_AFTER_SECS",
            inner.feed_triggers_disabled.clone(),
        );
        registry.register(
            "feed_trigger_state",
            "1 for each feed trigger's current state (accepting, failing with its status, paused, disabled)",
            inner.feed_trigger_state.clone(),
        );
        registry.register(
            "ready",
            "1 when /readyz would answer 200 (every connection subscribed, OpenWhisk accepting, the spool taking messages), else 0",
            inner.ready.clone(),
        );
        registry.register(
            "spool_bytes",
            "Disk the spool's files take (SPOOL_MAX_BYTES bounds it)",
            inner.spool_bytes.clone(),
        );
        registry.register(
            "spool_messages",
            "Messages in the spool whose fires are not all final yet",
            inner.spool_messages.clone(),
        );
        registry.register(
            "spool_oldest_message_age_seconds",
            "Age of the oldest message in the spool not finished yet (0 when none)",
            inner.spool_oldest_age.clone(),
        );
        registry.register(
            "spool_fsync_seconds",
            "Time of each group commit's fdatasync; its count is the number of fsyncs",
            inner.spool_fsync.clone(),
        );
        registry.register(
            "spool_full",
            "1 while the spool is at SPOOL_MAX_BYTES and the broker is not acknowledged",
            inner.spool_full.clone(),
        );
        registry.register(
            "spool_replayed_messages",
            "Messages found unfinished in the spool at start and fired again (some may be duplicates)",
            inner.spool_replayed.clone(),
        );
        registry.register(
            "spool_skipped_bytes",
            "Bytes of damaged or torn spool records skipped at start",
            inner.spool_skipped_bytes.clone(),
        );
        Metrics(Arc::new(Inner { registry, ..inner }))
    }
}

impl Metrics {
    /// The counter of messages received on `filter`, looked up once per filter so that
    /// counting a message allocates nothing.
    pub fn received_counter(&self, filter: &str) -> Counter {
        let labels = FilterLabels {
            filter: filter.to_owned(),
        };
        self.0.messages_received.get_or_create_owned(&labels)
    }

    pub fn fire_attempt(&self, kind: FireKind, outcome: FireOutcome, status: &str) {
        self.0
            .fires
            .get_or_create(&FireLabels {
                kind: kind.label(),
                outcome: outcome.label(),
                status: status.to_owned(),
            })
            .inc();
    }

    pub fn fire_finished(&self, kind: FireKind, seconds: f64) {
        self.0
            .fire_duration
            .get_or_create(&KindLabels { kind: kind.label() })
            .observe(seconds);
    }

    /// Counts a fire in flight until the returned guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.0.fires_in_flight.inc();
        InFlight(self.clone())
    }

    /// Counts `ticks` of `alarm` missed while down and not caught up.
    pub fn alarm_ticks_missed(&self, alarm: &str, ticks: u64) {
        self.0
            .alarm_ticks_missed
            .get_or_create(&AlarmNameLabels {
                alarm: alarm.to_owned(),
            })
            .inc_by(ticks);
    }

    pub fn alarm_fire(&self, alarm: &str, outcome: TickOutcome) {
        self.0
            .alarm_fires
            .get_or_create(&AlarmLabels {
                alarm: alarm.to_owned(),
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Whether the connection with client id `connection` is up.
    pub fn mqtt_connected(&self, connection: &str, connected: bool) {
        let labels = ConnectionLabels {
            connection: connection.to_owned(),
        };
        self.0
            .mqtt_connected
            .get_or_create(&labels)
            .set(i64::from(connected));
    }

    /// Forgets a connection closed for good (its last route was deleted).
    pub fn mqtt_connection_closed(&self, connection: &str) {
        let labels = ConnectionLabels {
            connection: connection.to_owned(),
        };
        self.0.mqtt_connected.remove(&labels);
    }

    pub fn feed_registrations(&self, count: usize) {
        self.0
            .feed_registrations
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn feed_registrations_changed(&self, delta: i64) {
        self.0.feed_registrations.inc_by(delta);
    }

    /// A feed trigger's state changed to `state`; `None`: it was deleted.
    pub fn feed_trigger_state(&self, namespace: &str, trigger: &str, state: Option<&TriggerState>) {
        let key = (namespace.to_owned(), trigger.to_owned());
        let mut current = self
            .0
            .feed_trigger_labels
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(old) = current.remove(&key) {
            self.0.feed_trigger_state.remove(&old);
        }
        if let Some(state) = state {
            let labels = TriggerStateLabels {
                namespace: key.0.clone(),
                trigger: key.1.clone(),
                state: state.state,
                status: state.status.clone(),
            };
            self.0.feed_trigger_state.get_or_create(&labels).set(1);
            current.insert(key, labels);
        }
    }

    pub fn feed_trigger_disabled(&self) {
        self.0.feed_triggers_disabled.inc();
    }

    pub fn ready(&self, ready: bool) {
        self.0.ready.set(i64::from(ready));
    }

    pub fn spool_usage(&self, bytes: u64, messages: u64) {
        self.0
            .spool_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.0
            .spool_messages
            .set(i64::try_from(messages).unwrap_or(i64::MAX));
    }

    pub fn spool_oldest_age(&self, seconds: f64) {
        self.0.spool_oldest_age.set(seconds);
    }

    pub fn spool_fsync(&self, seconds: f64) {
        self.0.spool_fsync.observe(seconds);
    }

    pub fn spool_full(&self, full: bool) {
        self.0.spool_full.set(i64::from(full));
    }

    /// What opening a spool found: records fired again, damaged bytes skipped.
    pub fn spool_opened(&self, replayed: u64, skipped_bytes: u64) {
        self.0.spool_replayed.inc_by(replayed);
        self.0.spool_skipped_bytes.inc_by(skipped_bytes);
    }

    pub fn mqtt_reconnect(&self) {
        self.0.mqtt_reconnects.inc();
    }

    pub fn message_redelivered(&self) {
        self.0.messages_redelivered.inc();
    }

    pub fn namespace_paused(&self) {
        self.0.namespace_pauses.inc();
    }

    pub fn messages_rejected(&self, count: u64) {
        self.0.messages_rejected.inc_by(count);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.0.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
impl Metrics {
    /// The value of `series` (without the `mqtt_whisk_` prefix, labels as encoded), or 0
    /// when it has not been counted.
    pub fn sample(&self, series: &str) -> f64 {
        let series = format!("mqtt_whisk_{series} ");
        self.encode()
            .lines()
            .find_map(|line| line.strip_prefix(&series))
            .map_or(0.0, |value| value.parse().unwrap())
    }
}

/// Decrements the in-flight gauge on drop, so no early return can leak a count.
pub struct InFlight(Metrics);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.0.fires_in_flight.dec();
    }
}
