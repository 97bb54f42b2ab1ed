//! Reconnecting to the broker: a backoff that a broker dropping the provider at once cannot
//! turn into a storm, logs an operator sees before the first connection, and a shutdown
//! that never waits for a reconnect attempt or a half-sent HTTP request.

use std::time::Duration;

use rumqttc::QoS;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::harness::{BrokerOptions, Daemon, unique_id, wait_until};
use crate::scenario::{Scenario, password_file_config};

const DEADLINE: Duration = Duration::from_secs(60);
/// How long each loop below is left to run: the scenario itself, not a synchronisation.
const LOOP_WINDOW: Duration = Duration::from_secs(15);

/// The JSON log lines at `level` whose message is `message`.
fn lines_at(daemon: &Daemon, level: &str, message: &str) -> Vec<Value> {
    daemon
        .logs()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["level"] == level && line["fields"]["message"] == message)
        .collect()
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A provider whose broker address has nothing listening.
async fn spawn_without_broker() -> Daemon {
    let url = format!("mqtt://127.0.0.1:{}", closed_port());
    let env = [
        ("MQTT_URL", url),
        ("MQTT_TOPICS", "dc1/#".to_owned()),
        ("MQTT_CLIENT_ID", unique_id("provider")),
        ("OW_API_HOST", "http://127.0.0.1:9".to_owned()),
        ("OW_AUTH", "u:k".to_owned()),
        ("OW_TRIGGER", "t".to_owned()),
    ];
    Daemon::spawn(&env).await
}

async fn reconnects(daemon: &Daemon) -> f64 {
    daemon
        .metric("mqtt_whisk_mqtt_reconnects_total")
        .await
        .unwrap_or(0.0)
}

#[tokio::test]
async fn two_providers_with_one_client_id_back_off_and_say_why() {
    let scenario = Scenario::start().await;
    let first = scenario.spawn_provider().await;
    let second = scenario.spawn_provider().await;
    // Each connection takes the session over from the other.
    tokio::time::sleep(LOOP_WINDOW).await;

    let takeovers = reconnects(&first).await + reconnects(&second).await;
    eprintln!("one client id, two providers: {takeovers} takeovers in {LOOP_WINDOW:?}");
    assert!(
        takeovers <= 30.0,
        "{takeovers} takeovers in {LOOP_WINDOW:?}: the backoff was reset on every connection"
    );
    let told = [&first, &second].iter().any(|daemon| {
        lines_at(
            daemon,
            "ERROR",
            "the broker keeps closing the connection soon after accepting it",
        )
        .iter()
        .any(|line| {
            line["fields"]["client_id"] == scenario.client_id.as_str()
                && line["fields"]["hint"]
                    .as_str()
                    .unwrap_or("")
                    .contains("MQTT_CLIENT_ID")
        })
    });
    assert!(told, "no error named the takeover loop");
}

#[tokio::test]
async fn a_message_over_the_packet_limit_backs_off_instead_of_reconnecting_at_once() {
    let mut scenario = Scenario::start().await;
    scenario
        .extra_env
        .push(("MQTT_MAX_PACKET_BYTES", "4096".to_owned()));
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publisher
        .publish(
            "dc1/sensors/t1",
            vec![b'x'; 20_000],
            QoS::AtLeastOnce,
            false,
        )
        .await;
    publisher.wait_all_acked(DEADLINE).await;
    provider
        .wait_for_log("a message is larger than MQTT_MAX_PACKET_BYTES", DEADLINE)
        .await;
    // The broker resends the message on every connection, and every connection fails.
    tokio::time::sleep(LOOP_WINDOW).await;
    let reconnects = reconnects(&provider).await;
    eprintln!("oversized message: {reconnects} reconnects in {LOOP_WINDOW:?}");
    assert!(
        reconnects <= 15.0,
        "{reconnects} reconnects in {LOOP_WINDOW:?}: the backoff was reset on every connection"
    );
}

#[tokio::test]
async fn an_unreachable_broker_is_logged_at_once_and_then_once_per_interval() {
    let provider = spawn_without_broker().await;
    wait_until("several failed attempts", DEADLINE, || {
        lines_at(&provider, "DEBUG", "MQTT broker still unreachable").len() >= 4
    })
    .await;
    let warnings = lines_at(&provider, "WARN", "cannot connect to the MQTT broker");
    assert_eq!(warnings.len(), 1, "{}", provider.log_text());
    assert!(
        warnings[0]["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "the warning names the error: {}",
        warnings[0]
    );
}

#[tokio::test]
async fn refused_credentials_are_an_error_with_the_hint_before_the_first_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut scenario = Scenario::with_broker(BrokerOptions {
        extra_config: password_file_config(dir.path(), "dc1", "RIGHT-PASSWORD"),
        ..BrokerOptions::default()
    })
    .await;
    scenario.extra_env.extend([
        ("MQTT_USERNAME", "dc1".to_owned()),
        ("MQTT_PASSWORD", "WRONG-PASSWORD".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ]);
    let provider = Daemon::spawn(&scenario.env()).await;
    wait_until("an error naming the credentials", DEADLINE, || {
        lines_at(&provider, "ERROR", "cannot connect to the MQTT broker")
            .iter()
            .any(|line| {
                line["fields"]["hint"]
                    .as_str()
                    .unwrap_or("")
                    .contains("refused the credentials")
            })
    })
    .await;
}

#[tokio::test]
async fn sigterm_while_waiting_to_reconnect_exits_at_once() {
    let mut provider = spawn_without_broker().await;
    wait_until("a retry at least 4 s away", DEADLINE, || {
        provider.logs().iter().any(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|line| line["fields"]["retry_in_ms"].as_u64())
                .is_some_and(|ms| ms >= 4_000)
        })
    })
    .await;
    provider.sigterm();
    let status = provider.wait_exit(Duration::from_secs(2)).await;
    assert_eq!(status.code(), Some(0), "{}", provider.log_text());
}

#[tokio::test]
async fn a_half_sent_http_request_does_not_hold_the_exit() {
    let scenario = Scenario::start().await;
    let mut provider = scenario.spawn_provider().await;
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", provider.http_port()))
        .await
        .unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: provider\r\n")
        .await
        .unwrap();
    provider.sigterm();
    let status = provider.wait_exit(Duration::from_secs(8)).await;
    assert_eq!(status.code(), Some(0), "{}", provider.log_text());
}
