//! The durable spool (SPEC section 9, issue 12): with `SPOOL=true` a message is
//! acknowledged to the broker once it is fsynced under `STATE_DIR`, so readings survive
//! what neither the broker nor the provider's memory can hold: a Mosquitto with the fog
//! deployments' settings crashing while OpenWhisk is down, SIGKILLs in the middle of the
//! drain, a torn and corrupted spool file, a spool that fills up.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::cli::valid_env;
use crate::harness::{
    BrokerOptions, Daemon, Fault, RecordedFire, RssSampler, SmallDisk, poll_until_async, rss_bytes,
    run_to_exit, wait_until, wait_until_async,
};
use crate::scenario::{Scenario, publish_readings};

const DEADLINE: Duration = Duration::from_secs(300);
const SPOOLED: &str = "mqtt_whisk_spool_messages";
const REPLAYED: &str = "mqtt_whisk_spool_replayed_messages_total";

/// `SPOOL=true` with `state` as `STATE_DIR`.
fn spool_env(state: &TempDir) -> [(&'static str, String); 2] {
    [
        ("SPOOL", "true".to_owned()),
        ("STATE_DIR", state.path().display().to_string()),
    ]
}

/// A broker without persistence (its unlimited queue keeps a burst from being dropped
/// before it is spooled) and a spool: the spool holds the only copy of what it took.
async fn spool_only() -> (Scenario, TempDir) {
    let mut scenario = Scenario::with_broker(BrokerOptions {
        persistence: false,
        max_queued_messages: Some(0),
        ..BrokerOptions::default()
    })
    .await;
    let state = TempDir::new().expect("a state directory");
    scenario.extra_env.extend(spool_env(&state));
    (scenario, state)
}

/// A metric summed over its series; 0 when the provider has none (no spool).
async fn metric(provider: &Daemon, name: &str) -> f64 {
    provider.metric_sum(name).await.unwrap_or(0.0)
}

/// Waits until the provider holds `count` readings in its spool. Says whether the broker
/// dropped messages, since then the spool cannot ever reach `count`.
async fn wait_spooled(scenario: &Scenario, provider: &Daemon, count: u64) {
    let spooled = poll_until_async(DEADLINE, || async {
        metric(provider, SPOOLED).await >= count as f64
    })
    .await;
    assert!(
        spooled,
        "{} of {count} readings spooled after {DEADLINE:?} (broker dropped messages: {})",
        metric(provider, SPOOLED).await,
        scenario
            .broker
            .log()
            .contains("Outgoing messages are being dropped")
    );
}

/// Publishes reading `marker` and waits until it is delivered and the provider has no
/// fire in flight and nothing left in its spool: whatever the provider still held before
/// the marker has then got its final answer, so what has not arrived never will.
async fn settle(scenario: &Scenario, provider: &Daemon, marker: u64) {
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, marker..marker + 1).await;
    wait_until_async("the provider settled", DEADLINE, || async {
        scenario.ow.delivered().0.contains(&marker)
            && metric(provider, "mqtt_whisk_fires_in_flight").await == 0.0
            && metric(provider, SPOOLED).await == 0.0
    })
    .await;
}

/// How many `"subscribed"` lines the provider has logged (one per SUBACK).
fn subscriptions(provider: &Daemon) -> usize {
    let logs = provider.logs();
    logs.iter().filter(|l| l.contains("\"subscribed\"")).count()
}

/// The JSON log lines at `level` that contain every one of `needles`.
fn lines_at(provider: &Daemon, level: &str, needles: &[&str]) -> Vec<String> {
    provider
        .logs()
        .into_iter()
        .filter(|line| {
            serde_json::from_str::<Value>(line).is_ok_and(|event| event["level"] == level)
                && needles.iter().all(|needle| line.contains(needle))
        })
        .collect()
}

/// The `seq` of a message fire's reading.
fn seq_of(fire: &RecordedFire) -> u64 {
    let body = fire.body["body"].as_str().expect("a message fire");
    let reading: Value = serde_json::from_str(body).expect("a reading");
    reading["seq"].as_u64().expect("a seq")
}

/// Every file under `dir` (recursively) whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_ending(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
    found
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The spool's files on disk: their total size and the largest segment's.
fn spool_on_disk(state: &TempDir) -> (u64, u64) {
    let spool = state.path().join("spool");
    let total = files_ending(&spool, "").iter().map(|f| file_len(f)).sum();
    let segment = files_ending(&spool, ".seg")
        .iter()
        .map(|f| file_len(f))
        .max();
    (total, segment.unwrap_or(0))
}

/// More than Mosquitto's default queue of 1000, many times over.
const FOG_READINGS: u64 = 20_000;
/// Published at once: half of Mosquitto's default queue. A burst of thousands outruns
/// any consumer that acknowledges only after an fsync (the broker sends 20 unacknowledged
/// at a time), and the broker drops what passes its queue before the spool sees it.
const FOG_STEP: u64 = 500;

/// Publishes `FOG_READINGS` readings (`FOG_STEP` at a time, each step spooled before the
/// next when there is a spool) while OpenWhisk answers 503, to a Mosquitto run as the fog
/// deployments run it (no persistence, at most 1000 queued), SIGKILLs and
/// restarts the broker, then lets OpenWhisk recover. Returns how many distinct readings
/// of those arrived once the provider settled.
async fn readings_through_a_broker_crash(spool: bool) -> usize {
    let mut scenario = Scenario::with_broker(BrokerOptions {
        persistence: false,
        max_queued_messages: None,
        ..BrokerOptions::default()
    })
    .await;
    let state = TempDir::new().expect("a state directory");
    if spool {
        scenario.extra_env.extend(spool_env(&state));
    }
    scenario.ow.set_fault(Fault::Status(503));
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    for start in (0..FOG_READINGS).step_by(FOG_STEP as usize) {
        let end = (start + FOG_STEP).min(FOG_READINGS);
        publish_readings(&publisher, start..end).await;
        if spool {
            wait_spooled(&scenario, &provider, end).await;
        }
    }
    drop(publisher);

    let subscribed = subscriptions(&provider);
    scenario.broker.kill().await;
    scenario.broker.restart().await;
    wait_until("a subscription on the restarted broker", DEADLINE, || {
        subscriptions(&provider) > subscribed
    })
    .await;
    scenario.ow.set_fault(Fault::None);
    settle(&scenario, &provider, FOG_READINGS).await;

    let (delivered, duplicates) = scenario.ow.delivered();
    let arrived = delivered.range(..FOG_READINGS).count();
    let fsyncs = metric(&provider, "mqtt_whisk_spool_fsync_seconds_count").await;
    let fsync_seconds = metric(&provider, "mqtt_whisk_spool_fsync_seconds_sum").await;
    eprintln!(
        "broker crash (spool {spool}): {arrived} of {FOG_READINGS} readings delivered, \
         {duplicates} duplicates, {fsyncs} fsyncs taking {fsync_seconds:.3} s"
    );
    arrived
}

#[tokio::test]
async fn with_the_spool_a_broker_crash_during_an_openwhisk_outage_loses_no_reading() {
    let arrived = readings_through_a_broker_crash(true).await;
    assert_eq!(arrived, FOG_READINGS as usize, "readings lost");
}

/// The control: the same scenario loses readings without the spool, so the test above
/// measures the spool and not a broker that happened to keep everything.
#[tokio::test]
async fn without_the_spool_a_broker_crash_during_an_openwhisk_outage_loses_readings() {
    let arrived = readings_through_a_broker_crash(false).await;
    assert!(
        arrived < FOG_READINGS as usize,
        "every reading arrived without a spool: the scenario shows nothing"
    );
}

const KILL_READINGS: u64 = 5_000;

#[tokio::test]
async fn three_sigkills_in_the_middle_of_the_drain_lose_no_reading() {
    // The broker keeps no copy of a spooled message (it was acknowledged), and an
    // unlimited queue keeps the burst from being dropped before it is spooled.
    let (mut scenario, _state) = spool_only().await;
    // 4 fires of 20 ms at a time: about 200 readings a second, a drain of 25 s.
    scenario
        .extra_env
        .push(("FIRE_CONCURRENCY", "4".to_owned()));
    scenario.ow.set_fault(Fault::Status(503));
    let mut provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..KILL_READINGS).await;
    wait_spooled(&scenario, &provider, KILL_READINGS).await;

    scenario
        .ow
        .set_fault(Fault::Slow(Duration::from_millis(20)));
    let mut left = 0;
    let mut replayed = Vec::new();
    for kill in 1..=3 {
        let target = kill * KILL_READINGS / 5;
        wait_until(
            &format!("{target} readings delivered before SIGKILL {kill}"),
            DEADLINE,
            || scenario.accepted_count() as u64 >= target,
        )
        .await;
        provider.sigkill();
        provider.wait_exit(Duration::from_secs(10)).await;
        wait_until(
            "the fires in flight at the SIGKILL answered",
            DEADLINE,
            || scenario.ow.in_flight() == 0,
        )
        .await;
        left = KILL_READINGS - scenario.accepted_count() as u64;
        assert!(left > 0, "SIGKILL {kill} came after the drain ended");

        provider = scenario.spawn_provider().await;
        wait_until_async("readings replayed from the spool", DEADLINE, || async {
            metric(&provider, REPLAYED).await > 0.0
        })
        .await;
        replayed.push(metric(&provider, REPLAYED).await);
    }

    let duplicates = scenario.wait_delivered(KILL_READINGS, DEADLINE).await;
    eprintln!(
        "three SIGKILLs: {KILL_READINGS} readings delivered, {duplicates} duplicates, \
         replayed at each restart (so far when read) {replayed:?}"
    );
    // Only the spool held the readings still undelivered at the last SIGKILL.
    let replayed_last = metric(&provider, REPLAYED).await;
    assert!(
        replayed_last >= left as f64,
        "{left} readings were undelivered at the last SIGKILL, {replayed_last} replayed"
    );
    // Every reading was spooled before the first SIGKILL: each copy is a replay of its
    // spooled record.
    let mut bodies = BTreeMap::<u64, BTreeSet<String>>::new();
    for fire in scenario.ow.accepted() {
        bodies
            .entry(seq_of(&fire))
            .or_default()
            .insert(fire.body.to_string());
    }
    for (seq, copies) in bodies {
        assert_eq!(copies.len(), 1, "reading {seq} fired as {copies:#?}");
    }
}

const CORRUPT_READINGS: u64 = 1_000;
/// Cut from the end of the file: less than one record, so exactly the last one is torn.
const TORN_BYTES: usize = 5;
/// The flipped byte damages one record and the cut another.
const MAX_DAMAGED: usize = 2;

#[tokio::test]
async fn a_torn_and_corrupted_spool_file_is_skipped_with_an_error_and_the_rest_delivered() {
    // A broker without persistence, restarted while the provider is down: it forgets the
    // readings whose acknowledgement the SIGKILL cut off, so the spool holds the only copy
    // of every reading and a damaged record cannot come back from the broker.
    let (mut scenario, state) = spool_only().await;
    scenario.ow.set_fault(Fault::Status(503));
    let mut provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..CORRUPT_READINGS).await;
    wait_spooled(&scenario, &provider, CORRUPT_READINGS).await;
    provider.sigkill();
    provider.wait_exit(Duration::from_secs(10)).await;
    drop(provider);
    scenario.broker.kill().await;
    scenario.broker.restart().await;

    let segment = files_ending(&state.path().join("spool"), ".seg")
        .into_iter()
        .max_by_key(|f| file_len(f))
        .expect("a spool segment");
    let mut bytes = std::fs::read(&segment).expect("read the segment");
    let len = bytes.len();
    bytes[len / 2] ^= 0xff;
    bytes.truncate(len - TORN_BYTES);
    std::fs::write(&segment, &bytes).expect("write the damaged segment");

    scenario.ow.set_fault(Fault::None);
    let provider = scenario.spawn_provider().await;
    provider.wait_ready(DEADLINE).await;
    let name = segment.file_name().unwrap().to_string_lossy().into_owned();
    wait_until("an error naming the damaged file", DEADLINE, || {
        !lines_at(&provider, "ERROR", &["spool", "skipped", &name]).is_empty()
    })
    .await;
    let skipped = metric(&provider, "mqtt_whisk_spool_skipped_bytes_total").await;
    assert!(skipped > 0.0, "no skipped bytes counted");
    // One file damaged: its error says how many bytes were skipped.
    let errors = lines_at(&provider, "ERROR", &["spool", "skipped", &name]);
    assert!(
        errors
            .iter()
            .any(|line| line.contains(&(skipped as u64).to_string())),
        "no error gives the {skipped} bytes skipped: {errors:#?}"
    );
    // Resynchronised on the next intact record: not the whole rest of the file.
    assert!(
        skipped < (len / 2) as f64,
        "{skipped} of {len} bytes skipped"
    );

    settle(&scenario, &provider, CORRUPT_READINGS).await;
    let (delivered, duplicates) = scenario.ow.delivered();
    let missing: Vec<u64> = (0..CORRUPT_READINGS)
        .filter(|seq| !delivered.contains(seq))
        .collect();
    eprintln!(
        "damaged spool: {skipped} bytes skipped, readings missing {missing:?}, \
         {duplicates} duplicates"
    );
    assert!(
        missing.len() <= MAX_DAMAGED,
        "{} readings lost to one flipped byte and one torn record: {missing:?}",
        missing.len()
    );
}

/// The minimum is 65536; this holds about a thousand readings.
const SPOOL_MAX_BYTES: u64 = 262_144;
const FULL_READINGS: u64 = 5_000;
/// Growth allowed while the spool is full: holding the readings the broker keeps would
/// take more.
const RSS_SLACK_BYTES: u64 = 4 * 1024 * 1024;
/// Once every reading is delivered, the spool has only to delete its files.
const SETTLE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_full_spool_stops_taking_messages_says_so_and_drains_when_openwhisk_recovers() {
    // A persistent broker with no queue limit: it keeps whatever the provider does not take.
    let mut scenario = Scenario::start().await;
    let state = TempDir::new().expect("a state directory");
    scenario.extra_env.extend(spool_env(&state));
    scenario
        .extra_env
        .push(("SPOOL_MAX_BYTES", SPOOL_MAX_BYTES.to_string()));
    scenario.ow.set_fault(Fault::Status(503));
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..FULL_READINGS).await;

    wait_until_async("the spool full", DEADLINE, || async {
        metric(&provider, "mqtt_whisk_spool_full").await == 1.0
    })
    .await;
    let full_rss = rss_bytes(provider.pid()).expect("the provider's RSS");
    let peak_rss = RssSampler::start(provider.pid());
    let (status, body) = provider.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("spool is full"), "{body}");
    wait_until("the warning", DEADLINE, || {
        !lines_at(&provider, "WARN", &["spool is full"]).is_empty()
    })
    .await;

    // While OpenWhisk keeps refusing, the spool stays within its bound.
    let most = Cell::new((0.0_f64, 0_u64, 0_u64));
    let refused = scenario.ow.count_status(503);
    wait_until_async("retries while the spool is full", DEADLINE, || async {
        let metric_bytes = metric(&provider, "mqtt_whisk_spool_bytes").await;
        let (disk, segment) = spool_on_disk(&state);
        let (m, d, s) = most.get();
        most.set((m.max(metric_bytes), d.max(disk), s.max(segment)));
        scenario.ow.count_status(503) >= refused + 200
    })
    .await;
    let (metric_bytes, disk, segment) = most.get();
    assert!(
        segment < SPOOL_MAX_BYTES,
        "a segment of {segment} bytes: as large as the whole spool"
    );
    let bound = SPOOL_MAX_BYTES + segment;
    assert!(
        metric_bytes <= bound as f64 && disk <= bound,
        "spool of {metric_bytes} bytes ({disk} on disk) past {SPOOL_MAX_BYTES} + one \
         segment of {segment}"
    );
    assert!(
        metric(&provider, SPOOLED).await < FULL_READINGS as f64,
        "everything was spooled: the limit never held back anything"
    );
    assert!(
        metric(&provider, "mqtt_whisk_spool_fsync_seconds_count").await >= 1.0,
        "no fsync measured"
    );
    wait_until_async("the oldest reading's age counting up", DEADLINE, || async {
        metric(&provider, "mqtt_whisk_spool_oldest_message_age_seconds").await >= 1.0
    })
    .await;
    let peak = peak_rss.peak();
    assert!(
        peak <= full_rss + RSS_SLACK_BYTES,
        "RSS grew from {full_rss} to {peak} bytes while the spool was full"
    );

    scenario.ow.set_fault(Fault::None);
    let duplicates = scenario.wait_delivered(FULL_READINGS, DEADLINE).await;
    eprintln!(
        "full spool: {metric_bytes} bytes at most ({disk} on disk, segments up to {segment}), \
         RSS {full_rss} -> {peak} bytes, {FULL_READINGS} delivered, {duplicates} duplicates"
    );
    // Every reading left the spool: it is no longer full, its space is given back, and
    // the provider is ready.
    let drained = poll_until_async(SETTLE, || async {
        metric(&provider, "mqtt_whisk_spool_full").await == 0.0
            && spool_on_disk(&state).0 < SPOOL_MAX_BYTES
            && provider.get("/readyz").await.0 == 200
    })
    .await;
    assert!(
        drained,
        "after {SETTLE:?}: spool_full {}, spool_bytes {}, spool_messages {}, {} bytes on \
         disk in {:?}, /readyz {:?}",
        metric(&provider, "mqtt_whisk_spool_full").await,
        metric(&provider, "mqtt_whisk_spool_bytes").await,
        metric(&provider, SPOOLED).await,
        spool_on_disk(&state).0,
        files_ending(&state.path().join("spool"), ""),
        provider.get("/readyz").await,
    );
}

#[tokio::test]
async fn spool_without_a_state_directory_fails_the_check_naming_both() {
    let mut env = valid_env();
    env.push(("SPOOL", "true".into()));
    let out = run_to_exit(&["--check"], &env).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stderr
            .lines()
            .any(|line| line.contains("SPOOL") && line.contains("STATE_DIR")),
        "no line names SPOOL and STATE_DIR:\n{}",
        out.stderr
    );

    // The control: with a state directory the same configuration passes.
    let state = TempDir::new().expect("a state directory");
    env.push(("STATE_DIR", state.path().display().to_string()));
    let out = run_to_exit(&["--check"], &env).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[tokio::test]
async fn a_spool_bound_below_its_minimum_fails_the_check() {
    let state = TempDir::new().expect("a state directory");
    let mut env = valid_env();
    env.extend(spool_env(&state));
    env.push(("SPOOL_MAX_BYTES", "65535".into()));
    let out = run_to_exit(&["--check"], &env).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stderr
            .lines()
            .any(|line| line.contains("SPOOL_MAX_BYTES") && line.contains("65536")),
        "no line names SPOOL_MAX_BYTES and its minimum:\n{}",
        out.stderr
    );
}

/// A full disk (ENOSPC) is back-pressure, not a crash: the provider keeps running, says
/// so in `/readyz`, leaves the rest with the broker, and once fires free space every
/// reading arrives.
#[tokio::test]
async fn a_full_disk_holds_readings_back_until_fires_free_space() {
    const READINGS: u64 = 10_000;
    let disk = SmallDisk::mount("1m");
    let mut scenario = Scenario::start().await;
    scenario.extra_env.extend([
        ("SPOOL", "true".to_owned()),
        ("STATE_DIR", disk.path().display().to_string()),
    ]);
    scenario.ow.set_fault(Fault::Status(503));
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    // About 170 bytes each on disk: more than the 1 MiB disk holds.
    publish_readings(&publisher, 0..READINGS).await;
    wait_until_async(
        "readyz says the spool cannot be written",
        DEADLINE,
        || async {
            let (status, body) = provider.get("/readyz").await;
            status == 503
                && body.contains("spool cannot be written")
                && body.contains("No space left")
        },
    )
    .await;
    assert_eq!(provider.get("/healthz").await.0, 200, "still running");

    scenario.ow.set_fault(Fault::None);
    scenario.wait_delivered(READINGS, DEADLINE).await;
    provider.wait_ready(DEADLINE).await;
    let (delivered, _) = scenario.ow.delivered();
    assert_eq!(delivered.range(..READINGS).count(), READINGS as usize);
    assert!(
        provider
            .log_text()
            .contains("the spool takes messages again")
    );
}
