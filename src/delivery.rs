//! Delivering one fire: retry with capped, jittered exponential backoff until OpenWhisk
//! gives a final answer (SPEC section 4). Used by message and alarm fires alike.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use tokio::time::Instant;

use crate::health::Health;
use crate::metrics::{FireKind, FireOutcome, Metrics};
use crate::openwhisk::{Answer, Sink, Target, Verdict};
use crate::pause::Pauses;

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
    /// Give up retrying at this instant (an alarm's next tick); `None` = never.
    pub deadline: Option<Instant>,
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
    pub health: Health,
    pub metrics: Metrics,
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
        if fire.body.len() > self.max_payload_bytes {
            let detail = format!(
                "larger than FIRE_MAX_PAYLOAD_BYTES ({})",
                self.max_payload_bytes
            );
            let (outcome, delivered) = self.too_large(&fire, "local", &detail);
            self.metrics.fire_attempt(fire.kind, outcome, "local");
            return delivered;
        }
        let pause = self.pauses.of(&fire.target.namespace);
        let started = Instant::now();
        let mut retry = retry_backoff();
        let mut not_ready = not_ready_backoff();
        loop {
            if !self.wait_or_deadline(pause.wait(), fire.deadline).await {
                return Delivered::GaveUp;
            }
            let answer = self.sink.fire(fire.target, fire.body.clone()).await;
            let delay = match self.record(&fire, &answer) {
                Some(done) => {
                    if done.is_final() {
                        self.metrics
                            .fire_finished(fire.kind, started.elapsed().as_secs_f64());
                    }
                    return done;
                }
                None => match answer.verdict {
                    Verdict::Throttled { retry_after } => {
                        if pause.pause(retry_after.map(|d| d.min(MAX_RETRY_AFTER))) {
                            self.metrics.namespace_paused();
                        }
                        // This fire's own backoff starts when the pause ends, so that the
                        // fires waiting for it do not all retry at the same instant.
                        if !self.wait_or_deadline(pause.wait(), fire.deadline).await {
                            return Delivered::GaveUp;
                        }
                        retry.next().unwrap_or(Duration::from_secs(10))
                    }
                    Verdict::NotReady => not_ready.next().unwrap_or(Duration::from_secs(15)),
                    Verdict::Transient { retry_after } => {
                        let backoff = retry.next().unwrap_or(Duration::from_secs(10));
                        retry_after.map_or(backoff, |r| r.min(MAX_RETRY_AFTER).max(backoff))
                    }
                    _ => unreachable!("final verdicts returned above"),
                },
            };
            if !self
                .wait_or_deadline(tokio::time::sleep(delay), fire.deadline)
                .await
            {
                return Delivered::GaveUp;
            }
        }
    }

    /// Counts and logs one answer; returns the final result, or `None` to retry.
    fn record(&self, fire: &Fire<'_>, answer: &Answer) -> Option<Delivered> {
        let status = answer
            .status
            .map_or_else(|| "none".to_owned(), |s| s.as_u16().to_string());
        let problem = || match answer.status {
            Some(code) => format!("{code}: {}", answer.detail),
            None => answer.detail.clone(),
        };
        let (outcome, result) = match &answer.verdict {
            Verdict::Accepted => {
                self.health.openwhisk_accepting();
                (FireOutcome::Accepted, Some(Delivered::Accepted))
            }
            Verdict::NoActiveRule => {
                self.health.openwhisk_accepting();
                self.health.no_active_rule(&fire.target.trigger);
                (FireOutcome::NoActiveRule, Some(Delivered::NoActiveRule))
            }
            Verdict::Rejected => (
                self.reject(fire, &status, &answer.detail),
                Some(Delivered::Rejected),
            ),
            Verdict::TooLarge => {
                let (outcome, delivered) = self.too_large(fire, &status, &answer.detail);
                (outcome, Some(delivered))
            }
            Verdict::Throttled { .. } => {
                self.health.openwhisk_failing(&problem(), false);
                (FireOutcome::Retried, None)
            }
            Verdict::NotReady => {
                let hint = match answer.status.map(|s| s.as_u16()) {
                    Some(404) => format!(
                        " (does trigger {:?} exist? create it once with wsk)",
                        fire.target.trigger
                    ),
                    Some(401 | 403) => " (check OW_AUTH and OW_NAMESPACE)".to_owned(),
                    _ => {
                        " (not OpenWhisk's own answer: check OW_API_HOST, http or https)".to_owned()
                    }
                };
                self.health.openwhisk_failing(&(problem() + &hint), true);
                (FireOutcome::Retried, None)
            }
            Verdict::Transient { .. } => {
                self.health.openwhisk_failing(&problem(), true);
                (FireOutcome::Retried, None)
            }
        };
        self.metrics.fire_attempt(fire.kind, outcome, &status);
        result
    }

    /// A fire over a payload limit: handed back to be split when it carries several
    /// messages, rejected when it is one message (or an alarm) too large on its own.
    fn too_large(&self, fire: &Fire<'_>, status: &str, detail: &str) -> (FireOutcome, Delivered) {
        if fire.messages > 1 {
            self.health.batch_split(fire.messages, detail);
            (FireOutcome::Split, Delivered::TooLarge)
        } else {
            (self.reject(fire, status, detail), Delivered::Rejected)
        }
    }

    /// Logs and counts a fire that can never be accepted; its messages are then acked.
    fn reject(&self, fire: &Fire<'_>, status: &str, detail: &str) -> FireOutcome {
        tracing::warn!(
            kind = ?fire.kind, subject = fire.subject, size = fire.body.len(), status, detail,
            "OpenWhisk can never accept this fire; dropped"
        );
        self.metrics.messages_rejected(fire.messages as u64);
        FireOutcome::Rejected
    }

    /// Runs `wait` unless `deadline` comes first; false when the deadline came.
    async fn wait_or_deadline(
        &self,
        wait: impl Future<Output = ()>,
        deadline: Option<Instant>,
    ) -> bool {
        match deadline {
            None => {
                wait.await;
                true
            }
            Some(deadline) => tokio::time::timeout_at(deadline, wait).await.is_ok(),
        }
    }
}
