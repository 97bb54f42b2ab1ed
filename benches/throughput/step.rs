//! One step of a scenario: publish at a pace for a while, collect what the sink receives
//! until every reading has arrived or the drain deadline has passed, and sum it up.

use std::time::{Duration, Instant};

use test_support::RssSampler;

use super::held::HeldMessages;
use super::process::cpu_time;
use super::publisher::{Pace, Published, Publishers};
use super::readings::{Received, Sink};
use super::settings::Settings;
use super::spool::{SpoolMetrics, SpoolReport};

/// How often the sink is asked for what it received.
const COLLECT_INTERVAL: Duration = Duration::from_millis(20);
/// How long acknowledgements may take to reach the broker after the last reading
/// arrived.
const ACK_DEADLINE: Duration = Duration::from_secs(5);

/// What a step does.
#[derive(Clone, Copy)]
pub struct StepPlan {
    pub pace: Pace,
    /// How long the publisher publishes.
    pub duration: Duration,
    /// How long, once publishing stopped, the rest may take to arrive.
    pub drain_deadline: Duration,
}

impl StepPlan {
    /// A step at `pace` as long and with the drain deadline that `settings` say.
    pub fn new(pace: Pace, settings: &Settings) -> StepPlan {
        StepPlan {
            pace,
            duration: settings.step_duration,
            drain_deadline: settings.drain_deadline,
        }
    }
}

/// What a step measured.
pub struct StepReport {
    /// Readings published (and acknowledged by the broker).
    pub published: u64,
    pub offered_per_sec: f64,
    /// Distinct readings delivered per second, from the first publish to the last arrival.
    pub delivered_per_sec: f64,
    /// Distinct readings delivered before the drain deadline.
    pub delivered: u64,
    /// Deliveries of a reading already delivered.
    pub duplicates: u64,
    /// Messages the broker still held (unacknowledged) once every reading had arrived;
    /// `None` if some never arrived.
    pub unacked: Option<u64>,
    /// Readings per fire (per MQTT message for the do-nothing subscriber).
    pub readings_per_carrier: f64,
    /// First delivery of each reading: arrival minus send time.
    pub latency: Option<Latency>,
    /// CPU seconds of the watched process per 10,000 delivered readings.
    pub cpu_per_10k: Option<f64>,
    /// Peak resident set size of the watched process, in bytes.
    pub peak_rss: u64,
    /// Whether every reading arrived before the drain deadline.
    pub drained: bool,
    /// What the spool did, over the same time as `cpu_per_10k`; for spool scenarios.
    pub spool: Option<SpoolReport>,
}

impl StepReport {
    /// Published readings not delivered by the drain deadline.
    pub fn lost(&self) -> u64 {
        self.published - self.delivered
    }
}

/// Latency percentiles in milliseconds.
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Runs `plan`: `publishers` publish, `sink` receives, and `watched` (the process under
/// test) has its CPU time and peak memory measured from the first publish until the
/// last reading arrived (or the drain deadline), and so has its `spool` if it has one;
/// then `held` tells what the broker still holds.
pub async fn run_step(
    plan: StepPlan,
    publishers: &Publishers,
    sink: &impl Sink,
    watched: u32,
    spool: Option<&SpoolMetrics>,
    held: &HeldMessages,
) -> anyhow::Result<StepReport> {
    // Whatever an earlier step left behind must not count here.
    sink.take().await?;
    let mut tally = Tally::new(publishers.next_seq());
    let rss = RssSampler::start(watched);
    let cpu_before = cpu_time(watched)?;
    let spool_step = match spool {
        Some(spool) => Some(spool.start_step().await?),
        None => None,
    };

    let publishing = publishers.run(plan.pace, plan.duration);
    tokio::pin!(publishing);
    let mut published: Option<(Published, Instant)> = None;
    let mut collect = tokio::time::interval(COLLECT_INTERVAL);
    let drained = loop {
        tokio::select! {
            done = &mut publishing, if published.is_none() => {
                published = Some((done?, Instant::now()));
            }
            _ = collect.tick() => {
                tally.add(sink.take().await?);
                if let Some((published, stopped)) = &published {
                    if tally.distinct >= published.count {
                        break true;
                    }
                    if stopped.elapsed() >= plan.drain_deadline {
                        break false;
                    }
                }
            }
        }
    };
    let cpu = cpu_time(watched)? - cpu_before;
    let peak_rss = rss.peak();
    let spool = match spool_step {
        Some(step) => Some(step.finish().await?),
        None => None,
    };
    let (published, _) = published.expect("the loop ends only once publishing is done");
    let unacked = if drained {
        Some(held.settle(ACK_DEADLINE).await)
    } else {
        None
    };

    let window_us = tally.last_arrival_us.saturating_sub(published.started_us);
    let delivered_per_sec = match window_us {
        0 => 0.0,
        us => tally.distinct as f64 / (us as f64 / 1e6),
    };
    Ok(StepReport {
        published: published.count,
        offered_per_sec: published.count as f64 / published.publishing.as_secs_f64(),
        delivered_per_sec,
        delivered: tally.distinct,
        duplicates: tally.duplicates,
        unacked,
        readings_per_carrier: (tally.distinct + tally.duplicates) as f64
            / tally.carriers.max(1) as f64,
        latency: latency(tally.latencies_us),
        cpu_per_10k: (tally.distinct > 0)
            .then(|| cpu.as_secs_f64() / tally.distinct as f64 * 10_000.0),
        peak_rss,
        drained,
        spool,
    })
}

/// Running totals of what arrived for one step.
struct Tally {
    /// The step's first sequence number; earlier ones are stragglers of an earlier step.
    first_seq: u64,
    /// `seen[i]`: reading `first_seq + i` has arrived.
    seen: Vec<bool>,
    distinct: u64,
    duplicates: u64,
    carriers: u64,
    latencies_us: Vec<u64>,
    last_arrival_us: u64,
}

impl Tally {
    fn new(first_seq: u64) -> Tally {
        Tally {
            first_seq,
            seen: Vec::new(),
            distinct: 0,
            duplicates: 0,
            carriers: 0,
            latencies_us: Vec::new(),
            last_arrival_us: 0,
        }
    }

    fn add(&mut self, received: Received) {
        self.carriers += received.carriers;
        for delivery in received.deliveries {
            let Some(index) = delivery.seq.checked_sub(self.first_seq) else {
                continue;
            };
            let index = index as usize;
            if index >= self.seen.len() {
                self.seen.resize(index + 1, false);
            }
            if std::mem::replace(&mut self.seen[index], true) {
                self.duplicates += 1;
                continue;
            }
            self.distinct += 1;
            self.latencies_us
                .push(delivery.arrived_us.saturating_sub(delivery.sent_us));
            self.last_arrival_us = self.last_arrival_us.max(delivery.arrived_us);
        }
    }
}

/// Nearest-rank percentiles of `latencies_us`; `None` if it is empty.
fn latency(mut latencies_us: Vec<u64>) -> Option<Latency> {
    latencies_us.sort_unstable();
    let max = *latencies_us.last()?;
    let percentile = |p: usize| {
        let rank = (latencies_us.len() * p).div_ceil(100);
        latencies_us[rank.saturating_sub(1)] as f64 / 1000.0
    };
    Some(Latency {
        p50: percentile(50),
        p99: percentile(99),
        max: max as f64 / 1000.0,
    })
}
