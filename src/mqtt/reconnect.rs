//! When to reconnect to the broker, and what the operator is told about it.
//!
//! The backoff grows from 0.1 s to 30 s and is reset only once a connection has stayed up
//! for [`STABLE_CONNECTION`]: a broker that accepts and then at once drops the provider
//! (a message over the size limit, another process using the same client id) would
//! otherwise be reconnected to ten times a second, each time redelivering and refiring.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rumqttc::ConnectionError;

use crate::health::REMINDER_INTERVAL;

/// How long a connection must last for the backoff to start again from its minimum.
const STABLE_CONNECTION: Duration = Duration::from_secs(30);
/// Connections in a row, each closed before it was stable, that make a takeover loop.
const SHORT_LIVED_LOOP: u32 = 3;
const MAX_DELAY: Duration = Duration::from_secs(30);

pub(super) struct Reconnects {
    client_id: String,
    backoff: ExponentialBackoff,
    connected_at: Option<Instant>,
    /// Connections in a row that ended before they were stable.
    short_lived: u32,
    /// Attempts that failed since the last connection.
    failed_attempts: u64,
    /// The last failure logged at WARN or above, and when.
    last_logged: Option<(String, Instant)>,
}

/// What a failure means for the source.
pub(super) struct Failure {
    /// A connection was lost (rather than an attempt failing).
    pub was_connected: bool,
    /// How long to wait before the next attempt.
    pub retry_in: Duration,
}

impl Reconnects {
    pub fn new(client_id: &str) -> Reconnects {
        Reconnects {
            client_id: client_id.to_owned(),
            backoff: backoff(),
            connected_at: None,
            short_lived: 0,
            failed_attempts: 0,
            last_logged: None,
        }
    }

    /// A connection was made; returns the attempts that failed before it.
    pub fn connected(&mut self) -> u64 {
        self.connected_at = Some(Instant::now());
        self.last_logged = None;
        std::mem::take(&mut self.failed_attempts)
    }

    /// Logs a lost connection or a failed attempt (the first, each change, and a reminder
    /// per interval at WARN or ERROR; the rest at DEBUG) and says when to try again.
    pub fn failed(&mut self, error: &ConnectionError) -> Failure {
        let lost = self.connected_at.take();
        match lost {
            Some(since) if since.elapsed() >= STABLE_CONNECTION => {
                self.backoff = backoff();
                self.short_lived = 0;
            }
            Some(_) => self.short_lived += 1,
            None => self.failed_attempts += 1,
        }
        let retry_in = self.backoff.next().unwrap_or(MAX_DELAY);
        let retry_in_ms = retry_in.as_millis() as u64;
        let hint = hint(error);
        if let Some(since) = lost {
            let up_ms = since.elapsed().as_millis() as u64;
            if self.short_lived >= SHORT_LIVED_LOOP {
                let hint = if hint.is_empty() { TAKEOVER_HINT } else { hint };
                tracing::error!(
                    %error, hint, client_id = self.client_id, up_ms, times_in_a_row = self.short_lived,
                    retry_in_ms, "the broker keeps closing the connection soon after accepting it"
                );
            } else {
                tracing::warn!(%error, hint, up_ms, retry_in_ms, "lost the MQTT broker; reconnecting");
            }
            return Failure {
                was_connected: true,
                retry_in,
            };
        }
        let text = error.to_string();
        let due = match &self.last_logged {
            Some((logged, at)) => *logged != text || at.elapsed() >= REMINDER_INTERVAL,
            None => true,
        };
        let attempts = self.failed_attempts;
        if !due {
            tracing::debug!(%error, attempts, retry_in_ms, "MQTT broker still unreachable");
        } else if hint.is_empty() {
            tracing::warn!(%error, attempts, retry_in_ms, "cannot connect to the MQTT broker");
        } else {
            tracing::error!(%error, hint, attempts, retry_in_ms, "cannot connect to the MQTT broker");
        }
        if due {
            self.last_logged = Some((text, Instant::now()));
        }
        Failure {
            was_connected: false,
            retry_in,
        }
    }
}

const TAKEOVER_HINT: &str = "is another process connecting with the same MQTT_CLIENT_ID? \
    Each connection takes the session over from the other; give every provider its own id";

fn backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(MAX_DELAY)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Says what to do about errors that will not go away by themselves.
fn hint(error: &ConnectionError) -> &'static str {
    use rumqttc::ConnectReturnCode as Code;
    match error {
        ConnectionError::ConnectionRefused(Code::BadUserNamePassword | Code::NotAuthorized) => {
            "the broker refused the credentials: check MQTT_USERNAME and MQTT_PASSWORD"
        }
        ConnectionError::ConnectionRefused(Code::BadClientId) => {
            "the broker refused MQTT_CLIENT_ID"
        }
        ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(_),
        )) => {
            "a message is larger than MQTT_MAX_PACKET_BYTES: raise it, or cap the broker's max_packet_size below it"
        }
        ConnectionError::Tls(_) => "TLS failed: check MQTT_CA_FILE and the broker's certificate",
        _ => "",
    }
}
