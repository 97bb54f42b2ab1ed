//! Wiring: [`App::build`] binds the HTTP port and builds every part without connecting
//! anywhere; [`App::run_until_stopped`] runs them and shuts them down in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alarm::{Alarm, Catchup, TickLog, run_alarm};
use crate::config::Config;
use crate::connections::{Connections, Pipeline, Running, SpoolPlace};
use crate::delivery::Deliverer;
use crate::delivery::events::Events;
use crate::feed::registry::Registry;
use crate::feed::service::Feed;
use crate::fire_body::MessageBodies;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::openwhisk::{DryRun, OpenWhiskClient, Sink, Target, Verdict};
use crate::pause::Pauses;
use crate::routes::DisableNotice;
use crate::routes::{Destination, Origin};
use crate::spool::Budget;

/// How long the MQTT sources may take to flush acks and disconnect at shutdown.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long open HTTP connections may take to finish at shutdown: a probe answers in
/// milliseconds, and a half-sent request must not hold the exit.
const HTTP_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the startup check of the trigger is repeated while it fails.
const TRIGGER_CHECK_INTERVAL: Duration = Duration::from_secs(15);

/// The provider, built and ready to run.
pub struct App {
    listener: TcpListener,
    health: Health,
    metrics: Metrics,
    deliverer: Arc<Deliverer>,
    connections: Arc<Connections>,
    running: Running,
    /// The triggers of the static routes, checked at start.
    static_targets: Vec<Target>,
    /// Each alarm with its target.
    alarms: Vec<(Alarm, Target)>,
    /// With `STATE_DIR` and `ALARM_CATCHUP_SECS`: where the alarms' last ticks are kept.
    catchup: Option<Catchup>,
    /// The feed API, with `STATE_DIR`.
    feed: Option<FeedParts>,
    shutdown_grace: Duration,
}

/// The feed, what its destinations report, and whether the legacy API is served.
struct FeedParts {
    feed: Arc<Feed>,
    disabled_rx: mpsc::UnboundedReceiver<DisableNotice>,
    legacy_api: bool,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let health = Health::default();
        let metrics = Metrics::default();
        let listener = TcpListener::bind(("0.0.0.0", config.http_port))
            .await
            .with_context(|| format!("cannot listen on HTTP_PORT {}", config.http_port))?;
        let sink: Arc<dyn Sink> = match &config.openwhisk {
            Some(ow) if !config.dry_run => Arc::new(
                OpenWhiskClient::new(ow, config.fire.timeout)
                    .context("building the OpenWhisk client")?,
            ),
            _ => {
                tracing::warn!(
                    "dry run: fires are logged, not sent, and messages are acknowledged as if accepted"
                );
                Arc::new(DryRun::masking(config.fire.secret_params.keys()))
            }
        };
        // Static routes and alarms are fired with the process's own key (OW_AUTH), which
        // a dry run may lack.
        let (key, namespace) = match &config.openwhisk {
            Some(ow) => (Some(&ow.auth), ow.namespace.as_str()),
            None => (None, "_"),
        };
        let alarms = config
            .alarms
            .into_iter()
            .map(|alarm| {
                let target = Target::new(key, namespace, &alarm.trigger);
                (alarm, target)
            })
            .collect();
        let catchup = match (config.alarm_catchup, &config.state_dir) {
            (Some(window), Some(dir)) => {
                let dir = dir.clone();
                let log = tokio::task::spawn_blocking(move || TickLog::open(&dir))
                    .await
                    .context("opening the alarm tick log")?;
                Some(Catchup {
                    log: Arc::new(log),
                    window,
                    metrics: metrics.clone(),
                })
            }
            _ => None,
        };
        let deliverer = Arc::new(Deliverer {
            sink,
            pauses: Pauses::default(),
            events: Events::new(health.clone(), metrics.clone()),
            max_payload_bytes: config.fire.max_payload_bytes,
        });
        let pipeline = Pipeline {
            deliverer: deliverer.clone(),
            bodies: Arc::new(MessageBodies::new(&config.fire.message_params())),
            concurrency: config.fire.concurrency,
            batch_max: config.fire.batch_max,
            batch_wait: config.fire.batch_wait,
            spool: match (config.spool, &config.state_dir) {
                (Some(spool), Some(dir)) => Some(SpoolPlace {
                    dir: dir.join("spool"),
                    budget: Budget::new(spool.max_bytes, metrics.clone()),
                }),
                _ => None,
            },
        };
        let running = Running::new();
        let connections = Arc::new(Connections::new(
            config.mqtt.clone(),
            namespace,
            pipeline,
            health.clone(),
            metrics.clone(),
            running.clone(),
        ));
        // One destination per trigger: a message matching several of its filters fires
        // it once.
        let mut destinations: HashMap<(String, String), Arc<Destination>> = HashMap::new();
        for route in &config.routes {
            let destination = destinations
                .entry((route.namespace.clone(), route.trigger.clone()))
                .or_insert_with(|| {
                    let target = Target::new(key, &route.namespace, &route.trigger);
                    Arc::new(Destination::new(target, Origin::Static))
                });
            connections.add_route(&config.mqtt, &route.filter, destination)?;
        }
        let feed = match config.state_dir {
            None => None,
            Some(dir) => {
                let key = config.state_key;
                let registry = tokio::task::spawn_blocking(move || Registry::open(&dir, key))
                    .await
                    .context("opening the feed registry")??;
                let legacy_api = config.feed.legacy_api;
                let (feed, disabled_rx) = Feed::new(
                    registry,
                    connections.clone(),
                    deliverer.sink.clone(),
                    config.feed,
                    health.clone(),
                    metrics.clone(),
                );
                feed.start()
                    .await
                    .map_err(|error| anyhow::anyhow!(error.message))?;
                Some(FeedParts {
                    feed,
                    disabled_rx,
                    legacy_api,
                })
            }
        };
        Ok(App {
            listener,
            health,
            metrics,
            deliverer,
            connections,
            running,
            static_targets: destinations
                .into_values()
                .map(|d| d.target.clone())
                .collect(),
            alarms,
            catchup,
            feed,
            shutdown_grace: config.shutdown_grace,
        })
    }

    /// Runs until `shutdown` completes, then: stop taking messages, finish the fires in
    /// flight (up to the grace period), flush acks and disconnect, stop HTTP last so
    /// probes answer throughout.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let running = self.running;
        let stop_http = CancellationToken::new();
        let tasks = TaskTracker::new();

        // Every route known at start is in place: the connections may read now.
        self.connections.start();
        tracing::info!(http_addr = %self.listener.local_addr()?, "HTTP endpoints listening");
        let mut router = crate::http::router(self.health.clone(), self.metrics.clone());
        if let Some(parts) = self.feed {
            router = router.merge(crate::feed::api::router(
                parts.feed.clone(),
                parts.legacy_api,
            ));
            let stop = running.stop_intake.clone();
            let feed = parts.feed;
            tasks.spawn(async move {
                stop.run_until_cancelled(feed.record_disabled(parts.disabled_rx))
                    .await
            });
            tracing::info!(legacy_api = parts.legacy_api, "feed API served");
        }
        let http = tasks.spawn(
            axum::serve(self.listener, router)
                .with_graceful_shutdown(stop_http.clone().cancelled_owned())
                .into_future(),
        );
        for target in self.static_targets {
            let sink = self.deliverer.sink.clone();
            let health = self.health.clone();
            let stop = running.stop_intake.clone();
            tasks.spawn(async move {
                stop.run_until_cancelled(check_trigger(sink, &target, health))
                    .await
            });
        }

        let stop_alarms = CancellationToken::new();
        let alarms = TaskTracker::new();
        for (alarm, target) in self.alarms {
            let deliverer = self.deliverer.clone();
            let catchup = self.catchup.clone();
            alarms.spawn(run_alarm(
                alarm,
                deliverer,
                target,
                catchup,
                stop_alarms.clone(),
            ));
        }
        alarms.close();

        shutdown.await;
        tracing::info!(
            grace_secs = self.shutdown_grace.as_secs(),
            "no longer taking messages; finishing fires in flight"
        );
        running.stop_intake.cancel();
        let fires = running.fires.clone();
        let drained = async {
            running.forwarders.close();
            running.forwarders.wait().await;
            fires.close();
            fires.wait().await;
        };
        tokio::pin!(drained);
        if tokio::time::timeout(self.shutdown_grace, &mut drained)
            .await
            .is_err()
        {
            tracing::warn!(
                unfinished = fires.len(),
                "grace period over: messages not finished stay with the broker (or in the spool) and are fired after the restart"
            );
            running.abandon.cancel();
            drained.await;
        }
        running.fires_done.cancel();
        running.sources.close();
        if tokio::time::timeout(DISCONNECT_TIMEOUT, running.sources.wait())
            .await
            .is_err()
        {
            tracing::warn!("an MQTT connection did not close in time");
        }
        drop(self.connections);
        stop_alarms.cancel();
        alarms.wait().await;
        stop_http.cancel();
        tasks.close();
        if tokio::time::timeout(HTTP_CLOSE_TIMEOUT, http)
            .await
            .is_err()
        {
            tracing::warn!("an HTTP connection was still open at exit; closed");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Checks at start that the key works and the trigger exists, so a missing trigger shows
/// in `/readyz` and the log before the first message; repeats until it does.
async fn check_trigger(sink: Arc<dyn Sink>, target: &Target, health: Health) {
    let trigger = &*target.trigger;
    loop {
        let Some(answer) = sink.check_trigger(target).await else {
            return;
        };
        match (answer.verdict, answer.status) {
            (Verdict::Accepted, _) => {
                tracing::info!(trigger, "OpenWhisk trigger found");
                health.openwhisk_accepting();
                return;
            }
            (_, Some(status)) if status.as_u16() == 404 => health.openwhisk_failing(&format!(
                "404: trigger {trigger:?} does not exist (create it once with wsk trigger create)"
            )),
            (_, Some(status)) => health.openwhisk_failing(&format!("{status}: {}", answer.detail)),
            (_, None) => health.openwhisk_failing(&answer.detail),
        }
        tokio::time::sleep(TRIGGER_CHECK_INTERVAL).await;
    }
}
