//! The message path: message -> fire -> ack. At most `FIRE_CONCURRENCY` fires are in
//! flight; while all are busy the forwarder stops taking messages, which in turn stops
//! the MQTT source from reading (back-pressure instead of an unbounded buffer).
//!
//! With `FIRE_BATCH_MAX` above 1, messages are gathered into batches: one fire carries up
//! to that many, is sent when full, when `FIRE_BATCH_WAIT_MS` has passed since its first
//! message, or before its JSON would pass `FIRE_MAX_PAYLOAD_BYTES`. A batch that is still
//! too large for OpenWhisk (a namespace's limit can be lower) is sent again in halves,
//! until only a message too large on its own is rejected. Every message of a batch is
//! acknowledged only once the fire that carried it got a final answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::delivery::{Delivered, Deliverer, Fire};
use crate::fire_body::{MessageBodies, MessageFields};
use crate::metrics::FireKind;
use crate::mqtt::{Acker, Message};
use crate::openwhisk::Target;

/// Turns messages into fires and acks each once its fire got a final answer.
pub struct Forwarder {
    pub deliverer: Arc<Deliverer>,
    pub acker: Acker,
    pub bodies: MessageBodies,
    pub target: Target,
    pub concurrency: usize,
    pub batch_max: usize,
    pub batch_wait: Duration,
}

/// The messages of one fire and its body.
struct Outgoing {
    kind: FireKind,
    messages: Vec<Message>,
    /// A batch's entries, one per message (none for a single message), kept so that
    /// splitting a batch renders no message twice.
    entries: Vec<Vec<u8>>,
    body: Bytes,
    /// For logs: the topic, or the batch's first topic and size.
    subject: String,
}

impl Forwarder {
    /// Forwards until the source closes `messages_rx`; the fires still in flight are in
    /// `fires`, so shutdown can wait for them. Cancelling `abandon` stops retrying: the
    /// unacknowledged messages stay with the broker.
    pub async fn run(
        self,
        mut messages_rx: mpsc::Receiver<Message>,
        abandon: CancellationToken,
        fires: TaskTracker,
    ) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut batcher = Batcher::default();
        let forwarder = Arc::new(self);
        loop {
            let outgoing = if forwarder.batch_max > 1 {
                batcher.next(&forwarder, &mut messages_rx).await
            } else {
                messages_rx.recv().await.map(|m| forwarder.single(m))
            };
            let Some(outgoing) = outgoing else {
                return;
            };
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let forwarder = forwarder.clone();
            let abandon = abandon.clone();
            fires.spawn(async move {
                tokio::select! {
                    () = forwarder.deliver(outgoing) => {},
                    _ = abandon.cancelled() => {}
                }
                drop(permit);
            });
        }
    }

    /// Delivers `outgoing` and acks its messages once final. A batch too large for
    /// OpenWhisk goes again in halves, one after the other, each acked on its own answer.
    async fn deliver(&self, outgoing: Outgoing) {
        let mut parts = vec![outgoing];
        while let Some(part) = parts.pop() {
            let fire = Fire {
                kind: part.kind,
                target: &self.target,
                body: part.body.clone(),
                subject: &part.subject,
                messages: part.messages.len(),
                payload_bytes: part.messages.iter().map(|m| m.publish.payload.len()).sum(),
                deadline: None,
            };
            let delivered = self.deliverer.deliver(fire).await;
            if delivered == Delivered::TooLarge {
                let (first, second) = part.halves(&self.bodies);
                parts.extend([second, first]);
            } else if delivered.is_final() {
                part.messages.iter().for_each(|m| self.acker.ack(m));
            }
        }
    }

    fn single(&self, message: Message) -> Outgoing {
        let body = self.bodies.render(&fields(&message));
        Outgoing {
            kind: FireKind::Message,
            subject: message.publish.topic.clone(),
            messages: vec![message],
            entries: Vec::new(),
            body,
        }
    }
}

impl Outgoing {
    /// One batch fire of `messages`, whose rendered entries are `entries`.
    fn batch(bodies: &MessageBodies, messages: Vec<Message>, entries: Vec<Vec<u8>>) -> Outgoing {
        let body = bodies.batch(entries.iter().map(Vec::as_slice));
        let topic = &messages[0].publish.topic;
        let subject = match messages.len() {
            1 => topic.clone(),
            n => format!("{topic} and {} more", n - 1),
        };
        Outgoing {
            kind: FireKind::Batch,
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
        (
            Outgoing::batch(bodies, self.messages, self.entries),
            Outgoing::batch(bodies, messages, entries),
        )
    }
}

fn fields(message: &Message) -> MessageFields<'_> {
    MessageFields {
        topic: &message.publish.topic,
        payload: &message.publish.payload,
        qos: message.publish.qos as u8,
        retain: message.publish.retain,
        received_at: message.received_at,
        seq: message.seq,
    }
}

/// Gathers messages into batches; keeps the message that did not fit for the next one.
#[derive(Default)]
struct Batcher {
    carried: Option<(Message, Vec<u8>)>,
}

impl Batcher {
    /// The next batch, or `None` once the source is closed and nothing is left.
    async fn next(
        &mut self,
        forwarder: &Forwarder,
        messages_rx: &mut mpsc::Receiver<Message>,
    ) -> Option<Outgoing> {
        let bodies = &forwarder.bodies;
        let first = match self.carried.take() {
            Some(carried) => carried,
            None => {
                let message = messages_rx.recv().await?;
                let entry = bodies.batch_entry(&fields(&message));
                (message, entry)
            }
        };
        let deadline = Instant::now() + forwarder.batch_wait;
        let mut size = BatchSize::of_first(first.1.len());
        let mut batch = vec![first];
        while batch.len() < forwarder.batch_max {
            let message = tokio::select! {
                message = messages_rx.recv() => match message {
                    Some(message) => message,
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            };
            let entry = bodies.batch_entry(&fields(&message));
            if !size.admit(bodies, entry.len(), forwarder.deliverer.max_payload_bytes) {
                self.carried = Some((message, entry));
                break;
            }
            batch.push((message, entry));
        }
        let (messages, entries) = batch.into_iter().unzip();
        Some(Outgoing::batch(bodies, messages, entries))
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
