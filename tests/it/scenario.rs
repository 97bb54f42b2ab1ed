//! A ready-made world for end-to-end tests: a broker (Mosquitto unless a test asks for
//! nats-server), a fake OpenWhisk with the trigger created, a publisher, and a daemon
//! wired to them with a client id of its own.

use std::collections::BTreeSet;
use std::time::Duration;

use rumqttc::QoS;

use crate::harness::{
    Broker, BrokerOptions, BrokerProgram, Daemon, FakeOpenWhisk, Mosquitto, MqttBroker, Nats,
    NatsOptions, NatsServer, Publisher, RecordedFire, poll_until, unique_id, wait_until,
};

pub const TRIGGER: &str = "addReadingToDbTrigger";
pub const FILTER: &str = "dc1/sensors/#";

pub struct Scenario<P: BrokerProgram = Mosquitto> {
    pub broker: MqttBroker<P>,
    pub ow: FakeOpenWhisk,
    pub client_id: String,
    pub extra_env: Vec<(&'static str, String)>,
}

impl Scenario {
    /// Broker (persistent, unlimited queue so no test depends on Mosquitto's drop
    /// policy) and fake OpenWhisk with an active rule on the trigger.
    pub async fn start() -> Scenario {
        Scenario::with_broker(BrokerOptions {
            max_queued_messages: Some(0),
            ..BrokerOptions::default()
        })
        .await
    }

    pub async fn with_broker(options: BrokerOptions) -> Scenario {
        Scenario::around(Broker::start(options).await).await
    }
}

impl Scenario<Nats> {
    /// nats-server instead of Mosquitto, and fake OpenWhisk with an active rule on the
    /// trigger.
    pub async fn on_nats(options: NatsOptions) -> Scenario<Nats> {
        Scenario::around(NatsServer::start(options).await).await
    }
}

impl<P: BrokerProgram> Scenario<P> {
    /// `broker`, and a fake OpenWhisk with an active rule on the trigger.
    async fn around(broker: MqttBroker<P>) -> Scenario<P> {
        let ow = FakeOpenWhisk::start().await;
        ow.create_trigger(TRIGGER, true);
        Scenario {
            broker,
            ow,
            client_id: unique_id("provider"),
            extra_env: Vec::new(),
        }
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("MQTT_URL", self.broker.url()),
            ("MQTT_TOPICS", FILTER.to_owned()),
            ("MQTT_CLIENT_ID", self.client_id.clone()),
            ("OW_API_HOST", self.ow.api_host()),
            ("OW_AUTH", self.ow.auth()),
            ("OW_TRIGGER", TRIGGER.to_owned()),
            (
                "FIRE_PARAMS",
                r#"{"datacenter_id":"dc1","influx_url":"http://influxdb-dc1:8086"}"#.to_owned(),
            ),
        ];
        env.extend(self.extra_env.iter().cloned());
        env
    }

    /// Starts the provider and waits until its subscription is in place, so that
    /// nothing published afterwards can miss the session.
    pub async fn spawn_provider(&self) -> Daemon {
        let daemon = Daemon::spawn(&self.env()).await;
        daemon
            .wait_for_log("\"subscribed\"", Duration::from_secs(30))
            .await;
        daemon
    }

    /// Stops `provider`, starts another on the same session and publishes one reading on
    /// `dc1/sensors/after`: every fire from then until that reading's. What the first
    /// provider acknowledged must not be among them.
    pub async fn fires_after_a_restart(
        &self,
        provider: Daemon,
        publisher: &Publisher,
    ) -> (Daemon, Vec<RecordedFire>) {
        drop(provider);
        let before = self.ow.fires().len();
        let again = self.spawn_provider().await;
        publisher
            .publish("dc1/sensors/after", "1", QoS::AtLeastOnce, false)
            .await;
        wait_until(
            "the reading after the restart",
            Duration::from_secs(60),
            || self.ow.fires().len() > before,
        )
        .await;
        let after = self.ow.fires().into_iter().skip(before).collect();
        (again, after)
    }

    pub async fn publisher(&self) -> Publisher {
        Publisher::connect(&self.broker.url(), &unique_id("publisher")).await
    }

    /// Waits until every sequence number in `0..count` was accepted at least once;
    /// returns the number of duplicates.
    pub async fn wait_delivered(&self, count: u64, timeout: Duration) -> usize {
        let expected: BTreeSet<u64> = (0..count).collect();
        let all_there = poll_until(timeout, || self.ow.delivered().0.len() as u64 >= count).await;
        let (seen, duplicates) = self.ow.delivered();
        if !all_there {
            let missing: Vec<u64> = expected.difference(&seen).take(20).copied().collect();
            let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
            for fire in self.ow.fires() {
                *statuses.entry(fire.status).or_default() += 1;
            }
            panic!(
                "timed out after {timeout:?}: {} of {count} readings accepted; first missing \
                 {missing:?}; fire attempts by status {statuses:?}",
                seen.len()
            );
        }
        assert_eq!(seen, expected, "only published sequence numbers arrive");
        duplicates
    }

    pub fn accepted_count(&self) -> usize {
        self.ow.delivered().0.len()
    }
}

/// The reading with sequence number `seq`, on one of ten sensor topics.
pub fn reading(seq: u64) -> (String, String) {
    (
        format!("dc1/sensors/t{}", seq % 10),
        format!(
            r#"{{"seq":{seq},"datacenter_id":"dc1","temperature":21.5,"humidity":40,"gas_perc":3}}"#
        ),
    )
}

/// Publishes readings `range` at QoS 1 and waits until the broker acknowledged them all.
pub async fn publish_readings(publisher: &Publisher, range: std::ops::Range<u64>) {
    for seq in range {
        let (topic, payload) = reading(seq);
        publisher
            .publish(&topic, payload, QoS::AtLeastOnce, false)
            .await;
    }
    publisher.wait_all_acked(Duration::from_secs(60)).await;
}

/// Mosquitto configuration that checks a client naming a user against a password file
/// (made in `dir`) holding `user` with `password`; anonymous clients stay allowed.
pub fn password_file_config(dir: &std::path::Path, user: &str, password: &str) -> String {
    let passwords = dir.join("passwords");
    let status = std::process::Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwords)
        .args([user, password])
        .status()
        .expect("mosquitto_passwd runs");
    assert!(status.success(), "mosquitto_passwd failed: {status}");
    format!("password_file {}\n", passwords.display())
}
