//! What `/readyz` reports, and the logs that go with a change of state: one line when the
//! broker or OpenWhisk changes state, and while OpenWhisk fails one reminder per interval
//! instead of one error per message.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a persisting failure is logged again.
pub const REMINDER_INTERVAL: Duration = Duration::from_secs(60);

/// The broker connection as readiness sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerState {
    Disconnected,
    /// Connected, SUBACK not yet received.
    Connected,
    Subscribed,
    /// The broker refused these filters in its SUBACK.
    Refused(Vec<String>),
}

/// Shared readiness state; cheap to clone.
#[derive(Clone)]
pub struct Health(Arc<Mutex<State>>);

struct State {
    broker: BrokerState,
    openwhisk: Option<Failure>,
    no_rule: Option<Reminder>,
    split: Option<Reminder>,
}

/// OpenWhisk not accepting fires: since when, why, and how often since the last log.
struct Failure {
    problem: String,
    /// Whether readiness fails (401/403/404/5xx/unreachable) or only the log (429 is
    /// OpenWhisk's flow control working as intended).
    blocks_readiness: bool,
    since: Instant,
    reminder: Reminder,
}

struct Reminder {
    last_logged: Instant,
    count: u64,
}

impl Reminder {
    fn new() -> Reminder {
        Reminder {
            last_logged: Instant::now(),
            count: 0,
        }
    }

    /// Counts one more in `slot`; returns how many to report if this one is logged (the
    /// first, or the first after an interval).
    fn due_in(slot: &mut Option<Reminder>) -> Option<u64> {
        match slot {
            None => {
                *slot = Some(Reminder::new());
                Some(1)
            }
            Some(reminder) => reminder.due(),
        }
    }

    /// Counts one more; returns how many were suppressed if it is time to log again.
    fn due(&mut self) -> Option<u64> {
        self.count += 1;
        (self.last_logged.elapsed() >= REMINDER_INTERVAL).then(|| {
            self.last_logged = Instant::now();
            std::mem::take(&mut self.count)
        })
    }
}

impl Default for Health {
    fn default() -> Self {
        Health(Arc::new(Mutex::new(State {
            broker: BrokerState::Disconnected,
            openwhisk: None,
            no_rule: None,
            split: None,
        })))
    }
}

impl Health {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set_broker(&self, broker: BrokerState) {
        self.state().broker = broker;
    }

    /// `Ok` when ready; otherwise every reason, for `/readyz`.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let state = self.state();
        let mut reasons = Vec::new();
        match &state.broker {
            BrokerState::Disconnected => {
                reasons.push("not connected to the MQTT broker".to_owned())
            }
            BrokerState::Connected => {
                reasons.push("not subscribed yet (waiting for SUBACK)".to_owned())
            }
            BrokerState::Refused(filters) => reasons.push(format!(
                "broker refused the subscription to {}",
                filters.join(", ")
            )),
            BrokerState::Subscribed => {}
        }
        if let Some(failure) = state.openwhisk.as_ref().filter(|f| f.blocks_readiness) {
            reasons.push(format!(
                "OpenWhisk is not accepting fires: {}",
                failure.problem
            ));
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    /// Records an answer OpenWhisk took; logs the recovery if it had been failing.
    pub fn openwhisk_accepting(&self) {
        if let Some(failure) = self.state().openwhisk.take() {
            tracing::info!(
                after_secs = failure.since.elapsed().as_secs(),
                failures_since_last_log = failure.reminder.count,
                "OpenWhisk is accepting fires again"
            );
        }
    }

    /// Records a failed attempt. Logs when the problem starts or changes, then once per
    /// [`REMINDER_INTERVAL`] with the number of failures in between.
    pub fn openwhisk_failing(&self, problem: &str, blocks_readiness: bool) {
        let mut state = self.state();
        match state.openwhisk.as_mut() {
            Some(failure) if failure.problem == problem => {
                if let Some(count) = failure.reminder.due() {
                    tracing::error!(
                        problem,
                        failing_for_secs = failure.since.elapsed().as_secs(),
                        failures_since_last_log = count,
                        "OpenWhisk is still not accepting fires; messages are kept and retried"
                    );
                }
            }
            _ => {
                tracing::error!(
                    problem,
                    "OpenWhisk is not accepting fires; messages are kept and retried"
                );
                state.openwhisk = Some(Failure {
                    problem: problem.to_owned(),
                    blocks_readiness,
                    since: Instant::now(),
                    reminder: Reminder::new(),
                });
            }
        }
    }

    /// A 204: accepted, but no rule starts an action. Warned once per interval.
    pub fn no_active_rule(&self, trigger: &str) {
        if let Some(count) = Reminder::due_in(&mut self.state().no_rule) {
            tracing::warn!(
                trigger,
                fires = count,
                "trigger has no active rule: OpenWhisk accepted the fires (204) but starts no action"
            );
        }
    }

    /// A batch of `messages` was larger than OpenWhisk takes (`detail` says by how much),
    /// so its messages go again in halves. Warned once per interval: it means
    /// `FIRE_MAX_PAYLOAD_BYTES` is above the namespace's payload limit.
    pub fn batch_split(&self, messages: usize, detail: &str) {
        if let Some(count) = Reminder::due_in(&mut self.state().split) {
            tracing::warn!(
                messages,
                detail,
                batches_split = count,
                "batch too large for OpenWhisk, sent again in halves; set FIRE_MAX_PAYLOAD_BYTES to the namespace's payload limit"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_subscribed_and_openwhisk_accepts() {
        let health = Health::default();
        assert_eq!(
            health.readiness().unwrap_err(),
            ["not connected to the MQTT broker"]
        );
        health.set_broker(BrokerState::Subscribed);
        assert!(health.readiness().is_ok());
        health.openwhisk_failing("404 trigger t does not exist", true);
        assert_eq!(
            health.readiness().unwrap_err(),
            ["OpenWhisk is not accepting fires: 404 trigger t does not exist"]
        );
        health.openwhisk_accepting();
        assert!(health.readiness().is_ok());
    }

    #[test]
    fn throttling_is_logged_but_keeps_readiness() {
        let health = Health::default();
        health.set_broker(BrokerState::Subscribed);
        health.openwhisk_failing("429 too many requests", false);
        assert!(health.readiness().is_ok());
    }
}
