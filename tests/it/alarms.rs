//! The embedded cron alarms, end to end: exactly one fire per tick, retries that end at
//! the next tick, and alarms that never hold each other or the messages up.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::harness::{Fault, RecordedFire, run_to_exit, wait_until};
use crate::scenario::{Scenario, publish_readings};

const DEADLINE: Duration = Duration::from_secs(60);
const AGGREGATES: &str = "aggregatesTrigger";

fn scheduled_at(fire: &RecordedFire) -> DateTime<Utc> {
    fire.body["scheduled_at"].as_str().unwrap().parse().unwrap()
}

fn alarm_fires(scenario: &Scenario, alarm: &str) -> Vec<RecordedFire> {
    scenario
        .ow
        .fires()
        .into_iter()
        .filter(|f| f.body["type"] == "alarm" && f.body["alarm"] == alarm)
        .collect()
}

fn accepted(fires: &[RecordedFire]) -> Vec<RecordedFire> {
    fires.iter().filter(|f| f.status == 202).cloned().collect()
}

#[tokio::test]
async fn an_every_second_alarm_fires_once_per_second_without_doubles_or_gaps() {
    let mut scenario = Scenario::start().await;
    scenario.ow.create_trigger(AGGREGATES, true);
    scenario.extra_env.extend([
        ("ALARM_CRON", "* * * * * *".to_owned()),
        ("ALARM_TRIGGER", AGGREGATES.to_owned()),
        ("ALARM_TIMEZONE", "Europe/Rome".to_owned()),
        ("ALARM_PAYLOAD", r#"{"influx_url":"http://influxdb-dc1:8086","central_influx_url":"http://influxdb-central:8086"}"#.to_owned()),
    ]);
    let provider = scenario.spawn_provider().await;
    wait_until("11 alarm fires", DEADLINE, || {
        accepted(&alarm_fires(&scenario, "default")).len() >= 11
    })
    .await;

    let fires = accepted(&alarm_fires(&scenario, "default"));
    let ticks: Vec<DateTime<Utc>> = fires.iter().map(scheduled_at).collect();
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::Duration::seconds(1), "{ticks:?}");
    }
    let first = &fires[0];
    assert_eq!(first.trigger, AGGREGATES);
    assert_eq!(
        first.body,
        json!({
            "type": "alarm", "alarm": "default", "scheduled_at": first.body["scheduled_at"],
            "influx_url": "http://influxdb-dc1:8086", "central_influx_url": "http://influxdb-central:8086"
        })
    );
    assert!(
        provider.log_text().contains("next_fire"),
        "the next fire time is logged at start"
    );
    let counted = provider
        .metric(r#"mqtt_whisk_alarm_fires_total{alarm="default",outcome="accepted"}"#)
        .await
        .unwrap_or(0.0);
    assert!(counted >= 11.0);
}

#[tokio::test]
async fn a_failed_alarm_fire_is_retried_until_accepted_never_twice_per_tick() {
    let mut scenario = Scenario::start().await;
    scenario.ow.create_trigger(AGGREGATES, true);
    scenario.extra_env.extend([
        ("ALARM_CRON", "*/5 * * * * *".to_owned()),
        ("ALARM_TRIGGER", AGGREGATES.to_owned()),
    ]);
    scenario.ow.set_fault(Fault::Status(503));
    let _provider = scenario.spawn_provider().await;
    wait_until("an alarm fire answered 503", DEADLINE, || {
        alarm_fires(&scenario, "default")
            .iter()
            .any(|f| f.status == 503)
    })
    .await;
    let failed_tick = scheduled_at(&alarm_fires(&scenario, "default")[0]);
    scenario.ow.set_fault(Fault::None);
    wait_until("two ticks accepted", DEADLINE, || {
        accepted(&alarm_fires(&scenario, "default")).len() >= 2
    })
    .await;

    let fires = accepted(&alarm_fires(&scenario, "default"));
    let mut per_tick: BTreeMap<DateTime<Utc>, usize> = BTreeMap::new();
    for fire in &fires {
        *per_tick.entry(scheduled_at(fire)).or_default() += 1;
    }
    assert!(
        per_tick.values().all(|&n| n == 1),
        "one accepted fire per tick: {per_tick:?}"
    );
    // The 503'd tick was either retried into acceptance or given up at the next tick.
    assert!(per_tick.keys().all(|tick| *tick >= failed_tick));
}

#[tokio::test]
async fn a_failing_alarm_delays_neither_other_alarms_nor_messages() {
    let mut scenario = Scenario::start().await;
    scenario.ow.create_trigger(AGGREGATES, true);
    // "broken" fires a trigger that does not exist: 404, retried until its next tick.
    scenario.extra_env.push((
        "ALARMS",
        json!([
            {"name": "broken", "cron": "* * * * * *", "trigger": "notCreatedTrigger"},
            {"name": "hourly", "cron": "* * * * * *", "trigger": AGGREGATES,
             "timezone": "America/New_York", "payload": {"datacenter_id": "dc1"}}
        ])
        .to_string(),
    ));
    let _provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..200).await;
    scenario.wait_delivered(200, DEADLINE).await;
    wait_until("five ticks of the healthy alarm", DEADLINE, || {
        accepted(&alarm_fires(&scenario, "hourly")).len() >= 5
    })
    .await;
    assert!(
        alarm_fires(&scenario, "broken")
            .iter()
            .all(|f| f.status == 404)
    );
    let ticks: Vec<_> = accepted(&alarm_fires(&scenario, "hourly"))
        .iter()
        .map(scheduled_at)
        .collect();
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::Duration::seconds(1), "{ticks:?}");
    }
}

#[tokio::test]
async fn bad_alarm_settings_exit_2_naming_the_variable_and_index() {
    let base = [
        ("MQTT_URL", "mqtt://mosquitto".to_owned()),
        ("MQTT_TOPICS", "dc1/#".to_owned()),
        ("OW_TRIGGER", "t".to_owned()),
    ];
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("ALARM_CRON", "61 * * * *"), ("ALARM_TRIGGER", "a")],
            "ALARM_CRON",
        ),
        (&[("ALARM_CRON", "0 3 * * *")], "ALARM_TRIGGER"),
        (
            &[
                ("ALARM_CRON", "0 3 * * *"),
                ("ALARM_TRIGGER", "a"),
                ("ALARM_TIMEZONE", "Europe/Atlantis"),
            ],
            "ALARM_TIMEZONE",
        ),
        (
            &[
                ("ALARM_CRON", "0 3 * * *"),
                ("ALARM_TRIGGER", "a"),
                ("ALARM_PAYLOAD", "[1]"),
            ],
            "ALARM_PAYLOAD",
        ),
        (
            &[(
                "ALARMS",
                r#"[{"name":"a","cron":"0 3 * * *","trigger":"t"},{"name":"b","trigger":"t"}]"#,
            )],
            "ALARMS[1].cron",
        ),
    ];
    for (vars, variable) in cases {
        let mut env: Vec<(&str, String)> = base.to_vec();
        env.extend(vars.iter().map(|(k, v)| (*k, v.to_string())));
        let out = run_to_exit(&["--dry-run"], &env).await;
        assert_eq!(out.status.code(), Some(2), "{vars:?}: {out:?}");
        assert!(
            out.stderr.contains(&format!("  {variable}: ")),
            "{vars:?}: {}",
            out.stderr
        );
    }
}

#[tokio::test]
async fn check_shows_each_alarms_next_fire_time() {
    let out = run_to_exit(
        &["--check", "--dry-run"],
        &[
            ("MQTT_URL", "mqtt://mosquitto".into()),
            ("MQTT_TOPICS", "dc1/#".into()),
            ("OW_TRIGGER", "t".into()),
            ("ALARM_CRON", "0 3 * * *".into()),
            ("ALARM_TRIGGER", AGGREGATES.into()),
            ("ALARM_TIMEZONE", "Europe/Rome".into()),
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout
            .contains("in Europe/Rome fires aggregatesTrigger"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("next fire 20") && out.stdout.contains("T03:00:00+0"),
        "{}",
        out.stdout
    );
}

/// A tick missed while the provider was down (its state file says the last fired tick
/// was three days earlier) fires once on start with its own `scheduled_at`; the two older
/// misses are counted, not fired; after a restart nothing fires again. The cron fires
/// daily at the time of day 30 s before the test started, so no other tick interferes.
#[tokio::test]
async fn a_tick_missed_while_down_fires_once_on_start_and_not_again_after_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let tick = chrono::DateTime::from_timestamp(Utc::now().timestamp() - 30, 0).unwrap();
    let last = tick - chrono::Duration::days(3);
    std::fs::write(
        state.path().join("alarm_ticks.json"),
        json!({"default": last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}).to_string(),
    )
    .unwrap();
    let mut scenario = Scenario::start().await;
    scenario.ow.create_trigger(AGGREGATES, true);
    scenario.extra_env.extend([
        ("ALARM_CRON", tick.format("%S %M %H * * *").to_string()),
        ("ALARM_TRIGGER", AGGREGATES.to_owned()),
        ("ALARM_CATCHUP_SECS", "3600".to_owned()),
        ("STATE_DIR", state.path().display().to_string()),
    ]);

    let mut provider = scenario.spawn_provider().await;
    wait_until("the missed tick fired", DEADLINE, || {
        !accepted(&alarm_fires(&scenario, "default")).is_empty()
    })
    .await;
    let missed = provider
        .metric(r#"mqtt_whisk_alarm_ticks_missed_total{alarm="default"}"#)
        .await;
    assert_eq!(missed, Some(2.0), "the two days before were too old");
    provider.sigterm();
    assert!(provider.wait_exit(DEADLINE).await.success());
    let fires = alarm_fires(&scenario, "default");
    assert_eq!(fires.len(), 1, "{fires:?}");
    assert_eq!(scheduled_at(&fires[0]), tick);
    let recorded = std::fs::read_to_string(state.path().join("alarm_ticks.json")).unwrap();
    assert!(recorded.contains(&tick.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));

    // The runner decides about catch-up before it logs "alarm scheduled": once that line
    // is there without a catch-up, no fire of the old tick can follow.
    let mut again = scenario.spawn_provider().await;
    again.wait_for_log("alarm scheduled", DEADLINE).await;
    again.sigterm();
    assert!(again.wait_exit(DEADLINE).await.success());
    assert!(
        !again.log_text().contains("catching up"),
        "{}",
        again.log_text()
    );
    assert_eq!(alarm_fires(&scenario, "default").len(), 1);
}
