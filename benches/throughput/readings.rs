//! What travels through the benchmark: the sensor reading the publisher sends (a sequence
//! number and a send timestamp inside a realistic payload), and what a sink reports
//! having received.

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// Microseconds since the Unix epoch: the clock shared by the publisher (send time) and
/// the sinks (arrival time), which all run on this machine.
pub fn unix_micros() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since_epoch.as_micros()).expect("the clock fits in 64 bits of microseconds")
}

/// The MQTT payload of reading `seq`, sent at `sent_us` (as [`unix_micros`]).
pub fn payload(seq: u64, sent_us: u64) -> String {
    format!(
        r#"{{"seq":{seq},"ts":{sent_us},"datacenter_id":"dc1","temperature":21.5,"humidity":40,"gas_perc":3}}"#
    )
}

/// The fields of a [`payload`] the benchmark needs back.
#[derive(Deserialize)]
pub struct Reading {
    pub seq: u64,
    #[serde(rename = "ts")]
    pub sent_us: u64,
}

impl Reading {
    /// Parses a payload; `None` if it is not one of ours.
    pub fn parse(payload: &[u8]) -> Option<Reading> {
        serde_json::from_slice(payload).ok()
    }
}

/// One reading as a sink saw it.
#[derive(Clone, Copy, Debug)]
pub struct Delivery {
    pub seq: u64,
    pub sent_us: u64,
    pub arrived_us: u64,
}

/// What a sink received since it was last asked.
#[derive(Debug, Default)]
pub struct Received {
    /// Requests (fires) or MQTT messages that carried the deliveries.
    pub carriers: u64,
    pub deliveries: Vec<Delivery>,
}

/// Where readings end up: the fake OpenWhisk, or a plain MQTT subscriber.
pub trait Sink {
    /// Everything received since the previous call (so each delivery is reported once).
    fn take(&self) -> impl Future<Output = anyhow::Result<Received>>;
}
