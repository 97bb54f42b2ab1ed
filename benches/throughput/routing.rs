//! Routing scale: the same readings at the same rate, to a provider subscribed to the
//! benchmark's `bench/#` alone and then to thousands of filters more that match nothing
//! it publishes. What each message costs should not grow with the filters (issue 10); the
//! idle memory does, by what a registered filter takes.

use std::fmt::Write as _;

use super::publisher::Pace;
use super::report::Row;
use super::scenario::run_scenario;
use super::settings::{Scenario, Settings, Targets};

/// One filter count's row.
pub struct RoutingRow {
    pub filters: usize,
    pub row: Row,
}

/// Runs one step at `BENCH_FILTERS_RATE` on a fresh stack (Mosquitto's default window,
/// one fire per message) for each count of `BENCH_FILTERS`.
pub async fn run_routing(settings: &Settings) -> Vec<RoutingRow> {
    let pace = Pace::Rate(settings.filters_rate);
    let mut rows = Vec::new();
    for &filters in &settings.filters {
        let scenario = Scenario {
            key: format!("filters={filters}"),
            label: format!("routing scale, filters={filters}"),
            window: None,
            provider_env: vec![("MQTT_TOPICS", topics(filters))],
            spool: false,
            targets: Targets::default(),
        };
        eprintln!("{}", scenario.label);
        rows.extend(
            run_scenario(&scenario, &[pace], settings)
                .await
                .into_iter()
                .map(|row| RoutingRow { filters, row }),
        );
    }
    rows
}

/// `MQTT_TOPICS` with `count` filters: `bench/#`, which takes every reading, then a
/// quarter each of `dc1/<i>/temp`, `dc1/+/<i>`, `bench/<i>/t` and `bench/+/<i>`, none
/// of which matches `bench/sensors/t0`..`t9`. The last two sit beside the readings'
/// topics, so a lookup walks nodes holding thousands of them.
///
/// Short, because Linux passes at most 128 KiB in one environment variable: 10,000
/// filters of these shapes take 126 KB, and about 10,300 fit.
fn topics(count: usize) -> String {
    let mut topics = String::from("bench/#");
    for i in 1..count {
        match i % 4 {
            0 => write!(topics, ",dc1/{i}/temp"),
            1 => write!(topics, ",dc1/+/{i}"),
            2 => write!(topics, ",bench/{i}/t"),
            _ => write!(topics, ",bench/+/{i}"),
        }
        .expect("write to a String");
    }
    topics
}
