//! Bounded memory (SPEC section 4): with OpenWhisk down and 100,000 readings waiting, the
//! provider holds at most `FIRE_CONCURRENCY` of them; the rest wait at the broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::harness::BrokerOptions;
use crate::scenario::{Scenario, publish_readings};

const READINGS: u64 = 100_000;
/// Far above what the provider needs (about 10 MiB in a debug build), far below what
/// holding 100,000 readings and their fires would take.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Samples the resident set size every 20 ms and keeps the peak, until stopped.
fn watch_peak_rss(pid: u32) -> (Arc<AtomicU64>, Arc<AtomicBool>) {
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (p, s) = (peak.clone(), stop.clone());
    tokio::spawn(async move {
        while !s.load(Ordering::SeqCst) {
            p.fetch_max(rss_kib(pid), Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (peak, stop)
}

#[tokio::test]
async fn memory_stays_bounded_while_100k_readings_wait_for_openwhisk() {
    let scenario = Scenario::with_broker(BrokerOptions {
        persistence: false,
        max_queued_messages: Some(0),
        ..BrokerOptions::default()
    })
    .await;
    scenario.ow.refuse_connections().await;
    let provider = scenario.spawn_provider().await;
    let idle = rss_kib(provider.pid());
    let (peak, stop) = watch_peak_rss(provider.pid());

    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..READINGS).await;
    let while_down = peak.load(Ordering::SeqCst);

    scenario.ow.accept_connections().await;
    let duplicates = scenario
        .wait_delivered(READINGS, Duration::from_secs(600))
        .await;
    stop.store(true, Ordering::SeqCst);
    let peak = peak.load(Ordering::SeqCst);
    eprintln!(
        "bounded memory: idle {idle} KiB, peak while OpenWhisk down {while_down} KiB, \
         peak overall {peak} KiB, {READINGS} delivered, {duplicates} duplicates"
    );
    assert!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");
}
