//! What `/readyz` reports, and the logs that go with a change of state: one line when the
//! broker or OpenWhisk changes state, and while OpenWhisk fails one reminder per interval
//! instead of one error per message. A throttle (429) is OpenWhisk's flow control, not a
//! failure: warned about once per interval and namespace, never "recovered" from.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock, so that tests can step it; without a runtime it is the system's.
use tokio::time::Instant;

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
    /// Each MQTT connection's state, by client id.
    brokers: BTreeMap<Arc<str>, BrokerState>,
    /// Connections that carry only feed routes: like a feed trigger's problems, theirs
    /// are not a reason to be unready (one tenant's broker must not take the feed API off
    /// the Service).
    feed_only: BTreeSet<Arc<str>>,
    openwhisk: Option<Failure>,
    /// Feed triggers that are not accepting (refused, paused, disabled), by
    /// `(namespace, trigger)`: shown in `/readyz`, never a reason to be unready, since one
    /// tenant's deleted trigger must not take the feed API of all of them off the Service.
    triggers: BTreeMap<(Arc<str>, Arc<str>), TriggerProblem>,
    /// Per namespace, as the throttle is.
    throttled: HashMap<Arc<str>, Reminder>,
    /// Per (namespace, trigger): each trigger's missing rule is its own warning.
    no_rule: HashMap<(Arc<str>, Arc<str>), Reminder>,
    split: Option<Reminder>,
    /// What keeps a connection's spool from taking messages (full, or failing writes),
    /// by client id: the broker is not acknowledged meanwhile.
    spools: BTreeMap<Arc<str>, String>,
}

/// OpenWhisk not accepting fires: since when, why, and how often since the last log.
struct Failure {
    /// What the failures have in common while their texts change: see [`failure_group`].
    group: String,
    /// The latest failure's text, for `/readyz` and the reminders.
    problem: String,
    since: Instant,
    reminder: Reminder,
}

/// The start of a problem that stays the same while its detail changes (a 429's count, a
/// 404's hint): the HTTP status ("404" of "404 Not Found: ..." and of "404: ..."), or the
/// kind of transport error ("cannot connect" of "cannot connect: Connection refused").
fn failure_group(problem: &str) -> &str {
    let head = problem.split_once(':').map_or(problem, |(head, _)| head);
    match head.get(..3) {
        Some(status) if status.bytes().all(|b| b.is_ascii_digit()) => status,
        _ => head,
    }
}

/// A feed trigger's state as `/metrics` labels it: `accepting`, `failing` (with the
/// HTTP status, or the kind of connection error), `paused` or `disabled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerState {
    pub state: &'static str,
    pub status: String,
}

impl TriggerState {
    /// The state `problem` (as given to [`Health::feed_trigger`]) means.
    pub fn of(problem: Option<&str>) -> TriggerState {
        let (state, status) = match problem {
            None => ("accepting", ""),
            Some("paused") => ("paused", ""),
            Some(text) if text.starts_with("disabled") => ("disabled", ""),
            Some(text) => ("failing", failure_group(text)),
        };
        TriggerState {
            state,
            status: status.to_owned(),
        }
    }
}

/// What is wrong with a feed trigger, and when that was last logged.
struct TriggerProblem {
    text: String,
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
            brokers: BTreeMap::new(),
            feed_only: BTreeSet::new(),
            openwhisk: None,
            triggers: BTreeMap::new(),
            throttled: HashMap::new(),
            no_rule: HashMap::new(),
            split: None,
            spools: BTreeMap::new(),
        })))
    }
}

impl Health {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state of the connection with client id `connection`.
    pub fn set_broker(&self, connection: &Arc<str>, broker: BrokerState) {
        self.state().brokers.insert(connection.clone(), broker);
    }

    /// Forgets a connection closed for good (no route uses it any more).
    pub fn forget_broker(&self, connection: &str) {
        let mut state = self.state();
        state.brokers.remove(connection);
        state.feed_only.remove(connection);
        state.spools.remove(connection);
    }

    /// Whether `connection` carries only feed routes (see `State::feed_only`).
    pub fn feed_only_broker(&self, connection: &Arc<str>, feed_only: bool) {
        let mut state = self.state();
        match feed_only {
            true => state.feed_only.insert(connection.clone()),
            false => state.feed_only.remove(connection),
        };
    }

    /// What keeps `connection`'s spool from taking messages, or `None` once it takes them.
    pub fn spool_problem(&self, connection: &Arc<str>, problem: Option<String>) {
        let mut state = self.state();
        match problem {
            Some(problem) => state.spools.insert(connection.clone(), problem),
            None => state.spools.remove(connection),
        };
    }

    /// `Ok` when ready; otherwise every reason, for `/readyz`.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let state = self.state();
        let mut reasons = Vec::new();
        // With one connection, as most data centers run, its client id says nothing new.
        let several = state.brokers.len() > 1;
        let counted = state
            .brokers
            .iter()
            .filter(|(connection, _)| !state.feed_only.contains(*connection));
        for (connection, broker) in counted {
            let reason = match broker {
                BrokerState::Disconnected => "not connected to the MQTT broker".to_owned(),
                BrokerState::Connected => "not subscribed yet (waiting for SUBACK)".to_owned(),
                BrokerState::Refused(filters) => {
                    format!("broker refused the subscription to {}", filters.join(", "))
                }
                BrokerState::Subscribed => continue,
            };
            match several {
                true => reasons.push(format!("{reason} (connection {connection})")),
                false => reasons.push(reason),
            }
        }
        for (connection, problem) in &state.spools {
            match several {
                true => reasons.push(format!("{problem} (connection {connection})")),
                false => reasons.push(problem.clone()),
            }
        }
        if let Some(failure) = &state.openwhisk {
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

    /// Feed triggers that are not accepting, as `/namespace/trigger` -> what is wrong.
    pub fn trigger_problems(&self) -> BTreeMap<String, String> {
        let state = self.state();
        let shown = state
            .triggers
            .iter()
            .map(|((namespace, trigger), problem)| {
                (format!("/{namespace}/{trigger}"), problem.text.clone())
            });
        shown.collect()
    }

    /// A feed trigger's state: `None` when it accepts fires, else what is wrong
    /// ("paused", "disabled: ...", "404: ..."). A refusal is logged when it begins and
    /// then once per interval, naming the trigger. Returns the trigger's state when this
    /// changed it (see [`TriggerState::of`]), for the metrics.
    pub fn feed_trigger(
        &self,
        namespace: &Arc<str>,
        trigger: &Arc<str>,
        problem: Option<&str>,
    ) -> Option<TriggerState> {
        let mut state = self.state();
        let key = (namespace.clone(), trigger.clone());
        let Some(text) = problem else {
            let was = state.triggers.remove(&key)?;
            if !was.text.starts_with("disabled") && was.text != "paused" {
                tracing::info!(%namespace, %trigger, "feed trigger accepting fires");
            }
            return Some(TriggerState::of(None));
        };
        match state.triggers.get_mut(&key) {
            Some(known) if failure_group(&known.text) == failure_group(text) => {
                known.text = text.to_owned();
                if let Some(count) = known.reminder.due() {
                    tracing::warn!(%namespace, %trigger, problem = text, fires_since_last_log = count, "feed trigger still not accepting fires");
                }
                None
            }
            _ => {
                tracing::warn!(%namespace, %trigger, problem = text, "feed trigger not accepting fires");
                let problem = TriggerProblem {
                    text: text.to_owned(),
                    reminder: Reminder::new(),
                };
                state.triggers.insert(key, problem);
                Some(TriggerState::of(Some(text)))
            }
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

    /// Records a failed attempt. `problem` starts with the HTTP status or the kind of
    /// transport error, then `: ` and the detail ("503 Service Unavailable: ...",
    /// "cannot connect: ..."). Failures are grouped by that start, not by the whole text:
    /// logged when a group begins, then once per [`REMINDER_INTERVAL`] with the number of
    /// failures in between.
    pub fn openwhisk_failing(&self, problem: &str) {
        let mut state = self.state();
        let group = failure_group(problem);
        match state.openwhisk.as_mut() {
            Some(failure) if failure.group == group => {
                if failure.problem != problem {
                    failure.problem = problem.to_owned();
                }
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
                    group: group.to_owned(),
                    problem: problem.to_owned(),
                    since: Instant::now(),
                    reminder: Reminder::new(),
                });
            }
        }
    }

    /// A 429 from `namespace`: OpenWhisk's flow control, so fires to it wait for the next
    /// minute and nothing is wrong. Leaves readiness alone, is warned about once per
    /// interval and namespace with a count, and has no recovery to log.
    pub fn openwhisk_throttled(&self, namespace: &Arc<str>, problem: &str) {
        let mut state = self.state();
        let reminder = match state.throttled.get_mut(namespace) {
            Some(reminder) => reminder.due(),
            None => {
                state.throttled.insert(namespace.clone(), Reminder::new());
                Some(1)
            }
        };
        if let Some(count) = reminder {
            tracing::warn!(
                %namespace,
                problem,
                fires_throttled_since_last_log = count,
                "OpenWhisk is throttling fires to this namespace; they wait for the next minute"
            );
        }
    }

    /// A 204: accepted, but no rule starts an action. Warned once per interval.
    pub fn no_active_rule(&self, namespace: &Arc<str>, trigger: &Arc<str>) {
        let mut state = self.state();
        let key = (namespace.clone(), trigger.clone());
        let reminder = match state.no_rule.get_mut(&key) {
            Some(reminder) => reminder.due(),
            None => {
                state.no_rule.insert(key, Reminder::new());
                Some(1)
            }
        };
        if let Some(count) = reminder {
            tracing::warn!(
                %namespace,
                %trigger,
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
    use super::test_logs::Logs;
    use super::*;

    #[test]
    fn ready_only_when_subscribed_and_openwhisk_accepts() {
        let health = Health::default();
        health.set_broker(&"c".into(), BrokerState::Disconnected);
        assert_eq!(
            health.readiness().unwrap_err(),
            ["not connected to the MQTT broker"]
        );
        health.set_broker(&"c".into(), BrokerState::Subscribed);
        assert!(health.readiness().is_ok());
        health.openwhisk_failing("404 trigger t does not exist");
        assert_eq!(
            health.readiness().unwrap_err(),
            ["OpenWhisk is not accepting fires: 404 trigger t does not exist"]
        );
        health.openwhisk_accepting();
        assert!(health.readiness().is_ok());
    }

    #[test]
    fn a_connection_only_the_feed_uses_never_makes_the_provider_unready() {
        let health = Health::default();
        let (own, tenants): (Arc<str>, Arc<str>) = ("own".into(), "tenants".into());
        health.set_broker(&own, BrokerState::Subscribed);
        health.set_broker(&tenants, BrokerState::Disconnected);
        health.feed_only_broker(&tenants, true);
        assert!(health.readiness().is_ok());
        health.feed_only_broker(&tenants, false);
        assert_eq!(
            health.readiness().unwrap_err(),
            ["not connected to the MQTT broker (connection tenants)"]
        );
    }

    #[test]
    fn each_trigger_without_an_active_rule_is_warned_about_once_per_interval() {
        let (logs, _guard) = Logs::capture();
        let health = Health::default();
        let (ns, a, b): (Arc<str>, Arc<str>, Arc<str>) = ("guest".into(), "a".into(), "b".into());
        for _ in 0..3 {
            health.no_active_rule(&ns, &a);
            health.no_active_rule(&ns, &b);
        }
        let warned = logs.lines("no active rule");
        assert_eq!(warned.len(), 2, "{warned:#?}");
        assert!(warned[0].contains("trigger=a") && warned[1].contains("trigger=b"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_is_warned_once_per_interval_whatever_its_count_and_never_recovered() {
        let (logs, _guard) = Logs::capture();
        let health = Health::default();
        health.set_broker(&"c".into(), BrokerState::Subscribed);
        let namespace: Arc<str> = "guest".into();
        // A throttle every half interval, ten fires each time, accepted in between.
        for _ in 0..4 {
            for count in 61..71 {
                let problem = format!(
                    "429 Too Many Requests: Too many requests in the last minute (count: {count}, allowed: 60)."
                );
                health.openwhisk_throttled(&namespace, &problem);
                assert!(health.readiness().is_ok(), "a throttle is not an outage");
            }
            health.openwhisk_accepting();
            tokio::time::advance(REMINDER_INTERVAL / 2).await;
        }
        let throttled = logs.lines("Too many requests");
        assert_eq!(throttled.len(), 2, "{throttled:#?}");
        assert!(
            throttled
                .iter()
                .all(|line| line.contains("WARN") && line.contains("namespace=guest"))
        );
        assert!(
            throttled[1].contains("=20"),
            "the second counts the 20 since the first: {}",
            throttled[1]
        );
        assert_eq!(logs.lines("accepting fires again"), Vec::<String>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_grouped_by_status_or_transport_error_not_by_their_text() {
        let (logs, _guard) = Logs::capture();
        let health = Health::default();
        health.set_broker(&"c".into(), BrokerState::Subscribed);
        health.openwhisk_failing("404 Not Found: The requested resource does not exist.");
        health.openwhisk_failing("404: trigger \"t\" does not exist");
        assert_eq!(logs.lines("ERROR").len(), 1, "one 404, two texts");
        assert_eq!(
            health.readiness().unwrap_err(),
            ["OpenWhisk is not accepting fires: 404: trigger \"t\" does not exist"],
            "readiness tells the latest text"
        );
        health.openwhisk_failing("503 Service Unavailable: overloaded");
        health.openwhisk_failing("cannot connect: Connection refused (os error 111)");
        health.openwhisk_failing("cannot connect: Connection reset by peer (os error 104)");
        assert_eq!(logs.lines("ERROR").len(), 3, "404, 503, cannot connect");
        health.openwhisk_failing("timed out: operation timed out");
        assert_eq!(logs.lines("ERROR").len(), 4);

        tokio::time::advance(REMINDER_INTERVAL).await;
        health.openwhisk_failing("timed out: deadline has elapsed");
        let reminders = logs.lines("still not accepting");
        assert_eq!(reminders.len(), 1);
        assert!(
            reminders[0].contains("deadline has elapsed"),
            "{}",
            reminders[0]
        );
        health.openwhisk_accepting();
        assert_eq!(logs.lines("accepting fires again").len(), 1);
        assert!(health.readiness().is_ok());
    }

    #[test]
    fn throttling_is_logged_but_keeps_readiness() {
        let health = Health::default();
        health.set_broker(&"c".into(), BrokerState::Subscribed);
        health.openwhisk_throttled(&"guest".into(), "429 too many requests");
        assert!(health.readiness().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn each_throttled_namespace_is_warned_about_on_its_own() {
        let (logs, _guard) = Logs::capture();
        let health = Health::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        for _ in 0..3 {
            health.openwhisk_throttled(&a, "429: throttled");
        }
        health.openwhisk_throttled(&b, "429: throttled");
        assert_eq!(logs.lines("namespace=a").len(), 1);
        assert_eq!(
            logs.lines("namespace=b").len(),
            1,
            "a's warning does not hide b's"
        );
    }
}

/// Log capture for unit tests.
#[cfg(test)]
pub(crate) mod test_logs {
    use std::sync::{Arc, Mutex};

    /// What is logged on this thread while the guard lives.
    #[derive(Clone, Default)]
    pub struct Logs(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Logs {
        pub fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
            let logs = Logs::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish();
            (logs, tracing::subscriber::set_default(subscriber))
        }

        pub fn lines(&self, needle: &str) -> Vec<String> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .filter(|line| line.contains(needle))
                .map(str::to_owned)
                .collect()
        }
    }
}
