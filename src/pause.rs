//! The namespace-wide pause after a 429. OpenWhisk counts fires per namespace in fixed
//! wall-clock minutes, so once one fire is throttled every other fire to that namespace
//! would be too: they all wait for the next minute instead of each hammering the
//! controller with retries. Fires to other namespaces go on: each has its own pause.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use tokio::time::Instant;

/// Shortest pause for a `Retry-After`: a `Retry-After: 0` on every 429 must not turn the
/// waiting fires into a busy loop (it made 40,000 requests in 10 s for 45 messages).
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The pause of each namespace fired so far, created on its first fire.
#[derive(Default)]
pub struct Pauses(Mutex<HashMap<Arc<str>, NamespacePause>>);

impl Pauses {
    /// The pause shared by every fire to `namespace` (as named: `_` is one namespace).
    pub fn of(&self, namespace: &Arc<str>) -> NamespacePause {
        let mut pauses = self.0.lock().unwrap_or_else(|p| p.into_inner());
        pauses.entry(namespace.clone()).or_default().clone()
    }
}

/// Shared by every fire to one namespace; cheap to clone.
#[derive(Clone, Default)]
pub struct NamespacePause(Arc<Mutex<Option<Instant>>>);

impl NamespacePause {
    /// Waits until no pause is in force (returns at once when none is).
    pub async fn wait(&self) {
        loop {
            let until = *self.0.lock().unwrap_or_else(|p| p.into_inner());
            match until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => return,
            }
        }
    }

    /// Pauses every fire for `retry_after` (at least [`MIN_RETRY_AFTER`]), or else until
    /// the next wall-clock minute; plus up to a second of jitter either way. Returns true
    /// when this started or extended the pause, so that one 429 among many in flight is
    /// logged and counted once.
    pub fn pause(&self, retry_after: Option<Duration>) -> bool {
        let delay = match retry_after {
            Some(retry_after) => retry_after.max(MIN_RETRY_AFTER),
            None => until_next_minute(SystemTime::now()),
        };
        let jitter = Duration::from_millis(rand::rng().random_range(0..1000));
        let until = Instant::now() + delay + jitter;
        let mut current = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Fires in flight when the pause began come back with 429 too: they must not
        // push the pause further out by their own jitter.
        if current.is_some_and(|c| c + Duration::from_secs(2) >= until) {
            return false;
        }
        *current = Some(until);
        true
    }
}

/// Time left until the next minute starts, as OpenWhisk's throttle counts minutes
/// (`epochMillis / 60000`).
pub fn until_next_minute(now: SystemTime) -> Duration {
    let millis = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    Duration::from_millis((60_000 - millis % 60_000) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_minute_is_counted_from_the_wall_clock() {
        let at = |ms| UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(until_next_minute(at(120_000)), Duration::from_secs(60));
        assert_eq!(until_next_minute(at(179_500)), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_waiter_and_is_counted_once() {
        let pause = NamespacePause::default();
        let start = Instant::now();
        assert!(pause.pause(Some(Duration::from_secs(5))));
        assert!(
            !pause.pause(Some(Duration::from_secs(5))),
            "a second 429 extends nothing"
        );
        let waiters = (0..3).map(|_| {
            let pause = pause.clone();
            tokio::spawn(async move { pause.wait().await })
        });
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert!(start.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_namespace_never_pauses_another() {
        let pauses = Pauses::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let start = Instant::now();
        assert!(pauses.of(&a).pause(Some(Duration::from_secs(30))));
        pauses.of(&b).wait().await;
        assert_eq!(start.elapsed(), Duration::ZERO, "b is not paused");
        assert!(
            pauses.of(&b).pause(Some(Duration::from_secs(5))),
            "b's own 429 starts b's own pause"
        );
        pauses.of(&b).wait().await;
        let b_paused = start.elapsed();
        assert!(b_paused < Duration::from_secs(7), "b waited {b_paused:?}");
        assert!(
            !pauses.of(&a).pause(Some(Duration::from_secs(5))),
            "a is still in the pause it began: every fire to a shares it"
        );
        pauses.of(&a).wait().await;
        assert!(start.elapsed() >= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_of_0_still_pauses_for_the_floor_plus_jitter() {
        let pause = NamespacePause::default();
        let start = Instant::now();
        assert!(pause.pause(Some(Duration::ZERO)));
        pause.wait().await;
        let paused = start.elapsed();
        assert!(
            (MIN_RETRY_AFTER..MIN_RETRY_AFTER + Duration::from_secs(1)).contains(&paused),
            "paused {paused:?}"
        );
    }
}
