//! Embedded cron alarms (SPEC sections 2-4), replacing `/whisk.system/alarms`: each alarm
//! fires its trigger on a cron schedule read in an IANA time zone.
//!
//! - `crate::config::alarms`: the alarms' configuration (`ALARM_*` or `ALARMS`);
//! - `crate::schedule`: cron expression + zone -> fire times, with the daylight-saving rule;
//! - this module: the fire body; [`runner`]: one task per alarm that sleeps until each
//!   tick and fires it.

pub mod runner;
pub mod ticks;

use bytes::Bytes;
use chrono::{DateTime, Utc};

pub use crate::config::Alarm;
pub use crate::schedule::Schedule;
pub(crate) use crate::schedule::rfc3339;
pub use runner::{Catchup, run_alarm};
pub use ticks::TickLog;

/// The JSON body of one alarm fire (SPEC section 3): the alarm's payload plus `type`,
/// `alarm` and `scheduled_at`, the tick's time in UTC to the second, which identifies
/// the tick even when the fire is retried or arrives late.
pub fn alarm_body(alarm: &Alarm, scheduled_at: DateTime<Utc>) -> Bytes {
    let mut body = alarm.payload.clone();
    body.insert("type".to_owned(), "alarm".into());
    body.insert("alarm".to_owned(), alarm.name.clone().into());
    body.insert("scheduled_at".to_owned(), rfc3339(scheduled_at).into());
    Bytes::from(serde_json::to_vec(&body).expect("a JSON map always serialises"))
}

#[cfg(test)]
mod tests {
    use chrono_tz::Tz;
    use serde_json::Value;

    use super::*;

    #[test]
    fn the_body_is_the_payload_plus_type_alarm_and_scheduled_at() {
        let alarm = Alarm {
            name: "default".to_owned(),
            expression: "0 3 * * *".to_owned(),
            schedule: Schedule::parse("0 3 * * *", Tz::UTC).unwrap(),
            zone: Tz::UTC,
            trigger: "aggregatesTrigger".to_owned(),
            payload: serde_json::from_str(r#"{"dc": "dc1", "influx_url": "http://influx:8086"}"#)
                .unwrap(),
        };
        let tick = "2026-03-29T01:00:00Z".parse().unwrap();
        let body: Value = serde_json::from_slice(&alarm_body(&alarm, tick)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "dc": "dc1",
                "influx_url": "http://influx:8086",
                "type": "alarm",
                "alarm": "default",
                "scheduled_at": "2026-03-29T01:00:00Z",
            })
        );
    }
}
