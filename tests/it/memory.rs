//! Bounded memory (SPEC section 4): with OpenWhisk down and 100,000 readings waiting, the
//! provider holds at most `FIRE_CONCURRENCY` of them; the rest wait at the broker.

use std::time::Duration;

use crate::harness::{BrokerOptions, RssSampler, rss_bytes};
use crate::scenario::{Scenario, publish_readings};

const READINGS: u64 = 100_000;
/// Far above what the provider needs (about 10 MiB in a debug build), far below what
/// holding 100,000 readings and their fires would take.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

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
    let idle = rss_bytes(provider.pid()).expect("the provider's RSS") / 1024;
    let peak_rss = RssSampler::start(provider.pid());

    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..READINGS).await;
    let while_down = peak_rss.peak() / 1024;

    scenario.ow.accept_connections().await;
    let duplicates = scenario
        .wait_delivered(READINGS, Duration::from_secs(600))
        .await;
    let peak = peak_rss.peak() / 1024;
    eprintln!(
        "bounded memory: idle {idle} KiB, peak while OpenWhisk down {while_down} KiB, \
         peak overall {peak} KiB, {READINGS} delivered, {duplicates} duplicates"
    );
    assert!(peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");
}
