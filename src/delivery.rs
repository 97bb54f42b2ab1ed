//! Delivering one fire: retry with capped, jittered exponential backoff until OpenWhisk
//! gives a final answer (SPEC section 4). Used by message and alarm fires alike;
//! [`events`] logs and counts what each attempt and each alarm tick came to.

pub mod events;

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use tokio::time::Instant;

use crate::metrics::FireKind;
use crate::openwhisk::{Answer, Sink, Target, Verdict};
use crate::pause::Pauses;
use crate::routes::Destination;
use events::Events;

/// One fire to deliver.
pub struct Fire<'a> {
    pub kind: FireKind,
    pub target: &'a Target,
    pub body: Bytes,
    /// What the fire is about, for logs: the topic, or the alarm's name.
    pub subject: &'a str,
    /// The MQTT messages it carries (0 for an alarm): rejections are counted in messages,
    /// and a fire of several that is too large is handed back to be split.
    pub messages: usize,
    /// The MQTT payload bytes of those messages, logged next to the fire's size when it
    /// is rejected: JSON escaping can make a reading several times larger as a fire.
    pub payload_bytes: usize,
    /// Give up retrying at this instant (an alarm's next tick); `None` = never.
    pub deadline: Option<Instant>,
    /// The route's destination, told of every answer (a message fire's; `None` for an
    /// alarm's).
    pub destination: Option<&'a Destination>,
}

/// The final result of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Accepted,
    NoActiveRule,
    /// OpenWhisk can never accept it (or it is over the payload limit): do not retry.
    Rejected,
    /// Over a payload limit, but it carries several messages, which may fit in smaller
    /// fires: not final, the caller sends them again in parts.
    TooLarge,
    /// The deadline came first.
    GaveUp,
    /// The route's destination was deleted, paused, disabled or replaced meanwhile: no
    /// more attempts (an attempt already sent got its answer first).
    Retired,
}

impl Delivered {
    /// Whether the source may forget the message: OpenWhisk took it, or never will.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Delivered::Accepted | Delivered::NoActiveRule | Delivered::Rejected
        )
    }
}

/// Sends fires with the retry rules; shared by all fires of the process.
pub struct Deliverer {
    pub sink: Arc<dyn Sink>,
    /// One 429 pause per namespace: a throttled namespace never pauses another.
    pub pauses: Pauses,
    /// What operators see of each attempt and its result.
    pub events: Events,
    pub max_payload_bytes: usize,
}

/// Backoff for transient failures (the controller is restarting or overloaded) and, on
/// top of the namespace's pause, for throttles.
fn retry_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Backoff for 401/403/404: a person must act; a slow retry notices when they have.
fn not_ready_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(15))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Longest `Retry-After` honoured, so a bad header cannot stall delivery for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

impl Deliverer {
    /// Delivers `fire`, retrying transient failures without limit (or until its deadline).
    pub async fn deliver(&self, fire: Fire<'_>) -> Delivered {
        let _in_flight = self.events.in_flight();
        if fire.body.len() > self.max_payload_bytes {
            let detail = format!(
                "larger than FIRE_MAX_PAYLOAD_BYTES ({})",
                self.max_payload_bytes
            );
            return self.too_large(&fire, "local", &detail, None);
        }
        let pause = self.pauses.of(&fire.target.namespace);
        let started = Instant::now();
        let mut retry = retry_backoff();
        let mut not_ready = not_ready_backoff();
        loop {
            if let Some(stopped) = wait_unless_stopped(pause.wait(), &fire).await {
                return stopped;
            }
            let answer = self.sink.fire(fire.target, fire.body.clone()).await;
            if let Some(destination) = fire.destination {
                destination.answered(&answer);
            }
            let status = status_label(&answer);
            let delay = match answer.verdict {
                Verdict::Accepted => {
                    self.events.fire_accepted(&fire, &status, started.elapsed());
                    return Delivered::Accepted;
                }
                Verdict::NoActiveRule => {
                    self.events
                        .no_active_rule(&fire, &status, started.elapsed());
                    return Delivered::NoActiveRule;
                }
                Verdict::Rejected => {
                    let took = Some(started.elapsed());
                    self.events
                        .fire_rejected(&fire, &status, &answer.detail, took);
                    return Delivered::Rejected;
                }
                Verdict::TooLarge => {
                    let took = Some(started.elapsed());
                    return self.too_large(&fire, &status, &answer.detail, took);
                }
                Verdict::Throttled { retry_after } => {
                    let paused = pause.pause(retry_after.map(|d| d.min(MAX_RETRY_AFTER)));
                    self.events.fire_throttled(&fire, &status, &answer, paused);
                    // This fire's own backoff starts when the pause ends, so that the
                    // fires waiting for it do not all retry at the same instant.
                    if let Some(stopped) = wait_unless_stopped(pause.wait(), &fire).await {
                        return stopped;
                    }
                    retry.next().unwrap_or(Duration::from_secs(10))
                }
                Verdict::NotReady => {
                    self.events.fire_not_ready(&fire, &status, &answer);
                    not_ready.next().unwrap_or(Duration::from_secs(15))
                }
                Verdict::Transient { retry_after } => {
                    self.events.fire_failed(&fire, &status, &answer);
                    let backoff = retry.next().unwrap_or(Duration::from_secs(10));
                    retry_after.map_or(backoff, |r| r.min(MAX_RETRY_AFTER).max(backoff))
                }
            };
            if let Some(stopped) = wait_unless_stopped(tokio::time::sleep(delay), &fire).await {
                return stopped;
            }
        }
    }

    /// A fire over a payload limit: handed back to be split when it carries several
    /// messages, rejected when it is one message (or an alarm) too large on its own.
    /// `took`: how long it was being sent, `None` when refused before sending.
    fn too_large(
        &self,
        fire: &Fire<'_>,
        status: &str,
        detail: &str,
        took: Option<Duration>,
    ) -> Delivered {
        if fire.messages > 1 {
            self.events.batch_split(fire, status, detail);
            Delivered::TooLarge
        } else {
            self.events.fire_rejected(fire, status, detail, took);
            Delivered::Rejected
        }
    }
}

/// The `status` label of an answer: its HTTP status, or `none` when no answer came.
fn status_label(answer: &Answer) -> String {
    answer
        .status
        .map_or_else(|| "none".to_owned(), |s| s.as_u16().to_string())
}

/// Runs `wait` unless the fire's deadline comes or its destination is retired first;
/// then what the delivery came to. Only waits are cut short: a request being sent gets
/// its answer, so nothing reaches OpenWhisk after a DELETE was answered.
async fn wait_unless_stopped(wait: impl Future<Output = ()>, fire: &Fire<'_>) -> Option<Delivered> {
    let retired = async {
        match fire.destination {
            Some(destination) => destination.retired().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        () = retired => Some(Delivered::Retired),
        waited = wait_or_deadline(wait, fire.deadline) => (!waited).then_some(Delivered::GaveUp),
    }
}

/// Runs `wait` unless `deadline` comes first; false when the deadline came.
async fn wait_or_deadline(wait: impl Future<Output = ()>, deadline: Option<Instant>) -> bool {
    match deadline {
        None => {
            wait.await;
            true
        }
        Some(deadline) => tokio::time::timeout_at(deadline, wait).await.is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::health::Health;
    use crate::health::test_logs::Logs;
    use crate::metrics::Metrics;
    use crate::openwhisk::scripted::{self, Scripted};

    fn deliverer(sink: Arc<dyn Sink>) -> (Deliverer, Metrics) {
        let metrics = Metrics::default();
        let deliverer = Deliverer {
            sink,
            pauses: Pauses::default(),
            events: Events::new(Health::default(), metrics.clone()),
            max_payload_bytes: 1 << 20,
        };
        (deliverer, metrics)
    }

    fn fire(target: &Target) -> Fire<'_> {
        Fire {
            kind: FireKind::Message,
            target,
            body: Bytes::from_static(b"{}"),
            subject: "dc1/sensors/t1",
            messages: 1,
            payload_bytes: 2,
            deadline: None,
            destination: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_namespace_never_pauses_fires_to_another() {
        let throttled = AtomicBool::new(false);
        let sink = Scripted::new(move |target| {
            if &*target.namespace == "a" && !throttled.swap(true, Ordering::SeqCst) {
                Answer {
                    verdict: Verdict::Throttled {
                        retry_after: Some(Duration::from_secs(5)),
                    },
                    ..scripted::status(429)
                }
            } else {
                scripted::status(202)
            }
        });
        let (deliverer, metrics) = deliverer(sink.clone());
        let (a, b) = (Target::new(None, "a", "t"), Target::new(None, "b", "t"));
        let start = Instant::now();
        // Polled in order: a's first fire is throttled before b's and a's second start.
        let delivered = tokio::join!(
            deliverer.deliver(fire(&a)),
            deliverer.deliver(fire(&b)),
            deliverer.deliver(fire(&a)),
        );
        assert_eq!(
            delivered,
            (
                Delivered::Accepted,
                Delivered::Accepted,
                Delivered::Accepted
            )
        );
        let fires = sink.fires();
        let at = |namespace: &str| -> Vec<Duration> {
            let fires = fires.iter().filter(|(_, ns)| &**ns == namespace);
            fires.map(|(at, _)| *at - start).collect()
        };
        assert_eq!(at("b"), [Duration::ZERO], "b fired at once");
        let a_fires = at("a");
        assert_eq!(a_fires.len(), 3, "the 429, then both fires: {a_fires:?}");
        assert!(
            a_fires[1..].iter().all(|t| *t >= Duration::from_secs(5)),
            "every fire to a waited for a's pause: {a_fires:?}"
        );
        assert_eq!(metrics.sample("namespace_pauses_total"), 1.0);
    }

    #[tokio::test]
    async fn a_rejected_fire_logs_the_readings_own_size_next_to_the_fires() {
        let (logs, _guard) = Logs::capture();
        let (mut deliverer, metrics) = deliverer(Scripted::new(|_| scripted::status(202)));
        deliverer.max_payload_bytes = 100;
        let target = Target::new(None, "_", "t");
        let fire = Fire {
            body: Bytes::from(vec![b' '; 600]),
            payload_bytes: 180,
            ..fire(&target)
        };
        assert_eq!(deliverer.deliver(fire).await, Delivered::Rejected);
        let rejected = logs.lines("can never accept");
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert!(
            rejected[0].contains("size=600") && rejected[0].contains("payload_bytes=180"),
            "{}",
            rejected[0]
        );
        let counted = r#"fires_total{kind="message",outcome="rejected",status="local"}"#;
        assert_eq!(metrics.sample(counted), 1.0);
        assert_eq!(metrics.sample("messages_rejected_total"), 1.0);
    }
}
