//! What operators see of each fire attempt and each alarm tick: one call per event logs
//! it and counts it, so `/metrics` and the log cannot disagree. Events that come with
//! every message are logged through [`Health`], once per interval with a count.

use std::sync::Arc;
use std::time::Duration;

use super::Fire;
use crate::alarm::Alarm;
use crate::health::{Health, TriggerState};
use crate::metrics::{FireOutcome, InFlight, Metrics, TickOutcome};
use crate::openwhisk::Answer;

/// Logs and counts events; cheap to clone.
#[derive(Clone)]
pub struct Events {
    health: Health,
    metrics: Metrics,
}

impl Events {
    pub fn new(health: Health, metrics: Metrics) -> Events {
        Events { health, metrics }
    }

    /// Counts a fire in flight until the returned guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.metrics.in_flight()
    }

    /// 2xx: OpenWhisk started an activation. `took`: since the first attempt.
    pub fn fire_accepted(&self, fire: &Fire<'_>, status: &str, took: Duration) {
        tracing::debug!(
            kind = ?fire.kind, namespace = %fire.target.namespace, trigger = %fire.target.trigger,
            subject = fire.subject, status, "fire accepted"
        );
        self.accepting(fire);
        self.metrics
            .fire_attempt(fire.kind, FireOutcome::Accepted, status);
        self.metrics.fire_finished(fire.kind, took.as_secs_f64());
    }

    /// 204: OpenWhisk took the fire, but no active rule starts an action.
    pub fn no_active_rule(&self, fire: &Fire<'_>, status: &str, took: Duration) {
        self.accepting(fire);
        self.health
            .no_active_rule(&fire.target.namespace, &fire.target.trigger);
        self.metrics
            .fire_attempt(fire.kind, FireOutcome::NoActiveRule, status);
        self.metrics.fire_finished(fire.kind, took.as_secs_f64());
    }

    /// A fire that can never be accepted (a 400, or too large on its own); its messages
    /// are then acknowledged. `took`: `None` when it was refused before sending.
    pub fn fire_rejected(
        &self,
        fire: &Fire<'_>,
        status: &str,
        detail: &str,
        took: Option<Duration>,
    ) {
        tracing::warn!(
            kind = ?fire.kind, namespace = %fire.target.namespace, trigger = %fire.target.trigger,
            subject = fire.subject, size = fire.body.len(),
            payload_bytes = (fire.messages > 0).then_some(fire.payload_bytes), status, detail,
            "OpenWhisk can never accept this fire; dropped"
        );
        self.metrics
            .fire_attempt(fire.kind, FireOutcome::Rejected, status);
        self.metrics.messages_rejected(fire.messages as u64);
        if let Some(took) = took {
            self.metrics.fire_finished(fire.kind, took.as_secs_f64());
        }
    }

    /// A batch too large for OpenWhisk: its messages go again in two smaller fires.
    pub fn batch_split(&self, fire: &Fire<'_>, status: &str, detail: &str) {
        self.health.batch_split(fire.messages, detail);
        self.metrics
            .fire_attempt(fire.kind, FireOutcome::Split, status);
    }

    /// A 429, retried once the namespace's pause is over; `paused`: this answer began
    /// (or extended) the pause.
    pub fn fire_throttled(&self, fire: &Fire<'_>, status: &str, answer: &Answer, paused: bool) {
        self.health
            .openwhisk_throttled(&fire.target.namespace, &problem(answer));
        self.metrics
            .fire_attempt(fire.kind, FireOutcome::Retried, status);
        if paused {
            self.metrics.namespace_paused();
        }
    }

    /// A feed trigger's state, for `/readyz` and `/metrics` (see `Health::feed_trigger`).
    pub fn feed_trigger(&self, namespace: &Arc<str>, trigger: &Arc<str>, problem: Option<&str>) {
        if let Some(state) = self.health.feed_trigger(namespace, trigger, problem) {
            self.metrics
                .feed_trigger_state(namespace, trigger, Some(&state));
        }
    }

    /// A feed trigger (re)registered and routed: accepting until its fires say otherwise.
    pub fn feed_trigger_routed(&self, namespace: &Arc<str>, trigger: &Arc<str>) {
        self.health.feed_trigger(namespace, trigger, None);
        let accepting = TriggerState::of(None);
        self.metrics
            .feed_trigger_state(namespace, trigger, Some(&accepting));
    }

    /// A feed trigger was deleted: nothing is shown of it any more.
    pub fn feed_trigger_deleted(&self, namespace: &Arc<str>, trigger: &Arc<str>) {
        self.health.feed_trigger(namespace, trigger, None);
        self.metrics.feed_trigger_state(namespace, trigger, None);
    }

    /// OpenWhisk took a fire: whatever failed before is over, for its feed trigger or
    /// for the provider's own triggers.
    fn accepting(&self, fire: &Fire<'_>) {
        match fire.destination {
            Some(destination) if destination.is_feed() => {
                let target = fire.target;
                self.feed_trigger(&target.namespace, &target.trigger, None);
            }
            _ => self.health.openwhisk_accepting(),
        }
    }

    /// 401, 403, 404, a redirect, or a 400/413 not from OpenWhisk itself: retried
    /// slowly; the log and `/readyz` say what to check. A feed trigger's problem is its
    /// own: it does not make the provider unready, and is disabled if it goes on.
    pub fn fire_not_ready(&self, fire: &Fire<'_>, status: &str, answer: &Answer) {
        if let Some(destination) = fire.destination
            && destination.is_feed()
        {
            let problem = format!(
                "{} (disabled if this goes on for FEED_DISABLE_AFTER_SECS)",
                problem(answer)
            );
            self.feed_trigger(&fire.target.namespace, &fire.target.trigger, Some(&problem));
            self.metrics
                .fire_attempt(fire.kind, FireOutcome::Retried, status);
            return;
        }
        let hint = match answer.status.map(|s| s.as_u16()) {
            Some(404) => format!(
                " (does trigger {:?} exist? create it once with wsk)",
                fire.target.trigger
            ),
            Some(401 | 403) => " (check OW_AUTH and OW_NAMESPACE)".to_owned(),
            _ => " (not OpenWhisk's own answer: check OW_API_HOST, http or https)".to_owned(),
        };
        self.health.openwhisk_failing(&(problem(answer) + &hint));
        self.metrics
            .fire_attempt(fire.kind, FireOutcome::Retried, status);
    }

    /// No answer, a timeout, 408 or 5xx: retried with backoff.
    pub fn fire_failed(&self, fire: &Fire<'_>, status: &str, answer: &Answer) {
        self.health.openwhisk_failing(&problem(answer));
        self.metrics
            .fire_attempt(fire.kind, FireOutcome::Retried, status);
    }

    /// The final result of an alarm tick scheduled at `scheduled_at`; `next_fire` is the
    /// alarm's next tick, in its zone.
    pub fn alarm_tick(
        &self,
        alarm: &Alarm,
        scheduled_at: &str,
        next_fire: Option<&str>,
        outcome: TickOutcome,
    ) {
        let (name, trigger) = (alarm.name.as_str(), alarm.trigger.as_str());
        match outcome {
            TickOutcome::Accepted | TickOutcome::NoActiveRule => tracing::info!(
                alarm = name,
                trigger,
                scheduled_at,
                next_fire,
                "alarm fired"
            ),
            TickOutcome::Rejected => tracing::error!(
                alarm = name,
                trigger,
                scheduled_at,
                "alarm tick rejected by OpenWhisk; it is not retried"
            ),
            TickOutcome::GaveUp => tracing::error!(
                alarm = name,
                trigger,
                scheduled_at,
                "alarm tick not delivered before the next tick"
            ),
        }
        self.metrics.alarm_fire(name, outcome);
    }
}

/// "{status}: {detail}", or the detail alone when no answer came.
fn problem(answer: &Answer) -> String {
    match answer.status {
        Some(code) => format!("{code}: {}", answer.detail),
        None => answer.detail.clone(),
    }
}
