//! What to run, from `BENCH_*` environment variables (each optional).

use std::fmt;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::publisher::Pace;

/// `max_inflight_messages` of scenarios b and c (sb, sc) unless `BENCH_WINDOW` says
/// otherwise.
const LARGE_WINDOW: u32 = 1_000;
/// Mosquitto's `max_inflight_messages` when its config does not set one.
const DEFAULT_WINDOW: u32 = 20;
/// Issue 12: batched with the spool, at least this many messages per second.
const SPOOL_BATCH_TARGET: u32 = 20_000;

/// The benchmark's settings.
pub struct Settings {
    /// `BENCH_SECS` (10): how long each step (and each ceiling) publishes.
    pub step_duration: Duration,
    /// `BENCH_DRAIN_SECS` (30): how long the rest of a step's readings may take to
    /// arrive once publishing has stopped.
    pub drain_deadline: Duration,
    /// `BENCH_STEPS` (`1000,5000,10000,20000,max`; empty: none): messages per second,
    /// or `max`.
    pub steps: Vec<Pace>,
    /// `BENCH_SCENARIOS` (`a,b,c,sb,sc`; empty: only the ceilings).
    pub scenarios: Vec<Scenario>,
    /// `BENCH_PUBLISHERS` (2): publisher connections sharing each step's rate.
    pub publishers: usize,
    /// `BENCH_WINDOW` (1000): Mosquitto's `max_inflight_messages` in scenarios b and c
    /// (and sb, sc).
    pub window: u32,
    /// `BENCH_FILTERS` (`1,1000,10000`; empty: skip): the routing-scale part runs a
    /// provider subscribed to this many filters, one after the other.
    pub filters: Vec<usize>,
    /// `BENCH_FILTERS_RATE` (2000): messages per second of each routing-scale step, low
    /// enough that the provider keeps up with any filter count.
    pub filters_rate: u32,
    /// `BENCH_PROVIDER_BIN` (unset: this package's release build): another build of the
    /// provider to measure, such as an older commit's.
    pub provider_bin: Option<PathBuf>,
}

/// One provider configuration against one broker configuration.
pub struct Scenario {
    /// `a` .. `d` or `sa` .. `sd`, as in `BENCH_SCENARIOS`.
    pub key: String,
    pub label: String,
    /// Mosquitto's `max_inflight_messages`; `None` keeps its default (20).
    pub window: Option<u32>,
    /// Provider settings beyond the common ones.
    pub provider_env: Vec<(&'static str, String)>,
    /// `SPOOL=true` with a fresh `STATE_DIR` per stack, and the spool's metrics measured.
    pub spool: bool,
    /// What the `max` step should deliver, printed beside it.
    pub targets: Targets,
}

/// A spool scenario's delivered rate at `max`, as issue 12 asks for it (not asserted).
#[derive(Default)]
pub struct Targets {
    /// At least half of what this scenario (`b`, `c`) delivered without the spool.
    pub half_of: Option<String>,
    /// At least this many messages per second (batched).
    pub at_least: Option<u32>,
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Settings> {
        let window = var("BENCH_WINDOW", LARGE_WINDOW)?;
        let steps = var("BENCH_STEPS", "1000,5000,10000,20000,max".to_string())?
            .split(',')
            .map(str::trim)
            .filter(|step| !step.is_empty())
            .map(|step| match step {
                "max" => Ok(Pace::Flood),
                rate => match rate.parse() {
                    Ok(rate) if rate > 0 => Ok(Pace::Rate(rate)),
                    _ => bail!("BENCH_STEPS: expected messages per second or max, got {rate:?}"),
                },
            })
            .collect::<anyhow::Result<_>>()?;
        let scenarios = var("BENCH_SCENARIOS", "a,b,c,sb,sc".to_string())?
            .split(',')
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .map(|key| Scenario::named(key, window))
            .collect::<anyhow::Result<_>>()?;
        let filters = var("BENCH_FILTERS", "1,1000,10000".to_string())?
            .split(',')
            .map(str::trim)
            .filter(|count| !count.is_empty())
            .map(|count| match count.parse() {
                Ok(count) if count > 0 => Ok(count),
                _ => bail!("BENCH_FILTERS: expected filter counts of at least 1, got {count:?}"),
            })
            .collect::<anyhow::Result<_>>()?;
        let settings = Settings {
            step_duration: Duration::from_secs(var("BENCH_SECS", 10)?),
            drain_deadline: Duration::from_secs(var("BENCH_DRAIN_SECS", 30)?),
            steps,
            scenarios,
            publishers: var("BENCH_PUBLISHERS", 2)?,
            window,
            filters,
            filters_rate: var("BENCH_FILTERS_RATE", 2_000)?,
            provider_bin: std::env::var_os("BENCH_PROVIDER_BIN")
                .filter(|bin| !bin.is_empty())
                .map(PathBuf::from),
        };
        if settings.step_duration.is_zero()
            || settings.publishers == 0
            || settings.filters_rate == 0
        {
            bail!("BENCH_SECS, BENCH_PUBLISHERS and BENCH_FILTERS_RATE must be at least 1");
        }
        Ok(settings)
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|pace| match pace {
                Pace::Rate(rate) => rate.to_string(),
                Pace::Flood => "max".to_string(),
            })
            .collect();
        let scenarios: Vec<&str> = self
            .scenarios
            .iter()
            .map(|scenario| scenario.key.as_str())
            .collect();
        let filters: Vec<String> = self.filters.iter().map(usize::to_string).collect();
        write!(
            f,
            "BENCH_SECS={} BENCH_DRAIN_SECS={} BENCH_STEPS={} BENCH_SCENARIOS={} \
             BENCH_PUBLISHERS={} BENCH_WINDOW={} BENCH_FILTERS={} BENCH_FILTERS_RATE={}",
            self.step_duration.as_secs(),
            self.drain_deadline.as_secs(),
            steps.join(","),
            scenarios.join(","),
            self.publishers,
            self.window,
            filters.join(","),
            self.filters_rate,
        )?;
        if let Some(bin) = &self.provider_bin {
            write!(f, " BENCH_PROVIDER_BIN={}", bin.display())?;
        }
        Ok(())
    }
}

impl Scenario {
    /// Scenario `a`, `b`, `c` or `d`, or one of them with the spool (`sa` .. `sd`);
    /// `window` is the larger broker window of b and c.
    fn named(key: &str, window: u32) -> anyhow::Result<Scenario> {
        let (spool, base) = match key.strip_prefix('s') {
            Some(base) => (true, base),
            None => (false, key),
        };
        let (window, batched) = match base {
            "a" => (None, false),
            "b" => (Some(window), false),
            "c" => (Some(window), true),
            "d" => (None, true),
            _ => bail!(
                "BENCH_SCENARIOS: expected a comma-separated list of a, b, c, d, sa, sb, sc, sd; got {key:?}"
            ),
        };
        let mut label = format!("{key}: ");
        if spool {
            label.push_str("spool, ");
        }
        label.push_str(if batched {
            "batch ≤500/20 ms"
        } else {
            "1 fire/msg"
        });
        write!(label, ", window {}", window.unwrap_or(DEFAULT_WINDOW)).expect("write to a String");
        let provider_env = if batched {
            vec![
                ("FIRE_BATCH_MAX", "500".to_string()),
                ("FIRE_BATCH_WAIT_MS", "20".to_string()),
            ]
        } else {
            vec![]
        };
        let targets = Targets {
            half_of: (spool && window.is_some()).then(|| base.to_string()),
            at_least: (spool && batched).then_some(SPOOL_BATCH_TARGET),
        };
        Ok(Scenario {
            key: key.to_string(),
            label,
            window,
            provider_env,
            spool,
            targets,
        })
    }
}

/// Environment variable `name` parsed, or `default` when unset.
fn var<T: FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .with_context(|| format!("{name}={value:?}")),
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(error) => Err(error).context(name.to_string()),
    }
}
