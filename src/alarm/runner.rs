//! Runs one alarm: sleeps until each tick on the wall clock and fires it in a task of its
//! own, so a slow or failing fire never delays the next tick. Every alarm runs as its own
//! [`run_alarm`] task, so one alarm never delays another.
//!
//! Exactly once per tick: the next tick is always computed from the tick just fired,
//! never from "now", so a late wake-up or a clock stepped back can never repeat a tick,
//! and a wake-up a little late fires the tick it slept for. A fire is retried until the
//! next tick comes (SPEC section 4); by the same rule, when the runner wakes after the
//! next tick has already come (the machine was suspended, the clock was stepped
//! forward, the process stalled), the ticks in between are over: only the latest due
//! tick fires, once, and a warning says so.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Alarm, Schedule, alarm_body, rfc3339};
use crate::delivery::{Delivered, Deliverer, Fire};
use crate::metrics::{FireKind, TickOutcome};
use crate::openwhisk::Target;

/// Longest single sleep. Timers run on the monotonic clock, which ignores steps of the
/// wall clock and (on Linux) stands still while the machine is suspended; waking at
/// least once a minute bounds how late a tick fires after either.
const MAX_NAP: Duration = Duration::from_secs(60);

/// Runs `alarm` until `stop` is cancelled, firing `target` on every tick.
/// Fires still in flight at `stop` are abandoned (an alarm tick has nothing to keep it
/// across a restart); the function returns once they have ended.
pub async fn run_alarm(
    alarm: Alarm,
    deliverer: Arc<Deliverer>,
    target: Target,
    stop: CancellationToken,
) {
    let fires = AlarmFires {
        alarm,
        deliverer,
        target,
        stop,
    };
    run_with_clock(Arc::new(fires), Utc::now).await;
}

/// What every fire of one alarm shares.
struct AlarmFires {
    alarm: Alarm,
    deliverer: Arc<Deliverer>,
    target: Target,
    stop: CancellationToken,
}

/// [`run_alarm`] with the wall clock passed in, so tests can drive it with tokio's paused
/// time (which `Utc::now` does not follow) and step it like NTP would.
async fn run_with_clock(shared: Arc<AlarmFires>, clock: impl Fn() -> DateTime<Utc>) {
    let alarm = &shared.alarm;
    let tasks = TaskTracker::new();
    let mut next = alarm.schedule.next_after(clock());
    match next {
        Some(first) => tracing::info!(
            alarm = alarm.name,
            trigger = alarm.trigger,
            cron = alarm.expression,
            timezone = %alarm.zone,
            next_fire = rfc3339(first.with_timezone(&alarm.zone)),
            "alarm scheduled"
        ),
        None => tracing::warn!(
            alarm = alarm.name,
            cron = alarm.expression,
            "alarm has no fire time in the future; it never fires"
        ),
    }
    while let Some(tick) = next {
        if !sleep_until(tick, &clock, &shared.stop).await {
            break;
        }
        let now = clock();
        let due = latest_due(&alarm.schedule, tick, now);
        if due != tick {
            tracing::warn!(
                alarm = alarm.name,
                missed_from = rfc3339(tick),
                firing = rfc3339(due),
                "woke up after the next tick had come (machine suspended, clock stepped \
                 or process stalled): firing only the latest due tick"
            );
        }
        next = alarm.schedule.next_after(due);
        // Retries end when the next tick comes; that tick then takes over.
        let deadline = next.map(|n| Instant::now() + (n - now).to_std().unwrap_or_default());
        tasks.spawn(shared.clone().fire(due, next, deadline));
        if next.is_none() {
            tracing::warn!(
                alarm = alarm.name,
                "alarm has no further fire time; this was its last tick"
            );
        }
    }
    tasks.close();
    tasks.wait().await;
}

impl AlarmFires {
    /// Delivers the tick `scheduled_at`, retrying until `deadline`, and reports the result.
    async fn fire(
        self: Arc<Self>,
        scheduled_at: DateTime<Utc>,
        next_fire: Option<DateTime<Utc>>,
        deadline: Option<Instant>,
    ) {
        let alarm = &self.alarm;
        let fire = Fire {
            kind: FireKind::Alarm,
            target: &self.target,
            body: alarm_body(alarm, scheduled_at),
            subject: &alarm.name,
            messages: 0,
            payload_bytes: 0,
            deadline,
            destination: None,
        };
        let scheduled_at = rfc3339(scheduled_at);
        let next_fire = next_fire.map(|t| rfc3339(t.with_timezone(&alarm.zone)));
        let delivered = tokio::select! {
            delivered = self.deliverer.deliver(fire) => delivered,
            () = self.stop.cancelled() => {
                tracing::warn!(
                    alarm = alarm.name,
                    scheduled_at,
                    "alarm tick not delivered: shutting down"
                );
                return;
            }
        };
        let outcome = match delivered {
            Delivered::Accepted => TickOutcome::Accepted,
            Delivered::NoActiveRule => TickOutcome::NoActiveRule,
            Delivered::Rejected => TickOutcome::Rejected,
            Delivered::TooLarge => unreachable!("only a fire of several messages is split"),
            Delivered::Retired => unreachable!("an alarm fire has no route to retire"),
            Delivered::GaveUp => TickOutcome::GaveUp,
        };
        self.deliverer
            .events
            .alarm_tick(alarm, &scheduled_at, next_fire.as_deref(), outcome);
    }
}

/// Sleeps until the wall clock reaches `tick`, in naps of at most [`MAX_NAP`], checking
/// the clock after each so a stepped clock is followed; false if `stop` came first.
async fn sleep_until(
    tick: DateTime<Utc>,
    clock: &impl Fn() -> DateTime<Utc>,
    stop: &CancellationToken,
) -> bool {
    loop {
        // Negative (the tick has passed) does not convert: the tick is due.
        let left = match (tick - clock()).to_std() {
            Ok(left) if !left.is_zero() => left,
            _ => return true,
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(left.min(MAX_NAP)) => {}
        }
    }
}

/// The latest tick at or before `now`, given that `tick` is one. `next_after` never
/// decreases as its argument grows, so bisection finds it: waking years late (a fog node
/// whose clock NTP set only after the start) costs about 30 look-ups, not one per missed
/// tick.
fn latest_due(schedule: &Schedule, tick: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let due_after = |secs: i64| {
        DateTime::from_timestamp(secs, 0)
            .and_then(|t| schedule.next_after(t))
            .filter(|next| *next <= now)
    };
    // A tick is due after `low`, none after `high`: ticks are whole seconds, so the first
    // one after `now`'s whole second is after `now`.
    let (mut low, mut high) = (tick.timestamp(), now.timestamp());
    let Some(mut latest) = due_after(low) else {
        return tick;
    };
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        match due_after(middle) {
            Some(due) => (low, latest) = (middle, due),
            None => high = middle,
        }
    }
    latest
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use chrono::TimeDelta;
    use chrono_tz::Tz;

    use super::*;
    use crate::delivery::events::Events;
    use crate::health::Health;
    use crate::metrics::Metrics;
    use crate::openwhisk::scripted::{self, Scripted};
    use crate::openwhisk::{DryRun, Sink};
    use crate::pause::Pauses;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn alarm(cron: &str) -> Alarm {
        Alarm {
            name: "default".to_owned(),
            expression: cron.to_owned(),
            schedule: Schedule::parse(cron, Tz::UTC).unwrap(),
            zone: Tz::UTC,
            trigger: "aggregatesTrigger".to_owned(),
            payload: serde_json::Map::new(),
        }
    }

    /// A deliverer over `sink`, and the metrics it counts in.
    fn deliverer(sink: Arc<dyn Sink>, max_payload_bytes: usize) -> (Arc<Deliverer>, Metrics) {
        let metrics = Metrics::default();
        let deliverer = Deliverer {
            sink,
            pauses: Pauses::default(),
            events: Events::new(Health::default(), metrics.clone()),
            max_payload_bytes,
        };
        (Arc::new(deliverer), metrics)
    }

    /// A deliverer that accepts every fire at once (or rejects it as too large).
    fn dry_run(max_payload_bytes: usize) -> (Arc<Deliverer>, Metrics) {
        deliverer(Arc::new(DryRun::default()), max_payload_bytes)
    }

    fn alarm_fires(metrics: &Metrics, outcome: &str) -> f64 {
        metrics.sample(&format!(
            "alarm_fires_total{{alarm=\"default\",outcome=\"{outcome}\"}}"
        ))
    }

    /// A wall clock that follows tokio's (paused) time from `start`, plus a step that the
    /// test sets like NTP would.
    fn clock(
        start: &str,
    ) -> (
        impl Fn() -> DateTime<Utc> + Send + Sync + 'static,
        Arc<AtomicI64>,
    ) {
        let (wall, started) = (utc(start), Instant::now());
        let step = Arc::new(AtomicI64::new(0));
        let steps = step.clone();
        let clock = move || {
            wall + TimeDelta::from_std(started.elapsed()).unwrap()
                + TimeDelta::seconds(steps.load(Ordering::SeqCst))
        };
        (clock, step)
    }

    /// Starts the runner; returns its stop token and task.
    fn start(
        cron: &str,
        deliverer: &Arc<Deliverer>,
        clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let stop = CancellationToken::new();
        let fires = AlarmFires {
            alarm: alarm(cron),
            deliverer: deliverer.clone(),
            target: Target::new(None, "_", "aggregatesTrigger"),
            stop: stop.clone(),
        };
        let task = tokio::spawn(run_with_clock(Arc::new(fires), clock));
        (stop, task)
    }

    async fn advance(millis: u64) {
        tokio::time::sleep(Duration::from_millis(millis)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_every_second_alarm_fires_once_per_tick() {
        let (deliverer, metrics) = dry_run(1 << 20);
        let (clock, _) = clock("2026-05-01T12:00:00.500Z");
        let (stop, task) = start("* * * * * *", &deliverer, clock);
        // Ticks at 0.5 s, 1.5 s, ... 4.5 s of the test's time.
        advance(5_000).await;
        stop.cancel();
        task.await.unwrap();
        assert_eq!(alarm_fires(&metrics, "accepted"), 5.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_stepped_forward_fires_only_the_latest_due_tick() {
        let (deliverer, metrics) = dry_run(1 << 20);
        let (clock, step) = clock("2026-05-01T12:00:00.500Z");
        let (stop, task) = start("* * * * * *", &deliverer, clock);
        advance(3_000).await;
        assert_eq!(alarm_fires(&metrics, "accepted"), 3.0);
        // An hour of ticks is skipped over: at 3.5 s only 13:00:04 fires, then 13:00:05.
        step.store(3600, Ordering::SeqCst);
        advance(2_000).await;
        assert_eq!(alarm_fires(&metrics, "accepted"), 5.0);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_stepped_back_never_repeats_a_tick() {
        let (deliverer, metrics) = dry_run(1 << 20);
        let (clock, step) = clock("2026-05-01T12:00:00.500Z");
        let (stop, task) = start("* * * * * *", &deliverer, clock);
        advance(3_000).await;
        step.store(-60, Ordering::SeqCst);
        // The clock reads 11:59:03 again; the next tick is still 12:00:04.
        advance(30_000).await;
        assert_eq!(alarm_fires(&metrics, "accepted"), 3.0);
        advance(31_000).await;
        assert_eq!(alarm_fires(&metrics, "accepted"), 4.0);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_the_runner_at_once() {
        let (deliverer, metrics) = dry_run(1 << 20);
        let (clock, _) = clock("2026-05-01T12:00:00Z");
        let (stop, task) = start("0 3 * * *", &deliverer, clock);
        advance(1_000).await;
        stop.cancel();
        tokio::time::timeout(Duration::from_millis(1), task)
            .await
            .expect("the runner stops without waiting for its next tick")
            .unwrap();
        assert_eq!(alarm_fires(&metrics, "accepted"), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fire_openwhisk_can_never_accept_counts_as_rejected() {
        let (deliverer, metrics) = dry_run(10);
        let (clock, _) = clock("2026-05-01T12:00:00.500Z");
        let (stop, task) = start("* * * * * *", &deliverer, clock);
        advance(2_000).await;
        stop.cancel();
        task.await.unwrap();
        assert_eq!(alarm_fires(&metrics, "rejected"), 2.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_not_delivered_before_the_next_counts_as_gave_up_and_its_retries_as_retried() {
        let (deliverer, metrics) = deliverer(Scripted::new(|_| scripted::status(503)), 1 << 20);
        let (clock, _) = clock("2026-05-01T12:00:00.500Z");
        let (stop, task) = start("* * * * * *", &deliverer, clock);
        // Ticks at 0.5 s and 1.5 s of the test's time; the first gives up at 1.5 s.
        advance(2_000).await;
        stop.cancel();
        task.await.unwrap();
        assert_eq!(alarm_fires(&metrics, "gave_up"), 1.0);
        assert_eq!(alarm_fires(&metrics, "accepted"), 0.0);
        let retried = metrics.sample(r#"fires_total{kind="alarm",outcome="retried",status="503"}"#);
        assert!(retried >= 2.0, "each attempt of both ticks: {retried}");
    }

    #[test]
    fn latest_due_is_the_last_tick_not_after_now() {
        let every_second = Schedule::parse("* * * * * *", Tz::UTC).unwrap();
        let tick = utc("2026-05-01T12:00:01Z");
        assert_eq!(
            latest_due(&every_second, tick, utc("2026-05-01T12:00:01.900Z")),
            tick
        );
        assert_eq!(
            latest_due(&every_second, tick, utc("2026-05-01T12:00:05.300Z")),
            utc("2026-05-01T12:00:05Z")
        );
        // Decades late (a clock set by NTP only after the start): still quick.
        assert_eq!(
            latest_due(
                &every_second,
                utc("1970-01-01T00:00:01Z"),
                utc("2026-05-01T12:00:00.5Z")
            ),
            utc("2026-05-01T12:00:00Z")
        );
        let daily = Schedule::parse("0 3 * * *", Tz::UTC).unwrap();
        assert_eq!(
            latest_due(
                &daily,
                utc("2026-01-01T03:00:00Z"),
                utc("2040-06-01T02:59:59Z")
            ),
            utc("2040-05-31T03:00:00Z")
        );
    }
}
