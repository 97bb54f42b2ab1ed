//! The feed (SPEC section 8): triggers registered at run time with the project's feed
//! action (run by `node` as OpenWhisk runs it) or over plain HTTP, each fired with its own
//! key and namespace, durable across SIGKILL, isolated per namespace, and refused clearly.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::harness::{
    Daemon, Namespace, delivered_to, feed_request, run_feed_action, wait_until, wait_until_async,
};
use crate::scenario::{Scenario, publish_readings};

const DEADLINE: Duration = Duration::from_secs(60);

/// A broker, a fake OpenWhisk and a provider serving the feed API with no static route.
struct FeedWorld {
    scenario: Scenario,
    state: TempDir,
    extra_env: Vec<(&'static str, String)>,
}

impl FeedWorld {
    async fn start(extra_env: &[(&'static str, String)]) -> FeedWorld {
        FeedWorld {
            scenario: Scenario::start().await,
            state: TempDir::new().expect("a state directory"),
            extra_env: extra_env.to_vec(),
        }
    }

    async fn spawn_provider(&self) -> Daemon {
        let mut env = self.scenario.env();
        // Blank values are unset: no static route, only the feed's.
        env.push(("MQTT_TOPICS", String::new()));
        env.push(("OW_TRIGGER", String::new()));
        env.push(("STATE_DIR", self.state.path().display().to_string()));
        env.extend(self.extra_env.iter().cloned());
        let provider = Daemon::spawn(&env).await;
        provider
            .wait_for_log("feed registry loaded", DEADLINE)
            .await;
        provider
    }

    /// A namespace of its own, with its own key, holding `triggers` (with active rules).
    fn tenant(&self, triggers: &[&str]) -> Namespace {
        let tenant = self.scenario.ow.add_namespace();
        for trigger in triggers {
            tenant.create_trigger(trigger, true);
        }
        tenant
    }
}

fn endpoint(provider: &Daemon) -> String {
    format!("http://127.0.0.1:{}", provider.http_port())
}

/// Runs the feed action for `event` on `/_/trigger` as `tenant` would, with `params`.
async fn action(
    provider: &Daemon,
    event: &str,
    tenant: &Namespace,
    trigger: &str,
    params: Value,
) -> Value {
    let mut all = json!({
        "lifecycleEvent": event,
        "triggerName": format!("/_/{trigger}"),
        "authKey": tenant.auth(),
        "provider_endpoint": endpoint(provider),
    });
    for (key, value) in params.as_object().expect("params are an object") {
        all[key] = value.clone();
    }
    run_feed_action(&all, tenant.name()).await
}

/// CREATE through the feed action, which must succeed.
async fn create(provider: &Daemon, tenant: &Namespace, trigger: &str, topic: &str) {
    let created = action(provider, "CREATE", tenant, trigger, json!({"topic": topic})).await;
    assert_eq!(created.get("error"), None, "{created}");
}

fn registration_url(provider: &Daemon, namespace: &str, trigger: &str) -> String {
    format!(
        "{}/feed/v1/namespaces/{namespace}/triggers/{trigger}",
        endpoint(provider)
    )
}

#[tokio::test]
async fn a_trigger_created_with_the_feed_action_fires_every_reading_moves_on_update_and_stops_on_delete()
 {
    let world = FeedWorld::start(&[]).await;
    let provider = world.spawn_provider().await;
    let tenant = world.tenant(&["tempTrigger"]);
    create(&provider, &tenant, "tempTrigger", "dc1/sensors/+").await;

    let publisher = world.scenario.publisher().await;
    publish_readings(&publisher, 0..2000).await;
    let all: BTreeSet<u64> = (0..2000).collect();
    wait_until("2,000 readings fired", DEADLINE, || {
        tenant.delivered().0.len() >= 2000
    })
    .await;
    assert_eq!(tenant.delivered().0, all, "zero loss");
    let fire = &tenant.accepted()[0];
    assert_eq!(
        fire.resolved_namespace.as_deref(),
        Some(tenant.name()),
        "fired in the caller's namespace"
    );
    assert_eq!(
        fire.namespace,
        tenant.name(),
        "with _ resolved by the feed action"
    );

    let read = action(&provider, "READ", &tenant, "tempTrigger", json!({})).await;
    assert_eq!(read["config"]["topic"], "dc1/sensors/+", "{read}");
    assert_eq!(read["config"]["name"], "tempTrigger");
    assert_eq!(read["status"]["active"], true);
    assert!(read["status"]["dateChanged"].is_u64() && read["status"]["dateChangedISO"].is_string());
    assert!(
        !read.to_string().contains(&tenant.auth()),
        "READ never shows the key"
    );

    let updated = action(
        &provider,
        "UPDATE",
        &tenant,
        "tempTrigger",
        json!({"topic": "dc1/moved/#"}),
    )
    .await;
    assert_eq!(updated["config"]["topic"], "dc1/moved/#", "{updated}");
    // The old filter's reading first, then the new one's: once the second is fired, the
    // first was routed already, to nothing.
    publisher
        .publish(
            "dc1/sensors/t1",
            r#"{"seq":2000}"#,
            rumqttc::QoS::AtLeastOnce,
            false,
        )
        .await;
    publisher
        .publish(
            "dc1/moved/x",
            r#"{"seq":2001}"#,
            rumqttc::QoS::AtLeastOnce,
            false,
        )
        .await;
    wait_until("the moved reading", DEADLINE, || {
        tenant.delivered().0.contains(&2001)
    })
    .await;
    assert!(
        !tenant.delivered().0.contains(&2000),
        "the old filter no longer fires it"
    );

    // A witness in another namespace on the same filter shows when later readings were
    // routed.
    let witness = world.tenant(&["witness"]);
    create(&provider, &witness, "witness", "dc1/moved/#").await;
    let deleted = action(&provider, "DELETE", &tenant, "tempTrigger", json!({})).await;
    assert_eq!(deleted.get("error"), None, "{deleted}");
    let fires_at_delete = tenant.fires().len();
    publisher
        .publish(
            "dc1/moved/x",
            r#"{"seq":2002}"#,
            rumqttc::QoS::AtLeastOnce,
            false,
        )
        .await;
    wait_until("the witness's reading", DEADLINE, || {
        witness.delivered().0.contains(&2002)
    })
    .await;
    assert_eq!(
        tenant.fires().len(),
        fires_at_delete,
        "no fire after DELETE was answered"
    );
    let read = action(&provider, "READ", &tenant, "tempTrigger", json!({})).await;
    assert!(
        read["error"].as_str().unwrap_or_default().contains("404"),
        "{read}"
    );
}

#[tokio::test]
async fn two_triggers_on_overlapping_filters_each_get_every_reading_while_one_fails() {
    let world = FeedWorld::start(&[]).await;
    let provider = world.spawn_provider().await;
    let steady = world.tenant(&["all"]);
    let flaky = world.tenant(&["sensors"]);
    for (tenant, trigger, topic) in [
        (&steady, "all", "dc1/#"),
        (&flaky, "sensors", "dc1/sensors/+"),
    ] {
        create(&provider, tenant, trigger, topic).await;
    }
    let publisher = world.scenario.publisher().await;
    flaky.set_fault(crate::harness::Fault::Status(503));
    publish_readings(&publisher, 0..100).await;
    wait_until("503s", DEADLINE, || flaky.count_status(503) >= 5).await;
    flaky.set_fault(crate::harness::Fault::TooManyRequests {
        retry_after_secs: Some(1),
    });
    publish_readings(&publisher, 100..200).await;
    wait_until("429s", DEADLINE, || flaky.count_status(429) >= 2).await;
    flaky.set_fault(crate::harness::Fault::None);
    let all: BTreeSet<u64> = (0..200).collect();
    wait_until("every reading at both", DEADLINE, || {
        steady.delivered().0.len() >= 200 && flaky.delivered().0.len() >= 200
    })
    .await;
    assert_eq!(steady.delivered().0, all);
    assert_eq!(flaky.delivered().0, all);
}

#[tokio::test]
async fn a_throttled_namespace_never_slows_another_on_the_same_broker() {
    let world = FeedWorld::start(&[]).await;
    let provider = world.spawn_provider().await;
    let throttled = world.tenant(&["a"]);
    let flowing = world.tenant(&["b"]);
    for (tenant, trigger) in [(&throttled, "a"), (&flowing, "b")] {
        create(&provider, tenant, trigger, "dc1/sensors/+").await;
    }
    throttled.set_fault(crate::harness::Fault::TooManyRequests {
        retry_after_secs: Some(1),
    });
    let publisher = world.scenario.publisher().await;
    // 20 s at 20 readings a second, far more than the broker's window of 20 in flight.
    let started = tokio::time::Instant::now();
    let mut lag = Vec::new();
    for second in 0..20u64 {
        publish_readings(&publisher, second * 20..(second + 1) * 20).await;
        let published = (second + 1) * 20;
        let caught_up = test_support::poll_until(Duration::from_secs(5), || {
            flowing.delivered().0.len() as u64 >= published
        })
        .await;
        lag.push((second, caught_up));
        tokio::time::sleep_until(started + Duration::from_secs(second + 1)).await;
    }
    assert!(
        lag.iter().all(|(_, caught_up)| *caught_up),
        "b kept up every second: {lag:?}"
    );
    assert!(throttled.count_status(429) > 0, "a was throttled meanwhile");
    assert!(throttled.delivered().0.is_empty());
    throttled.set_fault(crate::harness::Fault::None);
    let all: BTreeSet<u64> = (0..400).collect();
    wait_until("a catches up", DEADLINE, || {
        throttled.delivered().0.len() >= 400
    })
    .await;
    assert_eq!(throttled.delivered().0, all, "nothing lost in a");
    assert_eq!(flowing.delivered().0, all, "nothing lost in b");
}

#[tokio::test]
async fn a_registration_answered_2xx_survives_sigkill() {
    let world = FeedWorld::start(&[]).await;
    let mut provider = world.spawn_provider().await;
    let tenant = world.tenant(&["t"]);
    create(&provider, &tenant, "t", "dc1/sensors/+").await;
    provider.sigkill();
    provider.wait_exit(DEADLINE).await;
    let provider = world.spawn_provider().await;
    provider.wait_for_log("\"subscribed\"", DEADLINE).await;
    let publisher = world.scenario.publisher().await;
    publish_readings(&publisher, 0..10).await;
    wait_until("fired after the restart", DEADLINE, || {
        tenant.delivered().0.len() >= 10
    })
    .await;
    let read = action(&provider, "READ", &tenant, "t", json!({})).await;
    assert_eq!(read["status"]["active"], true, "{read}");
}

#[tokio::test]
async fn wrong_keys_foreign_namespaces_and_missing_triggers_store_nothing() {
    let world = FeedWorld::start(&[]).await;
    let provider = world.spawn_provider().await;
    let tenant = world.tenant(&["t"]);
    let other = world.tenant(&["theirs"]);
    let body = || Some(br#"{"topic":"dc1/sensors/+"}"#.to_vec());
    let wrong_key = format!("{}x", tenant.auth());
    for (namespace, trigger, auth, status) in [
        (tenant.name(), "t", wrong_key.as_str(), 401),
        (other.name(), "theirs", &*tenant.auth(), 403),
        (tenant.name(), "missing", &*tenant.auth(), 404),
    ] {
        let url = registration_url(&provider, namespace, trigger);
        let (answered, error) = feed_request(Method::PUT, &url, Some(auth), body()).await;
        assert_eq!(answered, status, "{namespace}/{trigger}: {error}");
        assert!(error["error"].is_string(), "{error}");
        assert!(!error.to_string().contains(auth), "no key in {error}");
    }
    let read = registration_url(&provider, tenant.name(), "t");
    let (status, answer) = feed_request(Method::GET, &read, Some(&tenant.auth()), None).await;
    assert_eq!(
        (status, answer["error"].as_str().is_some()),
        (404, true),
        "{answer}"
    );
    assert_eq!(
        provider.metric("mqtt_whisk_feed_registrations").await,
        Some(0.0)
    );
}

#[tokio::test]
async fn every_bad_request_is_a_4xx_naming_what_was_wrong_and_stores_nothing() {
    let world = FeedWorld::start(&[]).await;
    let provider = world.spawn_provider().await;
    let tenant = world.tenant(&["t"]);
    let url = registration_url(&provider, tenant.name(), "t");
    let auth = tenant.auth();
    let cases: Vec<(Option<&str>, Vec<u8>, u16, &str)> = vec![
        (Some(&auth), b"{not json".to_vec(), 400, "not JSON"),
        (Some(&auth), b"[1]".to_vec(), 400, "JSON object"),
        (Some(&auth), b"{}".to_vec(), 400, "topic"),
        (
            Some(&auth),
            br#"{"topic":"dc1/#/x"}"#.to_vec(),
            400,
            "topic",
        ),
        (Some(&auth), br#"{"topic":7}"#.to_vec(), 400, "topic"),
        (
            Some(&auth),
            br#"{"topic":"a","qos":3}"#.to_vec(),
            400,
            "qos",
        ),
        (
            Some(&auth),
            br#"{"topic":"a","url":"ws://x"}"#.to_vec(),
            400,
            "url",
        ),
        (
            Some(&auth),
            br#"{"topic":"a","url":"mqtt://elsewhere:1883"}"#.to_vec(),
            400,
            "FEED_ALLOWED_BROKERS",
        ),
        (
            Some(&auth),
            br#"{"topic":"a","tpoic":"b"}"#.to_vec(),
            400,
            "tpoic",
        ),
        (Some(&auth), vec![b' '; 100_000], 413, "body"),
        (None, br#"{"topic":"a"}"#.to_vec(), 401, "Authorization"),
    ];
    for (auth, body, status, names) in cases {
        let (answered, error) = feed_request(Method::PUT, &url, auth, Some(body)).await;
        let message = error["error"].as_str().unwrap_or_default();
        assert_eq!(answered, status, "{error}");
        assert!(message.contains(names), "{names:?} not named in {error}");
    }
    let (status, _) = feed_request(Method::GET, &url, Some(&auth), None).await;
    assert_eq!(status, 404, "nothing was registered");
    wait_until_async("the provider still ready", DEADLINE, || async {
        provider.get("/healthz").await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn the_older_feed_actions_requests_work_unchanged() {
    let world = FeedWorld::start(&[("FEED_LEGACY_API", "true".to_owned())]).await;
    let provider = world.spawn_provider().await;
    let tenant = world.tenant(&["feed_trigger"]);
    let (user, password) = tenant
        .auth()
        .split_once(':')
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .unwrap();
    let broker_port = world
        .scenario
        .broker
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let body = json!({
        "trigger": format!("/{}/feed_trigger", tenant.name()),
        "url": format!("http://127.0.0.1:{broker_port}"),
        "topic": "dc1/sensors/+",
        "username": user,
        "password": password,
    });
    let url = format!("{}/mqtt", endpoint(&provider));
    let (status, answer) = feed_request(
        Method::POST,
        &url,
        None,
        Some(body.to_string().into_bytes()),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let publisher = world.scenario.publisher().await;
    publish_readings(&publisher, 0..10).await;
    wait_until("legacy registration fires", DEADLINE, || {
        tenant.delivered().0.len() >= 10
    })
    .await;

    let delete = format!(
        "{}/mqtt/{}/feed_trigger",
        endpoint(&provider),
        tenant.name()
    );
    let (status, answer) = feed_request(Method::DELETE, &delete, None, None).await;
    assert_eq!(status, 200, "{answer}");
    let read = registration_url(&provider, tenant.name(), "feed_trigger");
    let (status, _) = feed_request(Method::GET, &read, Some(&tenant.auth()), None).await;
    assert_eq!(status, 404, "unregistered");
}

#[tokio::test]
async fn a_trigger_deleted_behind_the_feeds_back_is_disabled_and_its_readings_stop_waiting() {
    let world = FeedWorld::start(&[("FEED_DISABLE_AFTER_SECS", "2".to_owned())]).await;
    let provider = world.spawn_provider().await;
    let tenant = world.tenant(&["gone", "stays"]);
    for trigger in ["gone", "stays"] {
        create(&provider, &tenant, trigger, "dc1/sensors/+").await;
    }
    tenant.delete_trigger("gone");
    let publisher = world.scenario.publisher().await;
    publish_readings(&publisher, 0..5).await;
    wait_until_async("disabled", DEADLINE, || async {
        provider
            .metric("mqtt_whisk_feed_triggers_disabled_total")
            .await
            == Some(1.0)
    })
    .await;
    let all: BTreeSet<u64> = (0..5).collect();
    wait_until("the other trigger's readings", DEADLINE, || {
        delivered_to(&tenant.accepted(), "stays").len() >= 5
    })
    .await;
    assert_eq!(delivered_to(&tenant.accepted(), "stays"), all);
    let (_, ready) = provider.get("/readyz").await;
    let ready: Value = serde_json::from_str(&ready).unwrap();
    let path = format!("/{}/gone", tenant.name());
    assert!(
        ready["triggers"][&path]
            .as_str()
            .unwrap_or_default()
            .starts_with("disabled"),
        "{ready}"
    );
    assert_eq!(
        ready["ready"], true,
        "one tenant's trigger does not make the provider unready"
    );
    // Readings published now fire "stays" at once: nothing waits for "gone".
    publish_readings(&publisher, 5..10).await;
    wait_until("later readings", DEADLINE, || {
        delivered_to(&tenant.accepted(), "stays").len() >= 10
    })
    .await;
    // Once the trigger exists again, READ shows why it was disabled.
    tenant.create_trigger("gone", true);
    let read = action(&provider, "READ", &tenant, "gone", json!({})).await;
    assert_eq!(read["status"]["active"], false, "{read}");
    assert_eq!(read["status"]["reason"]["kind"], "AUTO");
    assert_eq!(read["status"]["reason"]["statusCode"], 404);
    assert_eq!(
        provider.log_text().matches("feed trigger disabled").count(),
        1,
        "logged once"
    );
}

#[tokio::test]
async fn stored_keys_are_encrypted_with_the_state_key_and_never_shown() {
    let key_dir = TempDir::new().unwrap();
    let key_file = key_dir.path().join("state.key");
    std::fs::write(&key_file, "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n").unwrap();
    let world = FeedWorld::start(&[("STATE_KEY_FILE", key_file.display().to_string())]).await;
    let mut provider = world.spawn_provider().await;
    let tenant = world.tenant(&["t"]);
    let broker = world
        .scenario
        .broker
        .url()
        .replace("mqtt://", "mqtt://sensor:broker-password-9@");
    let url = registration_url(&provider, tenant.name(), "t");
    let body = json!({"topic": "dc1/sensors/+", "url": broker}).to_string();
    let (status, created) = feed_request(
        Method::PUT,
        &url,
        Some(&tenant.auth()),
        Some(body.into_bytes()),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let secret = tenant.auth().split_once(':').unwrap().1.to_owned();
    assert!(
        !created.to_string().contains("broker-password-9"),
        "{created}"
    );
    assert!(
        created["config"]["url"]
            .as_str()
            .unwrap()
            .contains("sensor@"),
        "{created}"
    );

    let registry = std::fs::read(world.state.path().join("registry.redb")).unwrap();
    let text = String::from_utf8_lossy(&registry);
    assert!(
        !text.contains(&secret) && !text.contains("broker-password-9"),
        "sealed at rest"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(world.state.path().join("registry.redb"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let (_, check) = provider.get("/readyz").await;
    for shown in [provider.log_text(), check] {
        assert!(!shown.contains(&secret) && !shown.contains("broker-password-9"));
    }

    provider.sigterm();
    provider.wait_exit(DEADLINE).await;
    std::fs::write(&key_file, "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=\n").unwrap();
    let mut env = world.scenario.env();
    env.extend([
        ("MQTT_TOPICS", String::new()),
        ("OW_TRIGGER", String::new()),
        ("STATE_DIR", world.state.path().display().to_string()),
        ("STATE_KEY_FILE", key_file.display().to_string()),
    ]);
    let out = crate::harness::run_to_exit(&[], &env).await;
    assert!(!out.status.success(), "{out:?}");
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("STATE_KEY_FILE"),
        "the error names the key to set: {said}"
    );
    assert!(!said.contains(&secret));
}

/// The feed's routes are loaded before any connection reads: a persistent session hands
/// over what it kept at once, and a reading on a feed filter that found no route yet
/// would be acknowledged unfired.
#[tokio::test]
async fn readings_kept_for_a_feed_trigger_during_a_restart_are_fired_after_it() {
    let mut world = FeedWorld::start(&[]).await;
    // The static route's connection is also the feed registration's: same broker, same
    // namespace.
    let namespace = world.scenario.ow.namespace().to_owned();
    world.extra_env = vec![
        ("MQTT_TOPICS", "dc1/static/#".to_owned()),
        ("OW_TRIGGER", crate::scenario::TRIGGER.to_owned()),
        ("OW_NAMESPACE", namespace.clone()),
    ];
    world.scenario.ow.create_trigger("feedT", true);
    let mut provider = world.spawn_provider().await;
    let url = registration_url(&provider, &namespace, "feedT");
    let body = br#"{"topic":"dc1/sensors/+"}"#.to_vec();
    let auth = world.scenario.ow.auth();
    let (status, created) = feed_request(Method::PUT, &url, Some(&auth), Some(body)).await;
    assert_eq!(status, 200, "{created}");
    provider.sigterm();
    provider.wait_exit(DEADLINE).await;

    let publisher = world.scenario.publisher().await;
    publish_readings(&publisher, 0..200).await;
    let _provider = world.spawn_provider().await;
    let all: BTreeSet<u64> = (0..200).collect();
    wait_until("every kept reading fired", DEADLINE, || {
        delivered_to(&world.scenario.ow.accepted(), "feedT").len() >= 200
    })
    .await;
    assert_eq!(delivered_to(&world.scenario.ow.accepted(), "feedT"), all);
}

/// An UPDATE replaces a registration's destination while its readings wait for
/// OpenWhisk: they are handed to the new one, not acknowledged unfired.
#[tokio::test]
async fn readings_waiting_when_a_trigger_is_updated_are_fired_by_the_new_registration() {
    let world = FeedWorld::start(&[]).await;
    let provider = world.spawn_provider().await;
    let tenant = world.tenant(&["t"]);
    create(&provider, &tenant, "t", "dc1/sensors/+").await;
    tenant.set_fault(crate::harness::Fault::Status(503));
    let publisher = world.scenario.publisher().await;
    publish_readings(&publisher, 0..20).await;
    wait_until("the readings waiting", DEADLINE, || {
        tenant.count_status(503) >= 20
    })
    .await;
    let updated = action(
        &provider,
        "UPDATE",
        &tenant,
        "t",
        json!({"topic": "dc1/sensors/#"}),
    )
    .await;
    assert_eq!(updated["config"]["topic"], "dc1/sensors/#", "{updated}");
    tenant.set_fault(crate::harness::Fault::None);
    let all: BTreeSet<u64> = (0..20).collect();
    wait_until("every waiting reading fired", DEADLINE, || {
        tenant.delivered().0.len() >= 20
    })
    .await;
    assert_eq!(tenant.delivered().0, all);
}
