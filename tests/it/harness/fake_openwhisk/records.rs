//! What the fake saw: every fire attempt, and the readings its accepted fires delivered.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;

/// One fire attempt (POST on a trigger), whatever its outcome.
#[derive(Clone, Debug)]
pub struct RecordedFire {
    /// Namespace as written in the path (so possibly `_`), percent-decoded.
    pub namespace: String,
    /// The namespace the fire went to: `namespace` with `_` resolved to the namespace whose
    /// uuid the credentials name (right key or not); `None` for `_` without such credentials.
    pub resolved_namespace: Option<String>,
    /// Trigger name, percent-decoded.
    pub trigger: String,
    /// The request body parsed as JSON; `Null` if it is empty or not JSON.
    pub body: Value,
    /// The request body as received.
    pub raw_body: Vec<u8>,
    /// Request headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The status answered; 0 when the connection was closed without an answer.
    pub status: u16,
    /// When the request arrived.
    pub at: SystemTime,
}

impl RecordedFire {
    /// Whether OpenWhisk took the fire (202 or 204).
    pub fn is_accepted(&self) -> bool {
        matches!(self.status, 202 | 204)
    }
}

/// Every fire recorded in one namespace, and the sequence numbers they delivered, kept up
/// to date.
#[derive(Default)]
pub(super) struct Records {
    /// Shared with snapshots, so that copying them out holds the lock only briefly.
    fires: Vec<Arc<RecordedFire>>,
    /// `delivered_sequence_numbers` of the accepted fires.
    delivered: BTreeSet<u64>,
    duplicates: usize,
}

impl Records {
    pub fn record(&mut self, fire: RecordedFire) {
        if fire.is_accepted() {
            for seq in sequence_numbers(&fire.body) {
                if !self.delivered.insert(seq) {
                    self.duplicates += 1;
                }
            }
        }
        self.fires.push(Arc::new(fire));
    }

    /// The fires so far, cheap to copy out under a lock.
    pub fn snapshot(&self) -> Vec<Arc<RecordedFire>> {
        self.fires.clone()
    }

    /// The sequence numbers delivered so far, and how many came more than once.
    pub fn delivered(&self) -> (BTreeSet<u64>, usize) {
        (self.delivered.clone(), self.duplicates)
    }

    pub fn count_status(&self, status: u16) -> usize {
        self.fires.iter().filter(|f| f.status == status).count()
    }
}

/// The sequence numbers delivered by accepted message fires, and how many came twice.
///
/// Reads `{"seq": n, ...}` from the `body` string of each `"type":"message"` fire and of
/// each message of a `"type":"batch"` fire.
pub fn delivered_sequence_numbers(fires: &[RecordedFire]) -> (BTreeSet<u64>, usize) {
    let mut seen = BTreeSet::new();
    let mut duplicates = 0;
    for fire in fires.iter().filter(|f| f.is_accepted()) {
        for seq in sequence_numbers(&fire.body) {
            if !seen.insert(seq) {
                duplicates += 1;
            }
        }
    }
    (seen, duplicates)
}

/// The sequence numbers delivered by the accepted fires of `trigger` among `fires`.
pub fn delivered_to(fires: &[RecordedFire], trigger: &str) -> BTreeSet<u64> {
    let fires: Vec<RecordedFire> = fires
        .iter()
        .filter(|f| f.trigger == trigger)
        .cloned()
        .collect();
    delivered_sequence_numbers(&fires).0
}

/// The `seq` of a message fire's payload, or of each message of a batch fire.
fn sequence_numbers(fire_body: &Value) -> Vec<u64> {
    let messages = match fire_body.get("messages").and_then(Value::as_array) {
        Some(batch) => batch.iter().collect(),
        None => vec![fire_body],
    };
    let seq = |message: &Value| {
        let payload: Value = serde_json::from_str(message.get("body")?.as_str()?).ok()?;
        payload.get("seq")?.as_u64()
    };
    messages.into_iter().filter_map(seq).collect()
}
