//! A scenario's steps against a fresh stack (Mosquitto, fake OpenWhisk, provider,
//! publishers), and the publisher-plus-broker ceiling measured the same way with a
//! do-nothing subscriber in the provider's place.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use test_support::{free_port, rss_bytes, unique_id};

use super::broker::Broker;
use super::fake_openwhisk::FakeOpenWhisk;
use super::held::HeldMessages;
use super::provider::Provider;
use super::publisher::{Pace, Publishers};
use super::readings::Sink;
use super::report::Row;
use super::settings::{Scenario, Settings};
use super::spool::SpoolMetrics;
use super::step::{StepPlan, StepReport, run_step};
use super::subscriber::Subscriber;

/// How long a fresh provider may take to deliver its first reading.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(20);
/// Quiet time after the warm-up, so the idle measurement and the first step start calm.
const SETTLE: Duration = Duration::from_secs(1);

/// Runs `steps` of `scenario`; one row per step. A step that leaves readings behind, or
/// a provider that exits, gets a fresh stack for the next step.
pub async fn run_scenario(scenario: &Scenario, steps: &[Pace], settings: &Settings) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut stack: Option<Stack> = None;
    for &pace in steps {
        let mut running = match stack.take() {
            Some(running) => running,
            None => match Stack::start(scenario, settings).await {
                Ok(started) => started,
                Err(error) => {
                    rows.push(Row {
                        key: scenario.key.clone(),
                        scenario: scenario.label.clone(),
                        pace,
                        idle_rss: None,
                        result: Err(format!("{error:#}")),
                        notes: Vec::new(),
                    });
                    break;
                }
            },
        };
        eprintln!("  {}: step {pace}", scenario.label);
        let log_start = running.provider.log_len();
        let result = run_step(
            StepPlan::new(pace, settings),
            &running.publishers,
            &running.openwhisk,
            running.provider.pid(),
            running.spool.as_ref(),
            &running.held,
        )
        .await;
        let mut notes: Vec<String> = running
            .provider
            .logged_since(log_start)
            .into_iter()
            .collect();
        let restart = restart_reason(&result, &mut running.provider, settings);
        let keep = restart.is_none();
        notes.extend(restart);
        rows.push(Row {
            key: scenario.key.clone(),
            scenario: scenario.label.clone(),
            pace,
            idle_rss: Some(running.idle_rss),
            result: result.map_err(|error| format!("{error:#}")),
            notes,
        });
        if keep {
            stack = Some(running);
        }
    }
    rows
}

/// Why the stack must not serve the next step, if it must not.
fn restart_reason(
    result: &anyhow::Result<StepReport>,
    provider: &mut Provider,
    settings: &Settings,
) -> Option<String> {
    let mut reasons = Vec::new();
    if !provider.is_running() {
        reasons.push(format!(
            "provider exited; its log ends:\n{}",
            provider.log_tail()
        ));
    }
    match result {
        Ok(report) if !report.drained => reasons.push(format!(
            "{} still undelivered {} s after publishing stopped",
            super::report::thousands(report.lost()),
            settings.drain_deadline.as_secs()
        )),
        Ok(_) => {}
        Err(_) => reasons.push("step failed".to_string()),
    }
    (!reasons.is_empty()).then(|| format!("{}; fresh stack for the next step", reasons.join("; ")))
}

/// Everything a scenario runs against. Dropping it kills the processes.
struct Stack {
    provider: Provider,
    publishers: Publishers,
    openwhisk: FakeOpenWhisk,
    held: HeldMessages,
    /// The provider's `/metrics`, in spool scenarios.
    spool: Option<SpoolMetrics>,
    /// Resident set size of the provider once warmed up, before the first step.
    idle_rss: u64,
    _broker: Broker,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start(scenario: &Scenario, settings: &Settings) -> anyhow::Result<Stack> {
        let broker = Broker::start(scenario.window).await?;
        let openwhisk = FakeOpenWhisk::start().await?;
        let dir = tempfile::Builder::new()
            .prefix("bench-provider-")
            .tempdir()?;
        let mut env = scenario.provider_env.clone();
        let spool = if scenario.spool {
            // A fixed port, since the provider logs its port only at level info; another
            // process taking it first fails the stack, with the provider's log saying why.
            let http_port = free_port();
            let state_dir = dir.path().join("state");
            std::fs::create_dir(&state_dir)?;
            env.extend([
                ("SPOOL", "true".to_string()),
                ("STATE_DIR", state_dir.display().to_string()),
                ("HTTP_PORT", http_port.to_string()),
            ]);
            Some(SpoolMetrics::new(http_port))
        } else {
            None
        };
        let mut provider = Provider::start(
            settings.provider_bin.as_deref(),
            broker.port(),
            &openwhisk.api_host(),
            &unique_id("bench-provider"),
            &env,
            dir.path(),
        )?;
        let publishers = Publishers::connect(
            broker.port(),
            settings.publishers,
            &unique_id("bench-sensor"),
        )
        .await?;
        if let Err(error) = warm_up(&publishers, &openwhisk).await {
            let state = if provider.is_running() {
                "running"
            } else {
                "exited"
            };
            bail!(
                "{error:#}; the provider ({state}) logged:\n{}",
                provider.log_tail()
            );
        }
        let idle_rss = rss_bytes(provider.pid())?;
        let held = HeldMessages::watch(broker.port(), &unique_id("bench-sys")).await?;
        Ok(Stack {
            provider,
            publishers,
            openwhisk,
            held,
            spool,
            idle_rss,
            _broker: broker,
            _dir: dir,
        })
    }
}

/// The publisher-plus-broker ceiling: the publishers flood a fresh Mosquitto (default
/// window) for one step while a do-nothing subscriber takes the readings; the watched
/// process is Mosquitto.
pub async fn broker_ceiling(settings: &Settings) -> anyhow::Result<StepReport> {
    let broker = Broker::start(None).await?;
    let subscriber = Subscriber::subscribe(broker.port(), &unique_id("bench-subscriber")).await?;
    let publishers = Publishers::connect(
        broker.port(),
        settings.publishers,
        &unique_id("bench-sensor"),
    )
    .await?;
    warm_up(&publishers, &subscriber).await?;
    let held = HeldMessages::watch(broker.port(), &unique_id("bench-sys")).await?;
    let pid = broker.pid().context("mosquitto has exited")?;
    let plan = StepPlan::new(Pace::Flood, settings);
    run_step(plan, &publishers, &subscriber, pid, None, &held).await
}

/// Publishes a few readings at a time until one arrives (the subscription and every
/// connection are up), then lets things settle and forgets what arrived.
async fn warm_up(publishers: &Publishers, sink: &impl Sink) -> anyhow::Result<()> {
    let deadline = Instant::now() + WARM_UP_TIMEOUT;
    loop {
        publishers
            .run(Pace::Rate(50), Duration::from_millis(100))
            .await?;
        if !sink.take().await?.deliveries.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            bail!("no reading arrived within {WARM_UP_TIMEOUT:?} of starting");
        }
    }
    tokio::time::sleep(SETTLE).await;
    sink.take().await?;
    Ok(())
}
