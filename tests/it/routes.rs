//! Static routes (SPEC section 7): `ROUTES` beside or instead of `MQTT_TOPICS` +
//! `OW_TRIGGER`; a message fires every route it matches and is acknowledged only once
//! all of those fires got a final answer.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::harness::{delivered_sequence_numbers, delivered_to, wait_until};
use crate::scenario::{Scenario, publish_readings};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_reading_is_acknowledged_only_once_every_route_it_matches_accepted_it() {
    let mut scenario = Scenario::start().await;
    // t1's readings match both routes; the others only the first.
    scenario.extra_env.extend([
        ("MQTT_TOPICS", String::new()),
        ("OW_TRIGGER", String::new()),
        (
            "ROUTES",
            r#"[{"filter":"dc1/sensors/#","trigger":"all"},{"filter":"dc1/+/t1","trigger":"t1only"}]"#
                .to_owned(),
        ),
    ]);
    scenario.ow.create_trigger("all", true);
    // "t1only" does not exist yet: a static route waits for it (404 is retried).
    let mut provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..20).await;
    let all: BTreeSet<u64> = (0..20).collect();
    wait_until("every reading at the first route", DEADLINE, || {
        delivered_to(&scenario.ow.accepted(), "all").len() >= 20
    })
    .await;
    wait_until(
        "t1's readings refused by the missing trigger",
        DEADLINE,
        || scenario.ow.count_status(404) >= 2,
    )
    .await;
    provider.sigkill();
    provider.wait_exit(DEADLINE).await;

    // Readings 1 and 11 were never acknowledged: the broker still has them.
    scenario.ow.create_trigger("t1only", true);
    let _provider = scenario.spawn_provider().await;
    wait_until("t1's readings at the second route", DEADLINE, || {
        delivered_to(&scenario.ow.accepted(), "t1only").len() >= 2
    })
    .await;
    assert_eq!(
        delivered_to(&scenario.ow.accepted(), "t1only"),
        BTreeSet::from([1, 11])
    );
    assert_eq!(delivered_to(&scenario.ow.accepted(), "all"), all);
    let once: Vec<u64> = scenario
        .ow
        .accepted()
        .iter()
        .filter(|f| f.trigger == "t1only")
        .flat_map(|f| delivered_sequence_numbers(std::slice::from_ref(f)).0)
        .collect();
    assert_eq!(
        once.len(),
        2,
        "each route fires a matching reading once: {once:?}"
    );
}

#[tokio::test]
async fn batches_are_gathered_per_trigger() {
    let mut scenario = Scenario::start().await;
    scenario.extra_env.extend([
        ("MQTT_TOPICS", String::new()),
        ("OW_TRIGGER", String::new()),
        ("FIRE_BATCH_MAX", "5".to_owned()),
        (
            "ROUTES",
            r#"[{"filter":"dc1/sensors/#","trigger":"all"},{"filter":"dc1/+/t1","trigger":"t1only"}]"#
                .to_owned(),
        ),
    ]);
    scenario.ow.create_trigger("all", true);
    scenario.ow.create_trigger("t1only", true);
    let _provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..50).await;
    wait_until("every reading at both triggers", DEADLINE, || {
        let accepted = scenario.ow.accepted();
        delivered_to(&accepted, "all").len() >= 50 && delivered_to(&accepted, "t1only").len() >= 5
    })
    .await;
    let accepted = scenario.ow.accepted();
    assert_eq!(delivered_to(&accepted, "all"), (0..50).collect());
    assert_eq!(
        delivered_to(&accepted, "t1only"),
        (0..50).filter(|seq| seq % 10 == 1).collect()
    );
    for fire in &accepted {
        assert_eq!(fire.body["type"], "batch", "{}", fire.body);
        let topics: Vec<&str> = fire.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["topic"].as_str().unwrap())
            .collect();
        if fire.trigger == "t1only" {
            assert!(topics.iter().all(|t| *t == "dc1/sensors/t1"), "{topics:?}");
        }
    }
    let batches_of_all = accepted.iter().filter(|f| f.trigger == "all").count();
    assert!(
        batches_of_all < 50,
        "the first trigger's readings travel in batches"
    );
}
