//! A destination: one trigger that messages are routed to, with what its fires need
//! besides their bodies and what their answers say of it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::openwhisk::{Answer, Target, Verdict};

/// Where a destination comes from, which decides what a missing trigger means.
#[derive(Debug, Clone)]
pub enum Origin {
    /// `MQTT_TOPICS` + `OW_TRIGGER` or `ROUTES`: a trigger that does not exist *yet* is
    /// waited for (SPEC section 4).
    Static,
    /// A feed registration: a trigger answered 401/403/404 for `disable_after` was
    /// deleted (or its key revoked) behind the feed's back, and is disabled; `disabled`
    /// hears of it, to record it.
    Feed {
        disable_after: Duration,
        disabled: mpsc::UnboundedSender<DisableNotice>,
    },
}

/// A feed registration disabled because OpenWhisk kept refusing its fires.
#[derive(Debug, Clone)]
pub struct DisableNotice {
    pub namespace: String,
    pub trigger: String,
    pub status: u16,
    pub message: String,
}

/// One trigger messages are routed to.
pub struct Destination {
    /// Unique in the process, to key per-destination state (a batch being gathered).
    id: u64,
    pub target: Target,
    origin: Origin,
    /// Cancelled when the route is deleted, paused or disabled: its fires stop retrying,
    /// and the messages waiting for it no longer do.
    retired: CancellationToken,
    /// Its fires in flight, so that a DELETE answers only once none can reach OpenWhisk.
    fires: TaskTracker,
    /// Since when its fires have been answered 401/403/404, and the latest such answer.
    refused: Mutex<Option<Refusal>>,
    /// What replaced it (a re-CREATE or UPDATE of its registration): its messages in
    /// flight are fired there instead.
    successor: Mutex<Option<Arc<Destination>>>,
}

struct Refusal {
    since: Instant,
    status: u16,
    detail: String,
}

impl Destination {
    pub fn new(target: Target, origin: Origin) -> Destination {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Destination {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            target,
            origin,
            retired: CancellationToken::new(),
            fires: TaskTracker::new(),
            refused: Mutex::new(None),
            successor: Mutex::new(None),
        }
    }

    /// Retires it in favour of `successor`, which takes over its messages in flight;
    /// returns at once (they may wait long for OpenWhisk).
    pub fn hand_over(&self, successor: &Arc<Destination>) {
        *self.successor.lock().unwrap_or_else(|p| p.into_inner()) = Some(successor.clone());
        self.retired.cancel();
        self.fires.close();
    }

    /// What replaced it, if it was replaced rather than deleted.
    pub fn successor(&self) -> Option<Arc<Destination>> {
        self.successor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether it is a feed registration's (whose problems are its own, see `Origin`).
    pub fn is_feed(&self) -> bool {
        matches!(self.origin, Origin::Feed { .. })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Resolves once the destination is retired.
    pub fn retired(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.retired.cancelled()
    }

    pub fn is_retired(&self) -> bool {
        self.retired.is_cancelled()
    }

    /// The fires in flight to this destination.
    pub fn fires(&self) -> &TaskTracker {
        &self.fires
    }

    /// Retires the destination and waits until none of its fires is in flight.
    pub async fn retire(&self) {
        self.retired.cancel();
        self.fires.close();
        self.fires.wait().await;
    }

    /// Takes note of one answer to a fire; a feed destination refused for longer than
    /// its `disable_after` is retired and reported.
    pub fn answered(&self, answer: &Answer) {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        let status = answer.status.map(|s| s.as_u16());
        match (&answer.verdict, status) {
            (Verdict::Accepted | Verdict::NoActiveRule, _) => *refused = None,
            (Verdict::NotReady, Some(status @ (401 | 403 | 404))) => {
                let refusal = refused.get_or_insert_with(|| Refusal {
                    since: Instant::now(),
                    status,
                    detail: String::new(),
                });
                refusal.status = status;
                refusal.detail.clone_from(&answer.detail);
                if let Origin::Feed {
                    disable_after,
                    disabled,
                } = &self.origin
                    && refusal.since.elapsed() >= *disable_after
                    && !self.retired.is_cancelled()
                {
                    self.retired.cancel();
                    let _ = disabled.send(DisableNotice {
                        namespace: self.target.namespace.to_string(),
                        trigger: self.target.trigger.to_string(),
                        status,
                        message: refusal.detail.clone(),
                    });
                }
            }
            _ => {}
        }
    }
}
