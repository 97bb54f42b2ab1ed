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
//!
//! Across restarts ([`Catchup`], with `STATE_DIR` and `ALARM_CATCHUP_SECS`): each tick is
//! recorded durably *before* it is fired. On start the runner then knows the last tick
//! fired; the latest tick after it that is already due (it fell while the provider was
//! down) fires once if it is at most `ALARM_CATCHUP_SECS` old, and is counted and logged
//! as missed otherwise. Recording first makes "never twice" hold through any crash, at
//! the price of a tick whose fire a crash interrupted being lost rather than repeated:
//! SPEC section 4 asks for exactly once, and a repeat is what an action cannot undo
//! (a second aggregation, a second report), while a lost tick is logged and visible.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ticks::TickLog;
use super::{Alarm, Schedule, alarm_body, rfc3339};
use crate::delivery::{Delivered, Deliverer, Fire};
use crate::metrics::{FireKind, Metrics, TickOutcome};
use crate::openwhisk::Target;

/// Longest single sleep. Timers run on the monotonic clock, which ignores steps of the
/// wall clock and (on Linux) stands still while the machine is suspended; waking at
/// least once a minute bounds how late a tick fires after either.
const MAX_NAP: Duration = Duration::from_secs(60);

/// Most missed ticks counted one by one at start; an every-second alarm down for a year
/// would otherwise take a while to count.
const MAX_COUNTED_MISSES: u64 = 100_000;

/// What catch-up across restarts needs (see the module doc).
#[derive(Clone)]
pub struct Catchup {
    /// The last fired tick of every alarm, in `STATE_DIR`.
    pub log: Arc<TickLog>,
    /// `ALARM_CATCHUP_SECS`: how old a missed tick may be and still fire on start.
    pub window: Duration,
    pub metrics: Metrics,
}

/// Runs `alarm` until `stop` is cancelled, firing `target` on every tick.
/// Fires still in flight at `stop` are abandoned (an alarm tick has nothing to keep it
/// across a restart); the function returns once they have ended.
pub async fn run_alarm(
    alarm: Alarm,
    deliverer: Arc<Deliverer>,
    target: Target,
    catchup: Option<Catchup>,
    stop: CancellationToken,
) {
    let fires = AlarmFires {
        alarm,
        deliverer,
        target,
        catchup,
        stop,
    };
    run_with_clock(Arc::new(fires), Utc::now).await;
}

/// What every fire of one alarm shares.
struct AlarmFires {
    alarm: Alarm,
    deliverer: Arc<Deliverer>,
    target: Target,
    catchup: Option<Catchup>,
    stop: CancellationToken,
}

/// [`run_alarm`] with the wall clock passed in, so tests can drive it with tokio's paused
/// time (which `Utc::now` does not follow) and step it like NTP would.
async fn run_with_clock(shared: Arc<AlarmFires>, clock: impl Fn() -> DateTime<Utc>) {
    let alarm = &shared.alarm;
    let tasks = TaskTracker::new();
    let now = clock();
    let last = shared
        .catchup
        .as_ref()
        .and_then(|c| c.log.last(&alarm.name));
    // Never at or before the last fired tick, even when the clock reads earlier than it
    // did before the restart.
    let mut next = alarm
        .schedule
        .next_after(last.map_or(now, |last| last.max(now)));
    if let Some(last) = last.filter(|last| *last > now) {
        tracing::warn!(
            alarm = alarm.name,
            last_fired = rfc3339(last),
            now = rfc3339(now),
            "the last fired tick is later than the clock (stepped back, or wrong before): \
             no tick up to it fires again"
        );
    }
    // Decided before "alarm scheduled" is logged, so that line means no catch-up follows.
    if let (Some(catchup), Some(last)) = (&shared.catchup, last) {
        shared.catch_up(catchup, &tasks, last, now, next).await;
    }
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
        shared.spawn_fire(&tasks, due, next, now).await;
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
    /// On start: fires the latest tick after `last` that is due at `now` if it is at
    /// most the window old; logs and counts every other tick after `last` as missed.
    async fn catch_up(
        self: &Arc<Self>,
        catchup: &Catchup,
        tasks: &TaskTracker,
        last: DateTime<Utc>,
        now: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) {
        let alarm = &self.alarm;
        let Some(missed) = alarm.schedule.next_after(last).filter(|t| *t <= now) else {
            return;
        };
        let due = latest_due(&alarm.schedule, missed, now);
        let age = (now - due).to_std().unwrap_or_default();
        let caught_up = age <= catchup.window;
        // Every missed tick but the one caught up (ticks are whole seconds: none falls
        // between `due` and a second later).
        let until = match caught_up {
            true => due,
            false => due + TimeDelta::seconds(1),
        };
        let (count, more) = count_ticks(&alarm.schedule, last, until);
        if count > 0 {
            catchup.metrics.alarm_ticks_missed(&alarm.name, count);
            tracing::warn!(
                alarm = alarm.name,
                last_fired = rfc3339(last),
                missed = count,
                missed_more_than = more,
                catchup_secs = catchup.window.as_secs(),
                "alarm ticks fell while the provider was down and are not fired: only the latest, \
                 if at most ALARM_CATCHUP_SECS old, is caught up"
            );
        }
        if caught_up {
            tracing::info!(
                alarm = alarm.name,
                scheduled_at = rfc3339(due),
                age_secs = age.as_secs(),
                "catching up the alarm tick that fell while the provider was down"
            );
            self.spawn_fire(tasks, due, next, now).await;
        }
    }

    /// Records `tick` (with catch-up) and fires it in a task of its own, retried until
    /// `next` comes, which then takes over; `now` is the wall clock's reading.
    async fn spawn_fire(
        self: &Arc<Self>,
        tasks: &TaskTracker,
        tick: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) {
        if let Some(catchup) = &self.catchup {
            let (log, name) = (catchup.log.clone(), self.alarm.name.clone());
            let recorded = tokio::task::spawn_blocking(move || log.record(&name, tick)).await;
            // The tick fires anyway: a full or failing disk must not stop the alarm, it
            // only weakens the guarantee across a restart (the tick could be caught up
            // again), which the error says.
            if let Ok(Err(e)) = recorded {
                tracing::error!(
                    alarm = self.alarm.name,
                    scheduled_at = rfc3339(tick),
                    error.message = %e,
                    "cannot record the alarm tick in STATE_DIR; firing it anyway, but after a \
                     restart it could be caught up a second time"
                );
            }
        }
        let deadline = next.map(|n| Instant::now() + (n - now).to_std().unwrap_or_default());
        tasks.spawn(self.clone().fire(tick, next, deadline));
    }

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

/// How many ticks fall after `after` and before `until`, counted up to
/// [`MAX_COUNTED_MISSES`]; true if there are more.
fn count_ticks(schedule: &Schedule, after: DateTime<Utc>, until: DateTime<Utc>) -> (u64, bool) {
    let mut count = 0;
    let mut tick = after;
    while let Some(next) = schedule.next_after(tick).filter(|t| *t < until) {
        if count == MAX_COUNTED_MISSES {
            return (count, true);
        }
        count += 1;
        tick = next;
    }
    (count, false)
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
    use crate::openwhisk::{Answer, DryRun, Pending, Sink};
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
        start_catching_up(cron, deliverer, None, clock)
    }

    /// [`start`] with catch-up.
    fn start_catching_up(
        cron: &str,
        deliverer: &Arc<Deliverer>,
        catchup: Option<Catchup>,
        clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let stop = CancellationToken::new();
        let fires = AlarmFires {
            alarm: alarm(cron),
            deliverer: deliverer.clone(),
            target: Target::new(None, "_", "aggregatesTrigger"),
            catchup,
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

    /// A sink that accepts every fire and keeps each one's `scheduled_at`.
    #[derive(Default)]
    struct Recording(std::sync::Mutex<Vec<String>>);

    impl Recording {
        fn ticks(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    impl Sink for Recording {
        fn fire<'a>(&'a self, _: &'a Target, body: bytes::Bytes) -> Pending<'a, Answer> {
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let tick = body["scheduled_at"].as_str().unwrap().to_owned();
            self.0.lock().unwrap().push(tick);
            Box::pin(std::future::ready(scripted::status(202)))
        }

        fn check_trigger<'a>(&'a self, _: &'a Target) -> Pending<'a, Option<Answer>> {
            Box::pin(std::future::ready(None))
        }
    }

    /// One run of a daily 03:00 alarm with catch-up over `dir`, from `start` on the wall
    /// clock for `millis` of paused time: the ticks fired and the misses counted.
    async fn run_daily(
        dir: &std::path::Path,
        window_secs: u64,
        start: &str,
        millis: u64,
    ) -> (Vec<String>, f64) {
        let sink = Arc::new(Recording::default());
        let (deliverer, metrics) = deliverer(sink.clone(), 1 << 20);
        let catchup = Catchup {
            log: Arc::new(TickLog::open(dir)),
            window: Duration::from_secs(window_secs),
            metrics: metrics.clone(),
        };
        let (clock, _) = clock(start);
        let (stop, task) = start_catching_up("0 3 * * *", &deliverer, Some(catchup), clock);
        advance(millis).await;
        stop.cancel();
        task.await.unwrap();
        let missed = metrics.sample(r#"alarm_ticks_missed_total{alarm="default"}"#);
        (sink.ticks(), missed)
    }

    #[tokio::test(start_paused = true)]
    async fn the_tick_missed_while_down_fires_once_on_start_and_never_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        TickLog::open(dir.path())
            .record("default", utc("2026-05-01T03:00:00Z"))
            .unwrap();
        // Down from before 03:00 on 05-02 until 03:20: the 03:00 tick fires at once.
        let (ticks, missed) = run_daily(dir.path(), 3600, "2026-05-02T03:20:00Z", 1_000).await;
        assert_eq!(ticks, ["2026-05-02T03:00:00Z"]);
        assert_eq!(missed, 0.0);
        // Restarted ten minutes later: that tick is not fired again.
        let (ticks, _) = run_daily(dir.path(), 3600, "2026-05-02T03:30:00Z", 1_000).await;
        assert!(ticks.is_empty(), "{ticks:?}");
        // Even with a clock that now reads before it.
        let (ticks, _) = run_daily(dir.path(), 3600, "2026-05-02T02:59:59Z", 2_000).await;
        assert!(ticks.is_empty(), "{ticks:?}");
        // The next tick fires on schedule, and is recorded too.
        let (ticks, _) = run_daily(dir.path(), 3600, "2026-05-03T02:59:59Z", 2_000).await;
        assert_eq!(ticks, ["2026-05-03T03:00:00Z"]);
        assert_eq!(
            TickLog::open(dir.path()).last("default"),
            Some(utc("2026-05-03T03:00:00Z"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_miss_older_than_the_window_is_counted_not_fired() {
        let dir = tempfile::tempdir().unwrap();
        TickLog::open(dir.path())
            .record("default", utc("2026-05-01T03:00:00Z"))
            .unwrap();
        // 05-02 03:00 is two hours old at 05:00, past the hour allowed.
        let (ticks, missed) = run_daily(dir.path(), 3600, "2026-05-02T05:00:00Z", 1_000).await;
        assert!(ticks.is_empty(), "{ticks:?}");
        assert_eq!(missed, 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_long_outage_only_the_latest_tick_is_caught_up_the_rest_counted() {
        let dir = tempfile::tempdir().unwrap();
        TickLog::open(dir.path())
            .record("default", utc("2026-05-01T03:00:00Z"))
            .unwrap();
        // Down four days: 05-02, 05-03 and 05-04 are missed, 05-05 is caught up.
        let (ticks, missed) = run_daily(dir.path(), 3600, "2026-05-05T03:00:30Z", 1_000).await;
        assert_eq!(ticks, ["2026-05-05T03:00:00Z"]);
        assert_eq!(missed, 3.0);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_recorded_tick_nothing_is_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        // A first start (or catch-up just turned on): what was missed is unknown.
        let (ticks, missed) = run_daily(dir.path(), 3600, "2026-05-02T03:20:00Z", 1_000).await;
        assert!(ticks.is_empty(), "{ticks:?}");
        assert_eq!(missed, 0.0);
    }

    #[test]
    fn count_ticks_counts_between_and_stops_at_its_bound() {
        let daily = Schedule::parse("0 3 * * *", Tz::UTC).unwrap();
        let (after, until) = (utc("2026-05-01T03:00:00Z"), utc("2026-05-04T03:00:00Z"));
        assert_eq!(count_ticks(&daily, after, until), (2, false));
        let every_second = Schedule::parse("* * * * * *", Tz::UTC).unwrap();
        assert_eq!(
            count_ticks(&every_second, after, utc("2026-05-03T03:00:00Z")),
            (MAX_COUNTED_MISSES, true)
        );
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
