//! Throughput, latency and footprint of the release `mqtt-whisk-provider`:
//!
//! ```sh
//! cargo bench --bench throughput
//! ```
//!
//! It starts its own Mosquitto, a fast fake OpenWhisk and the provider on loopback,
//! publishes sensor readings at QoS 1 at fixed rates and then as fast as it can, and
//! prints a Markdown table: per scenario and step, the rates offered and delivered,
//! readings lost and duplicated, latency from publish to fire arrival, the provider's CPU
//! time per 10,000 messages and its memory. It first shows the ceilings of the fake
//! OpenWhisk and of publisher plus Mosquitto, so neither is mistaken for the provider's
//! limit. It prints numbers and never fails on speed.
//!
//! Scenarios (`BENCH_SCENARIOS`, default `a,b,c,sb,sc`), each on a fresh broker and
//! provider:
//! a. one fire per message, Mosquitto's default in-flight window (20);
//! b. one fire per message, `max_inflight_messages` `BENCH_WINDOW` (1000);
//! c. batches (`FIRE_BATCH_MAX=500`, `FIRE_BATCH_WAIT_MS=20`), window `BENCH_WINDOW`;
//! d. batches as in c, window 20 (which caps a batch at 20 messages without the spool).
//!
//! `sa`, `sb`, `sc` and `sd` are the same with the spool (issue 12): `SPOOL=true` and a
//! fresh `STATE_DIR` per stack, in the temporary directory. Their table adds fsyncs per
//! second and the spool's size at the end of the step and at its peak (from the
//! provider's `/metrics`, sampled every 100 ms), and beside the `max` step the issue's
//! targets: at window 1000 at least half the rate without the spool (`sb` against `b`,
//! `sc` against `c`, when those ran too), batched at least 20,000 msg/s. The default runs
//! `sb` and `sc`, the scenarios the targets are about, and leaves `sa` and `sd` (and `d`)
//! to be asked for, to keep a default run within about 8 minutes.
//!
//! Routing scale (`BENCH_FILTERS`, default `1,1000,10000`; empty: skip), each count on a
//! fresh stack: the provider subscribed to `bench/#` plus filters that match nothing
//! published, one step at `BENCH_FILTERS_RATE` (2000 msg/s, one fire per message, window
//! 20); the table compares CPU per message and idle memory with the smallest count.
//!
//! Also `BENCH_SECS` (10 s per step), `BENCH_STEPS` (`1000,5000,10000,20000,max`),
//! `BENCH_DRAIN_SECS` (30: how late a reading may arrive before it counts as lost),
//! `BENCH_PUBLISHERS` (2 connections) and `BENCH_PROVIDER_BIN` (another build of the
//! provider to measure, such as an older commit's). Progress goes to stderr, the tables
//! to stdout. Only the ceilings and the routing scale:
//!
//! ```sh
//! BENCH_SCENARIOS= cargo bench --bench throughput
//! ```

#[path = "throughput/broker.rs"]
mod broker;
#[path = "throughput/fake_openwhisk.rs"]
mod fake_openwhisk;
#[path = "throughput/held.rs"]
mod held;
#[path = "throughput/process.rs"]
mod process;
#[path = "throughput/provider.rs"]
mod provider;
#[path = "throughput/publisher.rs"]
mod publisher;
#[path = "throughput/readings.rs"]
mod readings;
#[path = "throughput/report.rs"]
mod report;
#[path = "throughput/routing.rs"]
mod routing;
#[path = "throughput/scenario.rs"]
mod scenario;
#[path = "throughput/settings.rs"]
mod settings;
#[path = "throughput/spool.rs"]
mod spool;
#[path = "throughput/step.rs"]
mod step;
#[path = "throughput/subscriber.rs"]
mod subscriber;

use std::process::ExitCode;

use settings::Settings;

fn main() -> ExitCode {
    // The fake OpenWhisk is this same binary, run as a child process.
    let result = if std::env::args().any(|arg| arg == fake_openwhisk::SERVE_ARG) {
        fake_openwhisk::serve()
    } else {
        tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(run()))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("benchmark failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let machine = report::machine();
    eprintln!("throughput benchmark: {settings}\nmachine: {machine}");

    eprintln!("ceiling of the fake OpenWhisk");
    let openwhisk = fake_openwhisk::FakeOpenWhisk::start()
        .await?
        .measure_ceiling(settings.step_duration)
        .await?;
    eprintln!("ceiling of publisher + Mosquitto");
    let broker = scenario::broker_ceiling(&settings).await?;

    let (mut rows, mut spool_rows) = (Vec::new(), Vec::new());
    for scenario in &settings.scenarios {
        eprintln!("scenario {}", scenario.label);
        let ran = scenario::run_scenario(scenario, &settings.steps, &settings).await;
        if scenario.spool {
            spool_rows.extend(ran);
        } else {
            rows.extend(ran);
        }
    }
    let routing = routing::run_routing(&settings).await;

    println!("## Throughput benchmark\n");
    println!("`cargo bench --bench throughput` with {settings}\n");
    println!("Machine: {machine}\n");
    println!(
        "{}",
        report::ceilings(&openwhisk, &broker, settings.publishers)
    );
    if !rows.is_empty() {
        println!("{}", report::steps(&rows));
    }
    if !spool_rows.is_empty() {
        println!(
            "### Spool: `SPOOL=true`, `STATE_DIR` in {}\n\n{}",
            report::temp_dir(),
            report::spool_steps(&spool_rows, &rows, &settings.scenarios)
        );
    }
    if !routing.is_empty() {
        println!(
            "### Routing scale: {} msg/s, more filters\n\n{}",
            report::thousands(u64::from(settings.filters_rate)),
            report::routing(&routing)
        );
    }
    println!(
        "Latency: publish to the fire's arrival at the fake OpenWhisk. Delivered: distinct \
         readings over the time from the first publish to the last arrival. Lost: published \
         but not delivered {} s after publishing stopped. Unacked: messages Mosquitto still \
         held once every reading had arrived, i.e. acknowledgements the provider never sent \
         (a reconnect delivers those messages again). CPU: the provider's user + system \
         time from the first publish to the last arrival, per 10,000 readings. RSS idle: \
         once subscribed and past a warm-up of a few readings, before the first step. RSS \
         peak: sampled every 10 ms during the step. Routing scale: `bench/#` plus \
         filters that match nothing published (`dc1/<i>/temp`, `dc1/+/<i>`, \
         `bench/<i>/t`, `bench/+/<i>`); the growth of idle RSS over the smallest count, \
         per filter more, is the memory a registered filter takes. Spool: fsyncs per second \
         of the spool over the same time as CPU (`mqtt_whisk_spool_fsync_seconds_count`); \
         spool MB (`mqtt_whisk_spool_bytes`) once every reading had arrived, and the \
         largest size sampled every 100 ms during the step; targets (issue 12) are \
         printed, not asserted.",
        settings.drain_deadline.as_secs()
    );
    Ok(())
}
