//! What the spool scenarios (issue 12) measure beyond the other steps, from the
//! provider's `/metrics`: fsyncs per second, and the spool's size at the end of a step
//! and at its peak.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use test_support::metric_sum;
use tokio::task::JoinHandle;

/// Histogram count: one sample per fsync of the spool.
const FSYNCS: &str = "mqtt_whisk_spool_fsync_seconds_count";
/// Gauge: bytes the spool holds.
const BYTES: &str = "mqtt_whisk_spool_bytes";
/// How often the spool's size is sampled for its peak: ten scrapes a second cost the
/// provider far less CPU than the readings it forwards meanwhile.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// The `/metrics` of a provider on a loopback port.
#[derive(Clone)]
pub struct SpoolMetrics {
    url: String,
    http: reqwest::Client,
}

/// The spool's counters at one moment; `None` for a metric the provider does not serve.
struct Snapshot {
    at: Instant,
    fsyncs: Option<f64>,
    bytes: Option<f64>,
}

/// What the spool did during a step.
pub struct SpoolReport {
    /// Fsyncs per second from the step's first publish to its end.
    pub fsyncs_per_sec: Option<f64>,
    /// Bytes in the spool at the end of the step, and the largest size sampled.
    pub end_bytes: Option<u64>,
    pub peak_bytes: Option<u64>,
}

/// A step's measurement in progress: the first snapshot, and the sampler of the peak.
pub struct SpoolStep {
    metrics: SpoolMetrics,
    start: Snapshot,
    /// The largest size sampled so far.
    peak: Arc<Mutex<Option<u64>>>,
    sampler: JoinHandle<()>,
}

impl SpoolMetrics {
    pub fn new(http_port: u16) -> SpoolMetrics {
        SpoolMetrics {
            url: format!("http://127.0.0.1:{http_port}/metrics"),
            http: test_support::http_client(SCRAPE_TIMEOUT),
        }
    }

    /// Takes the first snapshot and starts sampling the size.
    pub async fn start_step(&self) -> anyhow::Result<SpoolStep> {
        let start = self.snapshot().await?;
        let peak = Arc::new(Mutex::new(None));
        record_peak(&peak, start.bytes);
        let sampler = tokio::spawn({
            let metrics = self.clone();
            let peak = Arc::clone(&peak);
            async move {
                let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
                loop {
                    ticks.tick().await;
                    // A failed scrape only misses a sample; the step's end reports errors.
                    if let Ok(snapshot) = metrics.snapshot().await {
                        record_peak(&peak, snapshot.bytes);
                    }
                }
            }
        });
        Ok(SpoolStep {
            metrics: self.clone(),
            start,
            peak,
            sampler,
        })
    }

    async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let response = self
            .http
            .get(&self.url)
            .send()
            .await
            .with_context(|| format!("GET {}", self.url))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("GET {} answered {status}: {text}", self.url);
        }
        Ok(Snapshot {
            at: Instant::now(),
            fsyncs: metric_sum(&text, FSYNCS),
            bytes: metric_sum(&text, BYTES),
        })
    }
}

impl SpoolStep {
    /// Takes the last snapshot and sums the step up.
    pub async fn finish(self) -> anyhow::Result<SpoolReport> {
        let end = self.metrics.snapshot().await?;
        record_peak(&self.peak, end.bytes);
        let seconds = end.at.duration_since(self.start.at).as_secs_f64();
        let fsyncs_per_sec = self
            .start
            .fsyncs
            .zip(end.fsyncs)
            .map(|(before, after)| (after - before) / seconds);
        Ok(SpoolReport {
            fsyncs_per_sec,
            end_bytes: end.bytes.map(|bytes| bytes as u64),
            peak_bytes: *self.peak.lock().unwrap(),
        })
    }
}

impl Drop for SpoolStep {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

fn record_peak(peak: &Mutex<Option<u64>>, bytes: Option<f64>) {
    if let Some(bytes) = bytes {
        let mut peak = peak.lock().unwrap();
        *peak = Some(peak.unwrap_or(0).max(bytes as u64));
    }
}
