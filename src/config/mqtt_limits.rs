//! What MQTT 3.1.1 and rumqttc can carry, checked at start rather than found out on the
//! wire: a string's length is written in two bytes (rumqttc truncates a longer one into
//! a malformed packet), a UTF-8 string may not hold U+0000 (brokers disconnect), and
//! rumqttc refuses to write a packet over `MQTT_MAX_PACKET_BYTES`, so a CONNECT or
//! SUBSCRIBE larger than that would never connect or subscribe.

use std::ops::RangeInclusive;

use rumqttc::{Connect, QoS, Subscribe, SubscribeFilter};
use secrecy::ExposeSecret;

use super::{MqttConfig, Problems};

/// `MQTT_MAX_PACKET_BYTES`: room for a reading at least, and at most the largest packet
/// MQTT can frame (its remaining length is at most 268,435,455).
pub(super) const MAX_PACKET_BYTES: RangeInclusive<usize> = 1024..=268_435_455;

/// The longest MQTT string, in bytes.
const STRING_MAX_BYTES: usize = u16::MAX as usize;

/// How MQTT encodes a value: UTF-8 strings (client id, filters, user name) or binary
/// data (the password), which may hold any byte.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Utf8,
    Binary,
}

/// Records a problem on `variable` unless `value` fits an MQTT string; `part` says which
/// one when the variable holds several ("filter 2"). Never repeats the value, which may
/// be a password.
pub(super) fn fits_a_string(
    problems: &mut Problems,
    variable: &str,
    part: Option<&str>,
    value: &str,
    encoding: Encoding,
) -> bool {
    let part = part.map(|p| format!(" in {p}")).unwrap_or_default();
    if value.len() > STRING_MAX_BYTES {
        problems.push(
            variable,
            &format!(
                "at most {STRING_MAX_BYTES} bytes (MQTT writes a string's length in 2 bytes), got {}{part}",
                value.len()
            ),
        );
        false
    } else if encoding == Encoding::Utf8 && value.contains('\0') {
        problems.push(
            variable,
            &format!("must not contain U+0000, which MQTT forbids in a string{part}"),
        );
        false
    } else {
        true
    }
}

/// Records a problem on `MQTT_MAX_PACKET_BYTES` when the CONNECT or the SUBSCRIBE this
/// configuration sends is larger, sized by rumqttc itself.
pub(super) fn check_packets_fit(config: &MqttConfig, problems: &mut Problems) {
    let mut connect = Connect::new(config.client_id.as_str());
    if let Some(credentials) = &config.credentials {
        let password = credentials.password.as_ref();
        connect.set_login(
            credentials.username.as_str(),
            password.map_or("", |p| p.expose_secret()),
        );
    }
    let filters = config
        .topics
        .iter()
        .map(|filter| SubscribeFilter::new(filter.clone(), QoS::AtLeastOnce));
    let packets = [
        (
            "CONNECT",
            connect.size(),
            "MQTT_CLIENT_ID and the credentials",
        ),
        (
            "SUBSCRIBE",
            Subscribe::new_many(filters).size(),
            "MQTT_TOPICS",
        ),
    ];
    for (packet, size, from) in packets {
        if size > config.max_packet_bytes {
            problems.push(
                "MQTT_MAX_PACKET_BYTES",
                &format!(
                    "{} is smaller than the {packet} packet of {size} bytes that {from} make",
                    config.max_packet_bytes
                ),
            );
        }
    }
}
