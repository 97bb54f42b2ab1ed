//! The message path of one connection: message -> routes -> fires -> let go when all
//! are final. A message fires every destination its topic routes to, and is let go
//! (acknowledged to the broker, or with the spool completed in it) only once each of
//! those fires got a final answer (or its destination was deleted, paused or disabled
//! meanwhile). At most `FIRE_CONCURRENCY` fires are in flight; while
//! all are busy the forwarder stops taking messages, which in turn stops the MQTT source
//! from reading (back-pressure instead of an unbounded buffer).
//!
//! With `FIRE_BATCH_MAX` above 1, messages are gathered into batches per destination: one
//! fire carries up
//! to that many, is sent when full, when `FIRE_BATCH_WAIT_MS` has passed since its first
//! message, or before its JSON would pass `FIRE_MAX_PAYLOAD_BYTES`. A batch that is still
//! too large for OpenWhisk (a namespace's limit can be lower) is sent again in halves,
//! until only a message too large on its own is rejected. Every message of a batch is
//! settled only once the fire that carried it got a final answer.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::delivery::{Delivered, Deliverer, Fire};
use crate::fire_body::MessageBodies;
use crate::metrics::FireKind;
use crate::routes::{Destination, Routes};

mod incoming;
pub use incoming::{Incoming, Intake};

/// Turns one connection's messages into fires to their routes' destinations, and lets
/// each message go (acked, or gone from the spool) once every one of its fires got a
/// final answer.
pub struct Forwarder {
    pub deliverer: Arc<Deliverer>,
    pub bodies: Arc<MessageBodies>,
    pub routes: Arc<Routes>,
    pub concurrency: usize,
    pub batch_max: usize,
    pub batch_wait: Duration,
}

/// A message waiting for the final answers of its fires: let go when the last one comes.
struct Pending {
    message: Incoming,
    /// Fires without a final answer yet.
    unsettled: AtomicUsize,
}

impl Pending {
    /// One of the message's fires got a final answer (or its destination was retired).
    fn settle(&self) {
        if self.unsettled.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.message.settle();
        }
    }
}

/// The messages of one fire to one destination, and its body.
struct Outgoing {
    kind: FireKind,
    destination: Arc<Destination>,
    messages: Vec<Arc<Pending>>,
    /// A batch's entries, one per message (none for a single message), kept so that
    /// splitting a batch renders no message twice.
    entries: Vec<Arc<[u8]>>,
    body: Bytes,
    /// For logs: the topic, or the batch's first topic and size.
    subject: String,
}

impl Forwarder {
    /// Forwards until `intake` ends; the fires still in flight are in `fires`, so
    /// shutdown can wait for them. Cancelling `abandon` stops retrying: the messages not
    /// let go stay with the broker (or in the spool).
    pub async fn run(self, mut intake: Intake, abandon: CancellationToken, fires: TaskTracker) {
        let forwarder = Arc::new(self);
        let launcher = Launcher {
            permits: Arc::new(Semaphore::new(forwarder.concurrency)),
            forwarder: forwarder.clone(),
            abandon,
            fires,
        };
        let mut destinations = Vec::new();
        let mut batches = Batches::default();
        loop {
            let message = if forwarder.batch_max > 1 {
                tokio::select! {
                    message = intake.recv() => message,
                    () = batches.next_deadline() => {
                        batches.send_expired(&launcher).await;
                        continue;
                    }
                }
            } else {
                intake.recv().await
            };
            let Some(message) = message else {
                batches.send_all(&launcher).await;
                return;
            };
            forwarder
                .routes
                .read()
                .route(message.topic(), &mut destinations);
            destinations.retain(|d| !d.is_retired());
            if destinations.is_empty() {
                // No route (any more): nothing waits for it.
                message.settle();
                continue;
            }
            let pending = Arc::new(Pending {
                unsettled: AtomicUsize::new(destinations.len()),
                message,
            });
            if forwarder.batch_max > 1 {
                let fields = pending.message.fields(forwarder.bodies.boot());
                let entry: Arc<[u8]> = forwarder.bodies.batch_entry(&fields).into();
                for destination in destinations.drain(..) {
                    batches
                        .add(&launcher, destination, pending.clone(), entry.clone())
                        .await;
                }
            } else {
                let fields = pending.message.fields(forwarder.bodies.boot());
                let body = forwarder.bodies.render(&fields);
                for destination in destinations.drain(..) {
                    let outgoing = Outgoing {
                        kind: FireKind::Message,
                        destination,
                        subject: pending.message.topic().to_owned(),
                        messages: vec![pending.clone()],
                        entries: Vec::new(),
                        body: body.clone(),
                    };
                    launcher.launch(outgoing).await;
                }
            }
        }
    }

    /// Delivers `outgoing` and settles its messages once final. A batch too large for
    /// OpenWhisk goes again in halves, one after the other, each settled on its own
    /// answer.
    async fn deliver(&self, outgoing: Outgoing) {
        let mut destination = outgoing.destination.clone();
        let mut parts = vec![outgoing];
        while let Some(part) = parts.pop() {
            let fire = Fire {
                kind: part.kind,
                target: &destination.target,
                body: part.body.clone(),
                subject: &part.subject,
                messages: part.messages.len(),
                payload_bytes: part.messages.iter().map(|m| m.message.payload_len()).sum(),
                deadline: None,
                destination: Some(&destination),
            };
            let delivered = self.deliverer.deliver(fire).await;
            if delivered == Delivered::Retired {
                // A registration replaced (re-CREATE, UPDATE) hands its messages to its
                // successor; one deleted, paused or disabled no longer holds them.
                match destination.successor() {
                    Some(successor) => {
                        destination = successor;
                        parts.push(part);
                    }
                    None => part.messages.iter().for_each(|m| m.settle()),
                }
            } else if delivered == Delivered::TooLarge {
                let (first, second) = part.halves(&self.bodies);
                parts.extend([second, first]);
            } else if delivered.is_final() {
                part.messages.iter().for_each(|m| m.settle());
            }
        }
    }
}

/// Spawns fires, at most `FIRE_CONCURRENCY` at once: waiting for a permit is the
/// back-pressure that stops the source reading.
struct Launcher {
    permits: Arc<Semaphore>,
    forwarder: Arc<Forwarder>,
    abandon: CancellationToken,
    fires: TaskTracker,
}

impl Launcher {
    async fn launch(&self, outgoing: Outgoing) {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        self.spawn(outgoing, permit);
    }

    fn spawn(&self, outgoing: Outgoing, permit: OwnedSemaphorePermit) {
        let forwarder = self.forwarder.clone();
        let abandon = self.abandon.clone();
        let destination = outgoing.destination.clone();
        let tracked = destination.fires().track_future(async move {
            tokio::select! {
                () = forwarder.deliver(outgoing) => {},
                _ = abandon.cancelled() => {}
            }
            drop(permit);
        });
        self.fires.spawn(tracked);
    }
}

impl Outgoing {
    /// One batch fire of `messages` to `destination`, whose rendered entries are `entries`.
    fn batch(
        bodies: &MessageBodies,
        destination: Arc<Destination>,
        messages: Vec<Arc<Pending>>,
        entries: Vec<Arc<[u8]>>,
    ) -> Outgoing {
        let body = bodies.batch(entries.iter().map(|e| &e[..]));
        let topic = messages[0].message.topic();
        let subject = match messages.len() {
            1 => topic.to_owned(),
            n => format!("{topic} and {} more", n - 1),
        };
        Outgoing {
            kind: FireKind::Batch,
            destination,
            messages,
            entries,
            body,
            subject,
        }
    }

    /// The batch as two batches of half its messages each (it has two at least).
    fn halves(mut self, bodies: &MessageBodies) -> (Outgoing, Outgoing) {
        let middle = self.messages.len() / 2;
        let messages = self.messages.split_off(middle);
        let entries = self.entries.split_off(middle);
        let destination = self.destination.clone();
        (
            Outgoing::batch(bodies, self.destination, self.messages, self.entries),
            Outgoing::batch(bodies, destination, messages, entries),
        )
    }
}

/// The batches being gathered, one per destination.
#[derive(Default)]
struct Batches {
    open: HashMap<u64, OpenBatch>,
    /// When each open batch must go, in the order they were opened: every batch waits
    /// the same `FIRE_BATCH_WAIT_MS`, so this is also the order of their deadlines. An
    /// entry names its batch by destination and opening number.
    deadlines: VecDeque<(Instant, u64, u64)>,
    opened: u64,
}

struct OpenBatch {
    destination: Arc<Destination>,
    messages: Vec<Arc<Pending>>,
    entries: Vec<Arc<[u8]>>,
    size: BatchSize,
    number: u64,
}

impl Batches {
    /// Adds a message to its destination's batch, sending the batch when full, or before
    /// the message when it would not fit.
    async fn add(
        &mut self,
        launcher: &Launcher,
        destination: Arc<Destination>,
        pending: Arc<Pending>,
        entry: Arc<[u8]>,
    ) {
        let forwarder = &launcher.forwarder;
        let key = destination.id();
        if let Some(batch) = self.open.get_mut(&key)
            && !batch.size.admit(
                &forwarder.bodies,
                entry.len(),
                forwarder.deliverer.max_payload_bytes,
            )
        {
            self.send(launcher, key).await;
        }
        let batch = match self.open.entry(key) {
            std::collections::hash_map::Entry::Occupied(batch) => batch.into_mut(),
            std::collections::hash_map::Entry::Vacant(vacant) => {
                self.opened += 1;
                self.deadlines
                    .push_back((Instant::now() + forwarder.batch_wait, key, self.opened));
                vacant.insert(OpenBatch {
                    destination,
                    messages: Vec::new(),
                    entries: Vec::new(),
                    size: BatchSize::of_first(entry.len()),
                    number: self.opened,
                })
            }
        };
        batch.messages.push(pending);
        batch.entries.push(entry);
        if batch.messages.len() >= forwarder.batch_max {
            self.send(launcher, key).await;
        }
    }

    /// Resolves when the oldest open batch's wait is over; never when none is open.
    async fn next_deadline(&self) {
        match self.deadlines.front() {
            Some((deadline, _, _)) => tokio::time::sleep_until(*deadline).await,
            None => std::future::pending().await,
        }
    }

    /// Sends every batch whose wait is over.
    async fn send_expired(&mut self, launcher: &Launcher) {
        let now = Instant::now();
        while let Some(&(deadline, key, number)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if self.open.get(&key).is_some_and(|b| b.number == number) {
                self.send(launcher, key).await;
            }
        }
    }

    async fn send_all(&mut self, launcher: &Launcher) {
        let keys: Vec<_> = self.deadlines.drain(..).map(|(_, key, _)| key).collect();
        for key in keys {
            self.send(launcher, key).await;
        }
    }

    async fn send(&mut self, launcher: &Launcher, key: u64) {
        if let Some(batch) = self.open.remove(&key) {
            let outgoing = Outgoing::batch(
                &launcher.forwarder.bodies,
                batch.destination,
                batch.messages,
                batch.entries,
            );
            launcher.launch(outgoing).await;
        }
    }
}

/// The size of a batch being gathered, and the rule that cuts it below the payload limit.
struct BatchSize {
    entries_len: usize,
    count: usize,
}

impl BatchSize {
    /// A batch of its first entry, which always fits: a message too large on its own is
    /// sent alone (and rejected), never held.
    fn of_first(len: usize) -> BatchSize {
        BatchSize {
            entries_len: len,
            count: 1,
        }
    }

    /// Takes an entry of `len` bytes if the batch's body stays within `max` bytes with
    /// it; otherwise the batch is cut before it.
    fn admit(&mut self, bodies: &MessageBodies, len: usize, max: usize) -> bool {
        let fits = bodies.batch_len(self.entries_len + len, self.count + 1) <= max;
        if fits {
            self.entries_len += len;
            self.count += 1;
        }
        fits
    }
}

#[cfg(test)]
mod properties {
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;
    use crate::fire_body::properties::{fire_params, reading};

    /// `entries` cut into batches by the batcher's size rule alone (no count or wait).
    fn cut(bodies: &MessageBodies, entries: Vec<Vec<u8>>, max: usize) -> Vec<Vec<Vec<u8>>> {
        let mut batches: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut size: Option<BatchSize> = None;
        for entry in entries {
            let admitted = size
                .as_mut()
                .is_some_and(|size| size.admit(bodies, entry.len(), max));
            if admitted {
                batches.last_mut().expect("a batch is open").push(entry);
            } else {
                size = Some(BatchSize::of_first(entry.len()));
                batches.push(vec![entry]);
            }
        }
        batches
    }

    proptest! {
        #[test]
        fn a_batch_is_over_the_payload_limit_only_when_it_is_one_message(
            readings in vec(reading(), 1..12),
            params in fire_params(),
            at in any::<Index>(),
            delta in -2i64..=2,
        ) {
            let bodies = MessageBodies::new(&params);
            let entries: Vec<_> =
                readings.iter().map(|r| bodies.batch_entry(&r.fields())).collect();
            // The limit at, just under or just over the size of the first k messages' batch.
            let k = at.index(entries.len()) + 1;
            let first_k = bodies.batch_len(entries[..k].iter().map(Vec::len).sum(), k);
            let max = usize::try_from(first_k as i64 + delta).unwrap();

            let batches = cut(&bodies, entries.clone(), max);
            prop_assert_eq!(batches.concat(), entries, "every message once, in order");
            if delta >= 0 {
                prop_assert!(batches[0].len() >= k, "a batch exactly at the limit is not cut");
            }
            for (i, batch) in batches.iter().enumerate() {
                let body = bodies.batch(batch.iter().map(Vec::as_slice));
                prop_assert!(
                    body.len() <= max || batch.len() == 1,
                    "{} messages in {} bytes, over {}", batch.len(), body.len(), max
                );
                if let Some(next) = batches.get(i + 1) {
                    let grown = bodies.batch(batch.iter().chain(&next[..1]).map(Vec::as_slice));
                    prop_assert!(grown.len() > max, "cut only before a message that does not fit");
                }
            }
        }
    }
}
